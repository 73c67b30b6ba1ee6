"""GRU encoder of an id sequence: the recurrent alternative used by the GRU4Rec baseline."""

from __future__ import annotations

from typing import Any, Dict, Optional

import tensorflow as tf

from dspnet_tf.layers.dropout import Dropout

from dspnet_tf.layers.token_table import TiedTokenTableMixin


@tf.keras.utils.register_keras_serializable(package="dspnet_tf")
class GRUSequenceEncoder(TiedTokenTableMixin, tf.keras.layers.Layer):
    """Embeds a left-padded id sequence and runs a GRU over it (GRU4Rec-style).

    A recurrent encoder is causal by construction: the state at t has read events <= t. It has
    the same interface as `SequenceEncoder` (an `embeddings` table with a [MASK] row, a padding
    mask, zero outputs at padding), so the same heads, losses and training step serve it.

    Example:
      >>> encoder = GRUSequenceEncoder(vocab_size=100, dim=16)
      >>> encoder(tf.constant([[0, 3, 4]])).shape
      TensorShape([1, 3, 16])

    Args:
      vocab_size: number of ids including padding (0).
      dim: embedding and state width.
      dropout: dropout on the embeddings.
    """

    def __init__(self, vocab_size: int, dim: int, dropout: float = 0.2, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.vocab_size = int(vocab_size)
        self.dim = int(dim)
        self.dropout_rate = float(dropout)
        policy = self.dtype_policy  # shared by the sub-layers (see TransformerBlock)
        self.token_embedding = tf.keras.layers.Embedding(
            self.vocab_size + 1, self.dim,
            embeddings_initializer=tf.keras.initializers.TruncatedNormal(stddev=0.02),
            name="token_embedding", dtype=policy,
        )
        self.embedding_dropout = Dropout(self.dropout_rate, dtype=policy)
        self.gru = tf.keras.layers.GRU(self.dim, return_sequences=True, name="gru", dtype=policy)
        # As in `SequenceEncoder`: embeddings scaled by sqrt(dim) in, LayerNorm out. Without
        # them the GRU reads 0.02-scale inputs and emits tanh-bounded states, learns many times
        # slower and, on the default scene world, never left the most-popular solution.
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
        """Encodes `ids` [B, L] into [B, L, dim] (the same interface as `SequenceEncoder`).

        `last_only` returns the most recent position alone, [B, 1, dim]; a recurrence has to
        run over every step anyway, so this saves nothing but keeps the encoders swappable.
        """
        ids = tf.cast(ids, tf.int32)
        if padding_mask is None:
            padding_mask = ids > 0
        x = self.token_embedding(ids) * tf.math.sqrt(tf.cast(self.dim, self.compute_dtype))
        if extra_embeddings is not None:
            x = x + tf.cast(extra_embeddings, x.dtype)
        x = self.embedding_dropout(x, training=training)
        # The Keras mask makes the GRU carry its state over padded steps untouched.
        states = self.final_norm(self.gru(x, mask=padding_mask, training=training))
        states = states * tf.cast(padding_mask, states.dtype)[:, :, tf.newaxis]
        return states[:, -1:] if last_only else states

    def get_config(self) -> Dict[str, Any]:
        """The constructor arguments, so Keras can re-create the layer from a saved model."""
        config = super().get_config()
        config.update(vocab_size=self.vocab_size, dim=self.dim, dropout=self.dropout_rate)
        return config
