"""Learned conditional weights of CCR: which other users count as soft positives."""

from __future__ import annotations

from typing import Any, Dict

import tensorflow as tf

from dspnet_tf.precision import at_least_float32


@tf.keras.utils.register_keras_serializable(package="dspnet_tf")
class ContextWeighting(tf.keras.layers.Layer):
    """Turns each user's scene-context vector c into weights w_ij over the other users j.

    Plain InfoNCE treats every other user in the batch alike. DSPnet's conditional contrastive
    regulariser instead lets users whose scene context is similar act as (weighted) soft
    positives: w_ij = softmax_{j != i}(g(c_i) . g(c_j) / tau_w), with g a small learned MLP.
    This is what helps on skewed, long-tailed behaviour: rare users borrow strength from users
    who navigate the app the same way. The diagonal gets no weight (a row with a single user puts
    its whole weight on itself, which the loss then reads as the ordinary positive).

    Example:
      >>> weighting = ContextWeighting(context_dim=4)
      >>> w = weighting(tf.random.normal([3, 8]))
      >>> w.shape
      TensorShape([3, 3])

    Args:
      context_dim: output width of g.
      temperature: tau_w; lower is peakier.
    """

    def __init__(self, context_dim: int = 16, temperature: float = 0.5, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.context_dim = int(context_dim)
        self.temperature = float(temperature)
        policy = self.dtype_policy  # shared by the sub-layers (see TransformerBlock)
        self.hidden = tf.keras.layers.Dense(2 * self.context_dim, activation="gelu", dtype=policy)
        self.output_layer = tf.keras.layers.Dense(self.context_dim, dtype=policy)

    def call(self, context: tf.Tensor) -> tf.Tensor:
        """context [B, c] -> row-stochastic float32 weights [B, B], zero diagonal (for B > 1)."""
        # The MLP in the compute dtype; the similarities and their softmax in float32 (a
        # [B, B] matrix: cheap, and -1e9 overflows float16).
        g = at_least_float32(self.output_layer(self.hidden(context)))
        g = tf.math.l2_normalize(g, axis=-1)
        similarity = tf.linalg.matmul(g, g, transpose_b=True) / self.temperature
        # -1e9 rather than -inf: a batch of one user still gives finite weights.
        eye = tf.eye(tf.shape(similarity)[0], dtype=tf.bool)
        similarity = tf.where(eye, tf.cast(-1e9, similarity.dtype), similarity)
        return tf.nn.softmax(similarity, axis=-1)

    def get_config(self) -> Dict[str, Any]:
        """The constructor arguments, so Keras can re-create the layer from a saved model."""
        config = super().get_config()
        config.update(context_dim=self.context_dim, temperature=self.temperature)
        return config
