"""The TFX Trainer's input step on Transform's fixed-length rows (no pipeline run needed)."""

import types

import numpy as np
import tensorflow as tf

from dspnet_tf.data import left_pad
from tfx_pipeline import features, trainer

RNG = np.random.default_rng(5)


def _fn_args(items, scenes):
    # What tf_dataset_factory yields for Transform's output: batched dicts of [max_len + 1] rows.
    def tf_dataset_factory(files, options, schema):
        rows = {features.ITEM_IDS: items, features.SCENE_IDS: scenes,
                "other_feature": np.zeros(len(items), np.int64)}
        return tf.data.Dataset.from_tensor_slices(rows).batch(options.batch_size)

    return types.SimpleNamespace(data_accessor=types.SimpleNamespace(
        tf_dataset_factory=tf_dataset_factory))


def test_trainer_batches_are_padded_rows_by_default_and_trimmed_by_length_on_request():
    tft_output = types.SimpleNamespace(transformed_metadata=types.SimpleNamespace(schema=None))
    lengths = RNG.integers(1, 12, size=60)
    items = left_pad([list(RNG.integers(2, 50, size=n)) for n in lengths], 11).astype(np.int64)
    scenes = np.where(items > 0, items % 3 + 2, 0)
    fn_args = _fn_args(items, scenes)

    padded = list(trainer._dataset(fn_args, [], tft_output, 16, 1))
    assert all(sorted(b) == [features.ITEM_IDS, features.SCENE_IDS] for b in padded)
    assert all(b[features.ITEM_IDS].shape[1] == 11 for b in padded)
    np.testing.assert_array_equal(np.concatenate([b[features.ITEM_IDS] for b in padded]), items)

    by_length = list(trainer._dataset(fn_args, [], tft_output, 16, 1, by_length=True))
    seen = []
    for batch in by_length:
        ids, sc = batch[features.ITEM_IDS].numpy(), batch[features.SCENE_IDS].numpy()
        assert ids.shape[1] == (ids > 0).sum(axis=1).max()
        np.testing.assert_array_equal(np.where(ids > 0, ids % 3 + 2, 0), sc)
        seen += [tuple(row[row > 0]) for row in ids]
    assert sorted(seen) == sorted(tuple(row[row > 0]) for row in items)
    assert min(b[features.ITEM_IDS].shape[1] for b in by_length) < 11
