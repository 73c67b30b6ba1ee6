"""Repeat-aware next-item prediction: a pointer over the history mixed with the catalog softmax."""

from __future__ import annotations

import math
from typing import Any, Dict, Optional, Tuple

import tensorflow as tf

from dspnet_tf.layers.history_attention import query_distances, scene_pair_scores
from dspnet_tf.precision import at_least_float32

# Log-probability of "impossible" (a finite stand-in for -inf, so gradients stay finite).
IMPOSSIBLE = -1e9


@tf.keras.utils.register_keras_serializable(package="dspnet_tf")
class RepeatPointer(tf.keras.layers.Layer):
    """Points at the events of a user's own history that the next event may return to.

    Users come back to items they met before: the cart and favorites take up items first seen in
    search or the feed (interest formed in one scene, acted on in another). A tied-embedding head
    scores items by <query, E[item]>, so to rank several unrelated history items highly it must
    place one query near all of them at once, which a single vector in a 64-wide space does
    poorly. This layer models the return directly, as RepeatNet (Ren et al., AAAI 2019) and
    pointer-generator networks do. From the query position's state it computes a gate
    gamma = P(the next event repeats a history event) and attention weights pi_j over the
    history positions j at or before it, scored by <W_q query, W_k key_j> / sqrt(d) plus a
    learned bias per distance (recency). The next-item distribution is the mixture

        p(v) = (1 - gamma) * softmax(catalog logits)_v + gamma * sum_{j: item_j = v} pi_j.

    The keys are the caller's per-position states. DSPnet passes the fused state together with
    the scene network's state, so "which earlier events does the predicted next scene return
    to" is learnable across scenes.

    With `num_scenes > 0` (DSPnet's scene-aware form) the pointer also reads where things
    happened: a learned bias b[s, s_j] per pair of the target scene s (the surface asking, 0 =
    unknown) and the scene s_j of history event j is added to its score, and one per target
    scene to the gate. Which surfaces return to items met in which surfaces is app behaviour
    (a cart returns to what search and the feed showed, not to the cart itself), and a bias
    table learns it directly where a bilinear form of two dense states learns it slowly.

    The layer returns the mixture's parts in log space; `target_log_likelihood` (training) and
    `mixture_log_probs` (ranking the catalog) combine them with the catalog logits. Under a
    mixed-precision policy the projections run in the compute dtype and everything after the
    score product (biases, log-softmax, gate) in float32, so the mixture is float32.

    Example:
      >>> pointer = RepeatPointer(key_dim=8, max_len=5)
      >>> log_gate, log_keep, log_pointer = pointer(
      ...     tf.zeros([2, 1, 4]), tf.zeros([2, 5, 6]), tf.ones([2, 5], tf.bool))
      >>> log_pointer.shape
      TensorShape([2, 1, 5])

    Args:
      key_dim: width of the projected queries and keys.
      max_len: longest history (distances beyond it share the last recency bias).
      num_scenes: scene vocabulary size for the scene-pair and per-scene gate biases; 0 = off.
    """

    def __init__(self, key_dim: int, max_len: int, num_scenes: int = 0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.key_dim = int(key_dim)
        self.max_len = int(max_len)
        self.num_scenes = int(num_scenes)
        policy = self.dtype_policy  # shared by the sub-layers (see TransformerBlock)
        self.query_projection = tf.keras.layers.Dense(self.key_dim, name="query", dtype=policy)
        self.key_projection = tf.keras.layers.Dense(self.key_dim, name="key", dtype=policy)
        self.gate = tf.keras.layers.Dense(1, name="gate", dtype=policy)

    def build(self, input_shape: Any) -> None:
        """Creates the distance bias and, with scenes, the scene-dependent biases (zeros)."""
        # Read as float32 under any policy (no autocast): they are added to float32 scores.
        self.distance_bias = self.add_weight(
            name="distance_bias", shape=[self.max_len + 1], initializer="zeros",
            experimental_autocast=False)
        if self.num_scenes:
            self.scene_pair_bias = self.add_weight(
                name="scene_pair_bias", shape=[self.num_scenes, self.num_scenes],
                initializer="zeros", experimental_autocast=False)
            self.scene_gate_bias = self.add_weight(
                name="scene_gate_bias", shape=[self.num_scenes], initializer="zeros",
                experimental_autocast=False)
        super().build(input_shape)

    def call(self, query_states: tf.Tensor, key_states: tf.Tensor, valid: tf.Tensor,
             query_scenes: Optional[tf.Tensor] = None,
             key_scenes: Optional[tf.Tensor] = None) -> Tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """Gate and pointer of each query position.

        Args:
          query_states: [B, Q, d_q], the states of the LAST Q positions of the history (Q = L
            in training, where every position predicts its next event; Q = 1 at serving).
          key_states: [B, L, d_k], one state per history position.
          valid: [B, L] bool, True on real events (padding is never pointed at).
          query_scenes: [B, Q] target scene of each query (0 = unknown); with `key_scenes`
            [B, L] (the scene of each history event), used when `num_scenes > 0`.

        Returns:
          `log_gate` [B, Q] = log gamma, `log_keep` [B, Q] = log(1 - gamma) and `log_pointer`
          [B, Q, L] = log pi (about -1e9 at padding and at positions after the query). A query
          with no earlier event has gamma = 0. All float32.
        """
        length = tf.shape(key_states)[1]
        queries = tf.shape(query_states)[1]
        query = self.query_projection(query_states)
        # Keras casts only the first input to the compute dtype.
        key = self.key_projection(tf.cast(key_states, query.dtype))
        scores = at_least_float32(tf.linalg.matmul(query, key, transpose_b=True)) / math.sqrt(
            self.key_dim)
        # Query q may point at history positions j <= its own.
        distance = query_distances(queries, length)  # [Q, L]
        scores += tf.gather(self.distance_bias, tf.clip_by_value(distance, 0, self.max_len))
        gate_bias = 0.0
        if self.num_scenes and query_scenes is not None and key_scenes is not None:
            scores += scene_pair_scores(self.scene_pair_bias, query_scenes, key_scenes)
            gate_bias = tf.gather(self.scene_gate_bias, tf.cast(query_scenes, tf.int32))
        allowed = (distance >= 0)[tf.newaxis] & tf.cast(valid, tf.bool)[:, tf.newaxis, :]
        scores = tf.where(allowed, scores, tf.cast(IMPOSSIBLE, scores.dtype))
        log_pointer = tf.nn.log_softmax(scores, axis=-1)
        log_pointer = tf.where(allowed, log_pointer, tf.cast(IMPOSSIBLE, scores.dtype))
        gate_logit = at_least_float32(tf.squeeze(self.gate(query_states), axis=-1)) + gate_bias
        has_history = tf.reduce_any(allowed, axis=-1)
        log_gate = tf.where(has_history, tf.math.log_sigmoid(gate_logit),
                            tf.cast(IMPOSSIBLE, gate_logit.dtype))
        log_keep = tf.where(has_history, tf.math.log_sigmoid(-gate_logit),
                            tf.zeros_like(gate_logit))
        return log_gate, log_keep, log_pointer

    def get_config(self) -> Dict[str, Any]:
        """The constructor arguments, so Keras can re-create the layer from a saved model."""
        config = super().get_config()
        config.update(key_dim=self.key_dim, max_len=self.max_len, num_scenes=self.num_scenes)
        return config


def log_add_exp(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    """log(exp(a) + exp(b)), stable for very negative arguments."""
    larger = tf.maximum(a, b)
    return larger + tf.math.log(tf.exp(a - larger) + tf.exp(b - larger))


def target_log_likelihood(catalog_logits: tf.Tensor, targets: tf.Tensor, history_items: tf.Tensor,
                          log_gate: tf.Tensor, log_keep: tf.Tensor,
                          log_pointer: tf.Tensor) -> tf.Tensor:
    """log p(target) under the mixture, at every query position (the training loss is its mean).

    Args:
      catalog_logits: [B, Q, V] tied-embedding logits of every item.
      targets: [B, Q] next item of each query position.
      history_items: [B, L] item id of each history position (what the pointer points at).
      log_gate, log_keep, log_pointer: the outputs of `RepeatPointer`.

    Returns:
      [B, Q] log-likelihoods.
    """
    catalog_log_prob = -tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=tf.cast(targets, tf.int32), logits=catalog_logits)
    return mixture_target_log_likelihood(catalog_log_prob, targets, history_items, log_gate,
                                         log_keep, log_pointer)


def mixture_target_log_likelihood(catalog_log_prob: tf.Tensor, targets: tf.Tensor,
                                  history_items: tf.Tensor, log_gate: tf.Tensor,
                                  log_keep: tf.Tensor, log_pointer: tf.Tensor) -> tf.Tensor:
    """`target_log_likelihood` from the catalog's log p(target) [B, Q] alone: for item losses
    that estimate it without the full logits (`losses.sampled_softmax_log_prob`)."""
    targets = tf.cast(targets, tf.int32)
    matches = tf.cast(history_items, tf.int32)[:, tf.newaxis, :] == targets[:, :, tf.newaxis]
    pointer_log_prob = tf.reduce_logsumexp(
        tf.where(matches, log_pointer, tf.cast(IMPOSSIBLE, log_pointer.dtype)), axis=-1)
    return log_add_exp(log_keep + catalog_log_prob, log_gate + pointer_log_prob)


def mixture_log_probs(catalog_logits: tf.Tensor, history_items: tf.Tensor, log_gate: tf.Tensor,
                      log_keep: tf.Tensor, log_pointer: tf.Tensor) -> tf.Tensor:
    """log p(v) of every item under the mixture, for one query position per row.

    Args:
      catalog_logits: [B, V] tied-embedding logits.
      history_items: [B, L] item ids of the history.
      log_gate, log_keep: [B]; log_pointer: [B, L] (`RepeatPointer` at one query position).

    Returns:
      [B, V] log-probabilities (they rank exactly as the mixture's probabilities).
    """
    catalog = log_keep[:, tf.newaxis] + tf.nn.log_softmax(catalog_logits, axis=-1)
    pointer_mass = tf.exp(log_gate[:, tf.newaxis] + log_pointer)  # [B, L]; 0 where impossible
    history_items = tf.cast(history_items, tf.int32)
    rows = tf.broadcast_to(tf.range(tf.shape(history_items)[0])[:, tf.newaxis],
                           tf.shape(history_items))
    # Repeated items add up: an item met three times gets the pointer mass of all three events.
    returned = tf.tensor_scatter_nd_add(tf.zeros_like(catalog),
                                        tf.stack([rows, history_items], axis=-1), pointer_mass)
    # The floor keeps log finite (and its gradient defined) where nothing was returned.
    log_returned = tf.math.log(tf.maximum(returned, 1e-30))
    return tf.where(returned > 0, log_add_exp(catalog, log_returned), catalog)
