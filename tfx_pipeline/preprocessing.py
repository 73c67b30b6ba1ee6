"""Transform's preprocessing_fn: vocabularies and fixed-length, left-padded id sequences.

A transformed example holds max_len + 1 events: the model's max_len inputs and the event after
the last one (its target), so training covers every position a served history of max_len events
uses. Serving needs no change: the model keeps a history's most recent max_len events.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

import tensorflow as tf
import tensorflow_transform as tft

from dspnet_tf.config import example_length
from dspnet_tf.export import left_pad_sparse as left_pad
from tfx_pipeline import features

DEFAULTS = {"max_len": 50, "item_frequency_threshold": 0, "item_oov_buckets": 0}


def to_model_ids(vocab_ids: tf.Tensor) -> tf.Tensor:
    """TFT vocabulary ids -> the model's ids: 0 padding, 1 unknown (-1 from TFT), else id + 2."""
    return tf.where(vocab_ids < 0, tf.ones_like(vocab_ids), vocab_ids + 2)


def _as_sparse(value: Any) -> tf.SparseTensor:
    if isinstance(value, tf.RaggedTensor):
        return value.to_sparse()
    return value


def preprocessing_fn(inputs: Dict[str, Any], custom_config: Optional[Dict[str, Any]] = None):
    """Maps raw id histories to the int64 [L] features DSPnet reads.

    custom_config keys: `max_len` (L; the outputs are [L + 1]), `item_frequency_threshold`
    (items seen fewer times map to OOV) and `item_oov_buckets` (hash buckets for unknown
    items; 0 = one OOV id).
    """
    config = dict(DEFAULTS, **(custom_config or {}))
    length = example_length(config["max_len"])
    items = _as_sparse(inputs[features.ITEM_HISTORY])
    scenes = _as_sparse(inputs[features.SCENE_HISTORY])
    item_ids = tft.compute_and_apply_vocabulary(
        items,
        frequency_threshold=int(config["item_frequency_threshold"]) or None,
        num_oov_buckets=int(config["item_oov_buckets"]),
        default_value=-1,
        vocab_filename=features.ITEM_VOCAB,
    )
    scene_ids = tft.compute_and_apply_vocabulary(
        scenes, default_value=-1, vocab_filename=features.SCENE_VOCAB
    )
    return {
        features.ITEM_IDS: left_pad(
            tf.SparseTensor(item_ids.indices, to_model_ids(item_ids.values), item_ids.dense_shape),
            length,
        ),
        features.SCENE_IDS: left_pad(
            tf.SparseTensor(scene_ids.indices, to_model_ids(scene_ids.values), scene_ids.dense_shape),
            length,
        ),
    }
