"""Causal Transformer encoder of one behaviour sequence (items or scenes)."""

from __future__ import annotations

from typing import Any, Dict, Optional

import tensorflow as tf

from dspnet_tf.layers.dropout import Dropout

from dspnet_tf.layers.token_table import TiedTokenTableMixin

from dspnet_tf.layers.transformer_block import TransformerBlock


@tf.keras.utils.register_keras_serializable(package="dspnet_tf")
class SequenceEncoder(TiedTokenTableMixin, tf.keras.layers.Layer):
    """Embeds a left-padded id sequence and runs causal Transformer blocks over it (SASRec-style).

    DSPnet reads a user's history twice, once as items and once as scenes, with two encoders of
    this class that share nothing but the recipe: id embedding + learned position embedding,
    dropout, `num_blocks` pre-layer-norm Transformer blocks with a causal mask (position t sees
    events <= t) and a padding mask (padded events are seen by no one), and a final layer norm.
    The output at padded positions is zero, so nothing downstream can read padding.

    The embedding table has `vocab_size + 1` rows: ids [0, vocab_size) plus one [MASK] row
    (id == vocab_size) used by the contrastive augmentations. Prediction heads reuse the table
    (tied embeddings) through `embeddings`.

    Example:
      >>> encoder = SequenceEncoder(vocab_size=100, dim=32, max_len=10)
      >>> ids = tf.constant([[0, 0, 5, 7, 9]])
      >>> encoder(ids, padding_mask=ids > 0).shape
      TensorShape([1, 5, 32])

    Args:
      vocab_size: number of ids including padding (0).
      dim: embedding and block width.
      max_len: longest sequence. Positions are counted back from the most recent event, so a
        window shorter than `max_len` (a batch padded only to its longest history) reads the
        same position embeddings as the same events padded to `max_len`.
      num_blocks: number of Transformer blocks.
      num_heads: attention heads per block.
      ffn_multiplier: feed-forward width as a multiple of `dim`.
      dropout: dropout rate.
      causal: True (default) lets position t see events <= t only (next-event prediction);
        False lets every position see the whole window (BERT4Rec's cloze task).
      recency_bias: each block's attention favours recent events through a learned per-head
        slope (`RecencyBiasedAttention`); the position embeddings stay.
    """

    def __init__(
        self,
        vocab_size: int,
        dim: int,
        max_len: int,
        num_blocks: int = 2,
        num_heads: int = 2,
        ffn_multiplier: int = 4,
        dropout: float = 0.2,
        causal: bool = True,
        recency_bias: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.causal = bool(causal)
        self.recency_bias = bool(recency_bias)
        self.vocab_size = int(vocab_size)
        self.dim = int(dim)
        self.max_len = int(max_len)
        self.num_blocks = int(num_blocks)
        self.num_heads = int(num_heads)
        self.ffn_multiplier = int(ffn_multiplier)
        self.dropout_rate = float(dropout)
        policy = self.dtype_policy  # shared by the sub-layers (see TransformerBlock)
        self.token_embedding = tf.keras.layers.Embedding(
            self.vocab_size + 1, self.dim, embeddings_initializer=tf.keras.initializers.TruncatedNormal(stddev=0.02),
            name="token_embedding", dtype=policy,
        )
        self.position_embedding = tf.keras.layers.Embedding(
            self.max_len, self.dim, embeddings_initializer=tf.keras.initializers.TruncatedNormal(stddev=0.02),
            name="position_embedding", dtype=policy,
        )
        self.embedding_dropout = Dropout(self.dropout_rate, dtype=policy)
        self.blocks = [
            TransformerBlock(
                dim=self.dim,
                num_heads=self.num_heads,
                ffn_dim=self.ffn_multiplier * self.dim,
                dropout=self.dropout_rate,
                recency_bias=self.recency_bias,
                name=f"block_{i}",
                dtype=policy,
            )
            for i in range(self.num_blocks)
        ]
        self.final_norm = tf.keras.layers.LayerNormalization(epsilon=1e-6, name="final_norm",
                                                             dtype=policy)

    def call(
        self,
        ids: tf.Tensor,
        padding_mask: Optional[tf.Tensor] = None,
        training: Optional[bool] = None,
        extra_embeddings: Optional[tf.Tensor] = None,
        last_only: bool = False,
    ) -> tf.Tensor:
        """Encodes `ids` [B, L] into [B, L, dim]; `padding_mask` [B, L] is True on real events.

        `extra_embeddings` [B, L, dim], if given, is added to the token embeddings (attribute
        side information, e.g. the scene in the `sasrec_scene` baseline). `last_only` returns
        only the most recent position, [B, 1, dim], equal to the last row of the full output
        (the last block computes that position alone; earlier blocks still need every one).
        """
        ids = tf.cast(ids, tf.int32)
        if padding_mask is None:
            padding_mask = ids > 0
        length = tf.shape(ids)[1]
        valid = tf.cast(padding_mask, self.compute_dtype)[:, :, tf.newaxis]
        # Zero the padded inputs so their ids cannot leak through the residual stream.
        x = self.token_embedding(ids) * tf.math.sqrt(tf.cast(self.dim, self.compute_dtype))
        if extra_embeddings is not None:
            x = x + tf.cast(extra_embeddings, x.dtype)
        # The most recent event always gets position max_len - 1, whatever the window length.
        positions = tf.range(self.max_len - length, self.max_len)
        x = (x + self.position_embedding(positions)[tf.newaxis]) * valid
        x = self.embedding_dropout(x, training=training)
        # attention_mask[b, q, k]: query q may read key k if k is real (and k <= q if causal).
        attention_mask = tf.broadcast_to(
            padding_mask[:, tf.newaxis, :], [tf.shape(ids)[0], length, length]
        )
        if self.causal:
            causal = tf.linalg.band_part(tf.ones([length, length], tf.bool), -1, 0)
            attention_mask = tf.logical_and(causal[tf.newaxis], attention_mask)
        for index, block in enumerate(self.blocks):
            last = last_only and index == len(self.blocks) - 1
            if last:
                valid = valid[:, -1:]
            x = block(x, attention_mask=attention_mask, training=training, last_only=last) * valid
        if last_only and not self.blocks:
            x, valid = x[:, -1:], valid[:, -1:]
        return self.final_norm(x) * valid

    def get_config(self) -> Dict[str, Any]:
        """The constructor arguments, so Keras can re-create the layer from a saved model."""
        config = super().get_config()
        config.update(
            vocab_size=self.vocab_size,
            dim=self.dim,
            max_len=self.max_len,
            num_blocks=self.num_blocks,
            num_heads=self.num_heads,
            ffn_multiplier=self.ffn_multiplier,
            dropout=self.dropout_rate,
            causal=self.causal,
            recency_bias=self.recency_bias,
        )
        return config
