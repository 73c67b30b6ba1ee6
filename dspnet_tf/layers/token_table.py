"""The token table both sequence encoders expose to the tied prediction heads."""

import tensorflow as tf


class TiedTokenTableMixin:
    """Gives an encoder with `token_embedding` and `vocab_size` its [MASK] id and shared table.

    The table has vocab_size + 1 rows: ids [0, vocab_size) and the [MASK] row (id vocab_size)
    used by the contrastive augmentations.
    """

    token_embedding: tf.keras.layers.Embedding
    vocab_size: int

    @property
    def mask_token(self) -> int:
        """Id of the [MASK] row used by the augmentations."""
        return self.vocab_size

    @property
    def embeddings(self) -> tf.Variable:
        """The [vocab_size + 1, dim] token table, shared with the tied prediction head."""
        if not self.token_embedding.built:  # e.g. the scene table when the scene network is off
            self.token_embedding.build((None,))
        return self.token_embedding.embeddings
