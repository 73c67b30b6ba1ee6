"""From per-user id sequences to the `tf.data` input DSPnet trains on."""

from __future__ import annotations

from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from dspnet_tf.config import RESERVED_IDS, example_length


def left_pad(sequences: Sequence[Sequence[int]], max_len: int) -> np.ndarray:
    """Keeps the most recent `max_len` ids of each sequence and left pads with 0. -> [N, max_len]."""
    out = np.zeros((len(sequences), max_len), dtype=np.int32)
    for row, seq in enumerate(sequences):
        tail = np.asarray(seq, dtype=np.int64)[-max_len:]
        if tail.size and (tail.min() < 0):
            raise ValueError(f"sequence {row} has a negative id {int(tail.min())}; ids must be >= 0")
        out[row, max_len - tail.size:] = tail
    return out


def repeat_target_share(item_sequences: Iterable[Sequence[int]]) -> float:
    """Share of next events whose item the same user met earlier: repeat consumption.

    Every event after a sequence's first is a next-event target; it repeats when its item id
    occurs earlier in that sequence. Padding and the OOV bucket (ids below RESERVED_IDS) are
    neither targets nor history, so left-padded rows and raw sequences give the same share.
    0.0 when there is no target. Sets DSPnetConfig.training_repeat_share.
    """
    repeats = targets = 0
    for sequence in item_sequences:
        seen = set()
        for item in np.asarray(sequence, dtype=np.int64).tolist():
            if item < RESERVED_IDS:
                continue
            if seen:
                targets += 1
                repeats += item in seen
            seen.add(item)
    return repeats / targets if targets else 0.0


# make_dataset's batch: on the README's Keras path (MovieLens-100K, 40 epochs of Adam at 1e-3)
# 128 histories per step measured better than 256, which gives too few steps on a small log
# (benchmarks/results/new_user_movielens*).
DEFAULT_BATCH_SIZE = 128


def make_dataset(
    item_sequences: Sequence[Sequence[int]],
    scene_sequences: Sequence[Sequence[int]],
    max_len: int,
    batch_size: int = DEFAULT_BATCH_SIZE,
    shuffle: bool = True,
    seed: Optional[int] = 0,
    bucket_by_length: bool = False,
    whole_histories: bool = True,
) -> tf.data.Dataset:
    """A batched dataset of `{"item_ids", "scene_ids"}` dicts for `DSPnet.fit` / `evaluate`.

    Each sequence is one user's history, oldest first. An example holds `max_len + 1` events:
    `max_len` inputs, each trained on the event after it, so the model trains the same
    `max_len` positions a served history of `max_len` events uses. With `whole_histories` (the
    default) a longer history is cut into such windows (`training_windows`), so every event of
    it is a target once per epoch, as in the quality benchmark; with it off, only the most
    recent `max_len + 1` events of each history are kept.

    With `bucket_by_length`, batches hold histories of similar length and are left padded only
    to their longest one (`tf.data`'s `bucket_by_sequence_length`), not to `max_len`: the same
    training signal (DSPnet counts positions from the most recent event and masks padding) at a
    fraction of the cost when most histories are much shorter than `max_len`.
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
    if whole_histories:
        item_sequences, scene_sequences = training_windows(
            item_sequences, scene_sequences, window=example_length(max_len))
    if bucket_by_length:
        return _length_bucketed(item_sequences, scene_sequences, max_len, batch_size, shuffle, seed)
    features: Dict[str, np.ndarray] = {
        "item_ids": left_pad(item_sequences, example_length(max_len)),
        "scene_ids": left_pad(scene_sequences, example_length(max_len)),
    }
    dataset = tf.data.Dataset.from_tensor_slices(features)
    if shuffle:
        dataset = dataset.shuffle(len(item_sequences), seed=seed, reshuffle_each_iteration=True)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def _length_bucketed(
    item_sequences: Sequence[Sequence[int]],
    scene_sequences: Sequence[Sequence[int]],
    max_len: int,
    batch_size: int,
    shuffle: bool,
    seed: Optional[int],
) -> tf.data.Dataset:
    length = example_length(max_len)
    features = {
        "item_ids": left_pad(item_sequences, length),
        "scene_ids": left_pad(scene_sequences, length),
    }
    dataset = tf.data.Dataset.from_tensor_slices(features)
    if shuffle:
        dataset = dataset.shuffle(len(item_sequences), seed=seed, reshuffle_each_iteration=True)
    return batch_by_history_length(dataset, batch_size, length).prefetch(tf.data.AUTOTUNE)


def batch_by_history_length(rows: tf.data.Dataset, batch_size: int, length: int) -> tf.data.Dataset:
    """Batches left-padded rows so each batch is padded only to its own longest history.

    `rows` yields unbatched dicts of `[length]` id vectors (`item_ids`, `scene_ids`, ...), left
    padded with 0 where `item_ids` is 0. Rows of similar length share a batch (`tf.data`'s
    `bucket_by_sequence_length`), so short histories are not padded up to `length`: the same
    training signal (DSPnet counts positions from the most recent event and masks padding) at
    a fraction of the cost when most histories are much shorter than `length`. Batches are no
    longer random samples of users, which costs some accuracy when steps are few
    (benchmarks/PIPELINE_PARITY.md).
    """
    def most_recent_first(row: Dict[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
        # Reversed and cut to the history's length: tf.data pads batches on the right, which
        # becomes left padding once reversed back.
        events = tf.math.count_nonzero(row["item_ids"] > 0, dtype=tf.int32)
        return {key: tf.reverse(value, axis=[0])[:events] for key, value in row.items()}

    boundaries = [b for b in (8, 16, 24, 32, 48, 64, 96, 128, 192, 256) if b < length]
    batches = rows.map(most_recent_first).bucket_by_sequence_length(
        lambda row: tf.shape(row["item_ids"])[0],
        bucket_boundaries=[b + 1 for b in boundaries],
        bucket_batch_sizes=[batch_size] * (len(boundaries) + 1),
    )
    return batches.map(
        lambda batch: {key: tf.reverse(value, axis=[1]) for key, value in batch.items()}
    )


def training_windows(
    item_sequences: Sequence[Sequence[int]],
    scene_sequences: Sequence[Sequence[int]],
    window: int,
    stride: Optional[int] = None,
) -> Tuple[List[List[int]], List[List[int]]]:
    """Cuts histories longer than `window` into windows, the most recent one full.

    The model trains each position on the next event, so a window of `window` events yields
    `window - 1` targets. With the default `stride = window - 1`, consecutive windows overlap by
    one event and together predict every event once. Without windows, training on the most
    recent `window` events would drop the older part of long histories (MovieLens users have
    hundreds of ratings). A smaller stride gives overlapping windows: each event is a target in
    several windows, with different amounts of context before it, and an epoch has more
    (smaller-batch-equivalent) updates, like RecBole's one-example-per-prefix epochs.
    """
    if window < 2:
        raise ValueError(f"window must be >= 2, got {window}")
    stride = window - 1 if stride is None else int(stride)
    if not 1 <= stride <= window - 1:
        raise ValueError(f"stride must be in [1, window - 1 = {window - 1}], got {stride}")
    out_items: List[List[int]] = []
    out_scenes: List[List[int]] = []
    for items, scenes in zip(item_sequences, scene_sequences):
        stop = len(items)
        while True:
            start = max(0, stop - window)
            out_items.append(list(items[start:stop]))
            out_scenes.append(list(scenes[start:stop]))
            if start == 0:
                break
            stop -= stride
    return out_items, out_scenes
