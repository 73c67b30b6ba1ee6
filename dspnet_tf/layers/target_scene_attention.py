"""Target-scene attention: the surface that asks for the list reads the history its own way."""

from __future__ import annotations

import math
from typing import Any, Dict

import tensorflow as tf

from dspnet_tf.layers.history_attention import query_distances, scene_pair_scores
from dspnet_tf.precision import at_least_float32

# A finite stand-in for -inf on masked scores (keeps gradients finite).
_MASKED = -1e9


@tf.keras.utils.register_keras_serializable(package="dspnet_tf")
class TargetSceneAttention(tf.keras.layers.Layer):
    """Re-reads the fused history with a query that knows which scene the list is shown in.

    The fused state z_t of the last event is computed before anyone says which surface asks
    for the list, yet surfaces need different evidence: search follows the user's current
    intent, so the most recent events that reveal it (searches, live views) matter most; a
    surface that shares popular items needs little of the history at all. Conditioning only
    the head's projection of z_t cannot recover evidence z_t has already averaged away. This
    layer (DIN's target attention, with the target being the scene rather than an item) lets
    each query position t attend over the positions j <= t with

        score_tj = <W_q [z_t ; e(s)], W_k [z_j ; c_j]> / sqrt(d) + b_dist(t - j) + b[s, s_j],

    where s is the target scene (0 = unknown), c_j the per-position scene state and s_j the
    scene of event j (b[s, s_j]: which scenes' events inform surface s), and returns
    z_t + W_o sum_j softmax(score)_tj W_v z_j. W_o starts at zero, so the layer starts as the
    identity and grows from there. Under a mixed-precision policy the projections and the
    weighted sum run in the compute dtype, the scores, biases and softmax in float32.

    Example:
      >>> layer = TargetSceneAttention(dim=8, num_scenes=5, max_len=6)
      >>> out = layer(tf.zeros([2, 6, 8]), tf.zeros([2, 6, 4]), tf.ones([2, 6], tf.bool),
      ...             tf.zeros([2, 6], tf.int32), tf.constant([[2, 3, 4, 2, 3, 4]] * 2))
      >>> out.shape
      TensorShape([2, 6, 8])

    Args:
      dim: width of z (and of the attention).
      num_scenes: scene vocabulary size (target ids and event scene ids are below it).
      max_len: longest history (longer distances share the last recency bias).
      scene_dim: width of the target-scene embedding.
    """

    def __init__(self, dim: int, num_scenes: int, max_len: int, scene_dim: int = 16,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.dim = int(dim)
        self.num_scenes = int(num_scenes)
        self.max_len = int(max_len)
        self.scene_dim = int(scene_dim)
        policy = self.dtype_policy  # shared by the sub-layers (see TransformerBlock)
        self.target_embedding = tf.keras.layers.Embedding(self.num_scenes, self.scene_dim,
                                                          name="target_embedding", dtype=policy)
        self.query_projection = tf.keras.layers.Dense(self.dim, name="query", dtype=policy)
        self.key_projection = tf.keras.layers.Dense(self.dim, name="key", dtype=policy)
        self.value_projection = tf.keras.layers.Dense(self.dim, name="value", dtype=policy)
        self.output_projection = tf.keras.layers.Dense(self.dim, kernel_initializer="zeros",
                                                       name="output", dtype=policy)

    def build(self, input_shape: Any) -> None:
        """Creates the distance and scene-pair attention biases (zeros: plain attention first)."""
        # Read as float32 under any policy (no autocast): they are added to float32 scores.
        self.distance_bias = self.add_weight(name="distance_bias", shape=[self.max_len + 1],
                                             initializer="zeros", experimental_autocast=False)
        self.scene_pair_bias = self.add_weight(name="scene_pair_bias",
                                               shape=[self.num_scenes, self.num_scenes],
                                               initializer="zeros", experimental_autocast=False)
        super().build(input_shape)

    def call(self, z: tf.Tensor, scene_states: tf.Tensor, valid: tf.Tensor,
             target_scenes: tf.Tensor, scene_ids: tf.Tensor) -> tf.Tensor:
        """The target-aware states of the last Q positions.

        Args:
          z: [B, L, d] fused states of the whole history.
          scene_states: [B, L, d_s] scene-network states (keys beside z).
          valid: [B, L] bool, True on real events.
          target_scenes: [B, Q] target scene of each of the last Q positions (0 = unknown).
          scene_ids: [B, L] scene id of each event.

        Returns:
          [B, Q, d]: z of the last Q positions plus what the target scene reads from the history.
        """
        length = tf.shape(z)[1]
        queries = tf.shape(target_scenes)[1]
        z_query = z[:, length - queries:]
        target_scenes = tf.cast(target_scenes, tf.int32)
        query = self.query_projection(
            tf.concat([z_query, self.target_embedding(target_scenes)], axis=-1))
        # Keras casts only the first input to the compute dtype.
        key = self.key_projection(tf.concat([z, tf.cast(scene_states, z.dtype)], axis=-1))
        value = self.value_projection(z)
        scores = at_least_float32(tf.linalg.matmul(query, key, transpose_b=True)) / math.sqrt(
            self.dim)
        distance = query_distances(queries, length)  # [Q, L]
        scores += tf.gather(self.distance_bias, tf.clip_by_value(distance, 0, self.max_len))
        scores += scene_pair_scores(self.scene_pair_bias, target_scenes, scene_ids)
        allowed = (distance >= 0)[tf.newaxis] & tf.cast(valid, tf.bool)[:, tf.newaxis, :]
        scores = tf.where(allowed, scores, tf.cast(_MASKED, scores.dtype))
        weights = tf.nn.softmax(scores, axis=-1)
        # A query with no real event to read (padding) reads nothing.
        weights *= tf.cast(tf.reduce_any(allowed, axis=-1, keepdims=True), weights.dtype)
        return z_query + self.output_projection(
            tf.linalg.matmul(tf.cast(weights, value.dtype), value))

    def get_config(self) -> Dict[str, Any]:
        """The constructor arguments, so Keras can re-create the layer from a saved model."""
        config = super().get_config()
        config.update(dim=self.dim, num_scenes=self.num_scenes, max_len=self.max_len,
                      scene_dim=self.scene_dim)
        return config
