"""Multi-head attention with a learned per-head recency bias (ALiBi-style)."""

from __future__ import annotations

from typing import Any, Optional

import tensorflow as tf


def alibi_slopes(num_heads: int) -> list:
    """ALiBi's geometric slopes 2^(-8 h / H), h = 1..H (Press et al., 2022): one head per scale,
    from a strong recency preference down to an almost flat one."""
    return [2.0 ** (-8.0 * (head + 1) / num_heads) for head in range(num_heads)]


@tf.keras.utils.register_keras_serializable(package="dspnet_tf")
class RecencyBiasedAttention(tf.keras.layers.MultiHeadAttention):
    """Keras multi-head attention whose scores fall linearly with the distance to the query.

    A behaviour sequence is read most often for what the user does *now*: the latest events say
    the most about the next one. Learned position embeddings can express that, but they must
    learn it from data, separately for every position. ALiBi (Press et al., 2022) writes it
    into the attention instead: head h adds `-slope_h * (query position - key position)` to its
    scores, so each head sees the history through its own recency window. Here the slopes are
    learned (one weight per head, started at ALiBi's geometric values), so a head can also
    flatten its window or turn it around. The position embeddings stay; the bias only gives
    recency a head start, which matters most where training data are few.

    Keras's `MultiHeadAttention` takes boolean masks only; the bias enters through its
    `_masked_softmax` hook, the extension point Keras documents for custom attention, so the
    projections, dropout and weights layout stay Keras's own.

    Keys and queries are aligned at the end: with fewer queries than keys (a caller computing
    the last position alone) the queries are the latest positions.

    Example:
      >>> attention = RecencyBiasedAttention(num_heads=2, key_dim=4)
      >>> attention(tf.zeros([1, 5, 8]), tf.zeros([1, 5, 8])).shape
      TensorShape([1, 5, 8])

    Args:
      **kwargs: `tf.keras.layers.MultiHeadAttention`'s arguments (this layer expects the default
        attention axes: one sequence axis).
    """

    def _build_from_signature(self, query: Any, value: Any, key: Any = None) -> None:
        """Builds Keras's projections, then the per-head slopes."""
        super()._build_from_signature(query, value, key)
        with tf.init_scope():
            self.recency_slopes = self.add_weight(
                name="recency_slopes", shape=[self._num_heads], dtype=self.variable_dtype,
                initializer=tf.keras.initializers.Constant(alibi_slopes(self._num_heads)),
                trainable=True,
            )

    def recency_bias(self, num_queries: tf.Tensor, num_keys: tf.Tensor) -> tf.Tensor:
        """[heads, queries, keys] additive bias: -slope * distance from each query back to each key.

        Keys after a query (distance < 0) get no bias; the causal mask, not this, hides them.
        """
        query_positions = tf.range(num_queries) + (num_keys - num_queries)
        distance = query_positions[:, tf.newaxis] - tf.range(num_keys)[tf.newaxis, :]
        distance = tf.cast(tf.maximum(distance, 0), tf.float32)
        # In float32 whatever the policy: under mixed precision the slopes read as 16-bit
        # (Keras autocasts variables in call), which would also round the distances.
        slopes = tf.cast(self.recency_slopes, tf.float32)
        return -slopes[:, tf.newaxis, tf.newaxis] * distance[tf.newaxis]

    def _masked_softmax(
        self, attention_scores: tf.Tensor, attention_mask: Optional[tf.Tensor] = None
    ) -> tf.Tensor:
        # attention_scores: [B, heads, queries, keys].
        shape = tf.shape(attention_scores)
        bias = self.recency_bias(shape[-2], shape[-1])
        return super()._masked_softmax(
            attention_scores + tf.cast(bias, attention_scores.dtype), attention_mask)
