"""From per-user id sequences to the `tf.data` input DSPnet trains on."""

from __future__ import annotations

from typing import Dict, Optional, Sequence

import numpy as np
import tensorflow as tf


def left_pad(sequences: Sequence[Sequence[int]], max_len: int) -> np.ndarray:
    """Keeps the most recent `max_len` ids of each sequence and left pads with 0. -> [N, max_len]."""
    out = np.zeros((len(sequences), max_len), dtype=np.int32)
    for row, seq in enumerate(sequences):
        tail = np.asarray(seq, dtype=np.int64)[-max_len:]
        if tail.size and (tail.min() < 0):
            raise ValueError(f"sequence {row} has a negative id {int(tail.min())}; ids must be >= 0")
        out[row, max_len - tail.size:] = tail
    return out


def make_dataset(
    item_sequences: Sequence[Sequence[int]],
    scene_sequences: Sequence[Sequence[int]],
    max_len: int,
    batch_size: int = 256,
    shuffle: bool = True,
    seed: Optional[int] = 0,
) -> tf.data.Dataset:
    """A batched dataset of `{"item_ids", "scene_ids"}` dicts for `DSPnet.fit` / `evaluate`.

    Each sequence is one user's history, oldest first; the model reads `max_len` events and
    trains every position on the next one, so pass `max_len + 1` to use `max_len` as context.
    """
    if len(item_sequences) != len(scene_sequences):
        raise ValueError(
            f"{len(item_sequences)} item sequences but {len(scene_sequences)} scene sequences"
        )
    for row, (items, scenes) in enumerate(zip(item_sequences, scene_sequences)):
        if len(items) != len(scenes):
            raise ValueError(
                f"user {row}: item sequence has {len(items)} events, scene sequence {len(scenes)}"
            )
    features: Dict[str, np.ndarray] = {
        "item_ids": left_pad(item_sequences, max_len),
        "scene_ids": left_pad(scene_sequences, max_len),
    }
    dataset = tf.data.Dataset.from_tensor_slices(features)
    if shuffle:
        dataset = dataset.shuffle(len(item_sequences), seed=seed, reshuffle_each_iteration=True)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)
