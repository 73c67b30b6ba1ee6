"""Most-popular baseline: the same answer for everyone, scored like any other model."""

from __future__ import annotations

from typing import Dict, Mapping, Sequence

import numpy as np
import tensorflow as tf


class MostPopular:
    """Scores items by their training frequency and scenes by theirs, ignoring the history.

    It is the floor every sequential model must clear. It needs no training step, so it is a
    plain callable with the model interface `evaluate_last_events` uses (not a Keras model).

    With `by_target_scene` it is the in-scene floor, `scene_popular`: given the scene a list is
    shown in (`target_scene` in the inputs), items score by their training frequency within
    that scene; rows without a known target scene get the global answer.

    Args:
      item_sequences: training item id sequences.
      scene_sequences: training scene id sequences.
      item_vocab_size: item ids including padding and OOV.
      scene_vocab_size: scene ids including padding and OOV.
      by_target_scene: answer in-scene requests with the target scene's own popularity.
    """

    def __init__(self, item_sequences: Sequence[Sequence[int]],
                 scene_sequences: Sequence[Sequence[int]],
                 item_vocab_size: int, scene_vocab_size: int,
                 by_target_scene: bool = False) -> None:
        self.item_scores = _popularity_scores(item_sequences, item_vocab_size)
        self.scene_scores = _popularity_scores(scene_sequences, scene_vocab_size)
        self.by_target_scene = by_target_scene
        # [scene_vocab, item_vocab]: row s scores items by their count in scene s; rows of
        # padding and the OOV bucket are the global scores ("no target scene").
        self.scene_item_scores = np.tile(self.item_scores, (scene_vocab_size, 1))
        if by_target_scene:
            items = np.fromiter((i for seq in item_sequences for i in seq), dtype=np.int64)
            scenes = np.fromiter((s for seq in scene_sequences for s in seq), dtype=np.int64)
            counts = np.zeros((scene_vocab_size, item_vocab_size), np.int64)
            np.add.at(counts, (scenes, items), 1)
            # Ties within a scene (unseen there) fall back to global popularity, a tenth of a
            # count at most, so a scene's own counts always decide first.
            scores = np.log1p(counts + 0.1 * (self.item_scores - self.item_scores.max()).clip(-9) / 9)
            scores[:, 0] = -1e9
            self.scene_item_scores[2:] = scores[2:].astype(np.float32)

    def __call__(self, inputs: Mapping[str, np.ndarray], training: bool = False) -> Dict[str, tf.Tensor]:
        batch = int(np.shape(inputs["item_ids"])[0])
        target = inputs.get("target_scene")
        if self.by_target_scene and target is not None:
            rows = np.clip(np.asarray(target, np.int64).reshape(-1), 0,
                           len(self.scene_item_scores) - 1)
            item_logits = self.scene_item_scores[rows]
        else:
            item_logits = np.tile(self.item_scores, (batch, 1))
        return {
            "item_logits": tf.constant(item_logits),
            "scene_logits": tf.constant(np.tile(self.scene_scores, (batch, 1))),
        }


def _popularity_scores(sequences: Sequence[Sequence[int]], vocab_size: int) -> np.ndarray:
    """log(1 + training count) per id (ties among unseen ids stay ties); padding never wins."""
    ids = np.fromiter((i for seq in sequences for i in seq), dtype=np.int64)
    counts = np.bincount(ids, minlength=vocab_size)[:vocab_size]
    scores = np.log1p(counts).astype(np.float32)
    scores[0] = -1e9
    return scores
