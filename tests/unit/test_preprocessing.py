"""preprocessing_fn through tft_beam on a handful of rows: vocabularies, padding, OOV."""

import tempfile

import numpy as np
import tensorflow as tf


def test_preprocessing_fn_vocabularies_padding_and_oov():
    import tensorflow_transform.beam as tft_beam
    from tensorflow_transform.tf_metadata import dataset_metadata, schema_utils

    from tfx_pipeline import preprocessing

    rows = [
        {"item_history": [b"a", b"b", b"a", b"c"], "scene_history": [b"feed", b"feed", b"cart", b"live"]},
        {"item_history": [b"a"], "scene_history": [b"search"]},
        {"item_history": [b"b", b"a", b"a", b"a", b"d", b"a"],
         "scene_history": [b"feed"] * 6},
    ]
    spec = {"item_history": tf.io.VarLenFeature(tf.string),
            "scene_history": tf.io.VarLenFeature(tf.string)}
    metadata = dataset_metadata.DatasetMetadata(schema_utils.schema_from_feature_spec(spec))
    config = {"max_len": 4, "item_frequency_threshold": 2}
    with tempfile.TemporaryDirectory() as tmp, tft_beam.Context(temp_dir=tmp, force_tf_compat_v1=False):
        (transformed, _), transform_fn = (rows, metadata) | tft_beam.AnalyzeAndTransformDataset(
            lambda inputs: preprocessing.preprocessing_fn(inputs, config))
    items = np.array([r["item_ids"] for r in transformed])
    scenes = np.array([r["scene_ids"] for r in transformed])
    # Vocabulary by frequency: a (7) -> 2, b (2) -> 3; c and d are below the threshold -> OOV 1.
    # max_len 4 -> 5 columns: the model's 4 inputs and the event after the last one.
    np.testing.assert_array_equal(items[0], [0, 2, 3, 2, 1])
    np.testing.assert_array_equal(items[1], [0, 0, 0, 0, 2])  # left padded, most recent last
    np.testing.assert_array_equal(items[2], [2, 2, 2, 1, 2])  # the most recent 5 of 6 events
    # Scenes: feed (9) -> 2, then cart / live / search (1 each, ties by TFT's order) -> 3..5.
    assert scenes[0, 1] == 2 and scenes[1, :4].tolist() == [0, 0, 0, 0]
    assert sorted(scenes[0, 3:].tolist() + [scenes[1, 4]]) == [3, 4, 5]
    assert items.dtype == np.int64 and items.shape == (3, 5)
