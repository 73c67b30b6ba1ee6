"""Most-popular baseline: the same answer for everyone, scored like any other model."""

from __future__ import annotations

from typing import Dict, Mapping, Sequence

import numpy as np
import tensorflow as tf


class MostPopular:
    """Scores items by their training frequency and scenes by theirs, ignoring the history.

    It is the floor every sequential model must clear. It needs no training step, so it is a
    plain callable with the model interface `evaluate_last_events` uses (not a Keras model).

    Args:
      item_sequences: training item id sequences.
      scene_sequences: training scene id sequences.
      item_vocab_size: item ids including padding and OOV.
      scene_vocab_size: scene ids including padding and OOV.
    """

    def __init__(self, item_sequences: Sequence[Sequence[int]],
                 scene_sequences: Sequence[Sequence[int]],
                 item_vocab_size: int, scene_vocab_size: int) -> None:
        self.item_scores = _popularity_scores(item_sequences, item_vocab_size)
        self.scene_scores = _popularity_scores(scene_sequences, scene_vocab_size)

    def __call__(self, inputs: Mapping[str, np.ndarray], training: bool = False) -> Dict[str, tf.Tensor]:
        batch = int(np.shape(inputs["item_ids"])[0])
        return {
            "item_logits": tf.constant(np.tile(self.item_scores, (batch, 1))),
            "scene_logits": tf.constant(np.tile(self.scene_scores, (batch, 1))),
        }


def _popularity_scores(sequences: Sequence[Sequence[int]], vocab_size: int) -> np.ndarray:
    """log(1 + training count) per id (ties among unseen ids stay ties); padding never wins."""
    ids = np.fromiter((i for seq in sequences for i in seq), dtype=np.int64)
    counts = np.bincount(ids, minlength=vocab_size)[:vocab_size]
    scores = np.log1p(counts).astype(np.float32)
    scores[0] = -1e9
    return scores
