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
        item_counts = np.bincount(np.concatenate([np.asarray(s, np.int64) for s in item_sequences] or [np.zeros(0, np.int64)]),
                                  minlength=item_vocab_size)[:item_vocab_size].astype(np.float64)
        scene_counts = np.bincount(np.concatenate([np.asarray(s, np.int64) for s in scene_sequences] or [np.zeros(0, np.int64)]),
                                   minlength=scene_vocab_size)[:scene_vocab_size].astype(np.float64)
        # log(1 + count): ties among unseen items stay ties (ranked pessimistically).
        self.item_scores = np.log1p(item_counts).astype(np.float32)
        self.item_scores[0] = -1e9
        self.scene_scores = np.log1p(scene_counts).astype(np.float32)
        self.scene_scores[0] = -1e9

    def __call__(self, inputs: Mapping[str, np.ndarray], training: bool = False) -> Dict[str, tf.Tensor]:
        batch = int(np.shape(inputs["item_ids"])[0])
        return {
            "item_logits": tf.constant(np.tile(self.item_scores, (batch, 1))),
            "scene_logits": tf.constant(np.tile(self.scene_scores, (batch, 1))),
        }
