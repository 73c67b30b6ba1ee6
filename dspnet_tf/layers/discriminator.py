"""Discriminator of the adversarial prior regulariser."""

from __future__ import annotations

from typing import Any, Dict

import tensorflow as tf

from dspnet_tf.precision import at_least_float32


@tf.keras.utils.register_keras_serializable(package="dspnet_tf")
class PriorDiscriminator(tf.keras.layers.Layer):
    """MLP that tells samples of the prior p(z) from the encoder's representations z.

    DSPnet reads training as maximising an ELBO of p(item, scene | history); the KL term that
    keeps the latent close to a prior is replaced, as in adversarial autoencoders, by a
    discriminator D: D learns to output "prior" for prior samples and "encoder" for z, while the
    encoders are pushed (by -log D(z)) to make z look like a prior sample. D is updated by its own
    optimizer, never by the encoder loss. Returns logits (positive = "from the prior").

    Example:
      >>> disc = PriorDiscriminator(hidden_dim=16)
      >>> disc(tf.zeros([4, 8])).shape
      TensorShape([4, 1])

    Args:
      hidden_dim: width of the two hidden layers.
    """

    def __init__(self, hidden_dim: int = 64, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.hidden_dim = int(hidden_dim)
        policy = self.dtype_policy  # shared by the sub-layers (see TransformerBlock)
        self.hidden_1 = tf.keras.layers.Dense(self.hidden_dim, activation=tf.nn.leaky_relu,
                                              dtype=policy)
        self.hidden_2 = tf.keras.layers.Dense(self.hidden_dim, activation=tf.nn.leaky_relu,
                                              dtype=policy)
        self.logit = tf.keras.layers.Dense(1, dtype=policy)

    def call(self, z: tf.Tensor) -> tf.Tensor:
        """Float32 logits [..., 1] that `z` [..., d] was drawn from the prior, not encoded."""
        # float32 out whatever the compute dtype: the two players' losses read them.
        return at_least_float32(self.logit(self.hidden_2(self.hidden_1(z))))

    def get_config(self) -> Dict[str, Any]:
        """The constructor arguments, so Keras can re-create the layer from a saved model."""
        config = super().get_config()
        config.update(hidden_dim=self.hidden_dim)
        return config
