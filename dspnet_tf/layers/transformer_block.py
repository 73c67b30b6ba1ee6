"""Pre-layer-norm Transformer block used by both of DSPnet's sequence networks."""

from __future__ import annotations

from typing import Any, Dict, Optional

import tensorflow as tf

from dspnet_tf.layers.dropout import Dropout
from dspnet_tf.layers.recency_attention import RecencyBiasedAttention


@tf.keras.utils.register_keras_serializable(package="dspnet_tf")
class TransformerBlock(tf.keras.layers.Layer):
    """Self-attention + feed-forward with residuals, layer norm applied before each sub-layer.

    Pre-layer-norm keeps the residual stream un-normalised, which trains stably without warm-up
    at the small widths DSPnet uses (d_s can be 4 to 16). Masking is entirely the caller's:
    `attention_mask[b, q, k]` says whether query position q may attend to key position k.

    Example:
      >>> block = TransformerBlock(dim=16, num_heads=2, ffn_dim=32)
      >>> block(tf.zeros([2, 5, 16])).shape
      TensorShape([2, 5, 16])

    Args:
      dim: model width.
      num_heads: attention heads (dim must be divisible by it).
      ffn_dim: hidden width of the feed-forward network.
      dropout: dropout on attention weights, sub-layer outputs and the feed-forward hidden layer.
      recency_bias: attention scores fall with the distance back from the query, one learned
        slope per head (`RecencyBiasedAttention`, ALiBi-style); False is Keras's plain attention.
    """

    def __init__(
        self, dim: int, num_heads: int, ffn_dim: int, dropout: float = 0.0,
        recency_bias: bool = False, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.dim = int(dim)
        self.num_heads = int(num_heads)
        self.ffn_dim = int(ffn_dim)
        self.dropout_rate = float(dropout)
        self.recency_bias = bool(recency_bias)
        # Sub-layers take this layer's mixed-precision policy (Keras 2 layers do not inherit
        # it): a model built with an explicit policy computes alike in every part.
        policy = self.dtype_policy
        self.attention_norm = tf.keras.layers.LayerNormalization(epsilon=1e-6, dtype=policy)
        attention = RecencyBiasedAttention if self.recency_bias else tf.keras.layers.MultiHeadAttention
        self.attention = attention(
            num_heads=self.num_heads,
            key_dim=self.dim // self.num_heads,
            dropout=self.dropout_rate,
            dtype=policy,
        )
        self.attention_dropout = Dropout(self.dropout_rate, dtype=policy)
        self.ffn_norm = tf.keras.layers.LayerNormalization(epsilon=1e-6, dtype=policy)
        self.ffn_hidden = tf.keras.layers.Dense(self.ffn_dim, activation="gelu", dtype=policy)
        self.ffn_hidden_dropout = Dropout(self.dropout_rate, dtype=policy)
        self.ffn_out = tf.keras.layers.Dense(self.dim, dtype=policy)
        self.ffn_dropout = Dropout(self.dropout_rate, dtype=policy)

    def build(self, input_shape: tf.TensorShape) -> None:
        """Builds the attention's weights now, so a checkpoint or SavedModel restore finds them."""
        # MultiHeadAttention creates its weights lazily on first call; building it here gives
        # them a place before a SavedModel/checkpoint restore, which otherwise skips them.
        input_shape = tf.TensorShape(input_shape)
        if not self.attention._built_from_signature:  # pylint: disable=protected-access
            self.attention._build_from_signature(  # pylint: disable=protected-access
                query=input_shape, value=input_shape
            )
            # The attention weights' dropout too (no weights of its own: checkpoints unchanged).
            self.attention._dropout_layer = Dropout(  # pylint: disable=protected-access
                self.dropout_rate, dtype=self.dtype_policy)
        super().build(input_shape)

    def call(
        self,
        x: tf.Tensor,
        attention_mask: Optional[tf.Tensor] = None,
        training: Optional[bool] = None,
        last_only: bool = False,
    ) -> tf.Tensor:
        """[B, L, dim] -> [B, L, dim], or [B, 1, dim] for the last position with `last_only`.

        `last_only` computes the final position's output alone (its query against every
        key): the same numbers as the full call's last row, at about 1/L of the attention
        output and feed-forward cost, for callers that read only a history's most recent state.
        """
        normed = self.attention_norm(x)
        query = normed
        if last_only:
            query, x = normed[:, -1:], x[:, -1:]
            if attention_mask is not None:
                attention_mask = attention_mask[:, -1:]
        attended = self.attention(
            query, normed, attention_mask=attention_mask, training=training
        )
        x = x + self.attention_dropout(attended, training=training)
        hidden = self.ffn_hidden_dropout(self.ffn_hidden(self.ffn_norm(x)), training=training)
        return x + self.ffn_dropout(self.ffn_out(hidden), training=training)

    def get_config(self) -> Dict[str, Any]:
        """The constructor arguments, so Keras can re-create the layer from a saved model."""
        config = super().get_config()
        config.update(
            dim=self.dim, num_heads=self.num_heads, ffn_dim=self.ffn_dim, dropout=self.dropout_rate,
            recency_bias=self.recency_bias,
        )
        return config
