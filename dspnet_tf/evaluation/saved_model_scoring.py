"""Scoring an exported SavedModel (pushed or not) through its `evaluate_ranking` signature.

The same full-ranking, pessimistic-tie protocol as the Keras-side evaluation, run by the serving
graph itself: raw-id examples in, per-example NDCG@10 / HR@10 out. Used by the pipeline-parity
benchmark, `dspnet evaluate` and the demo report.
"""

from __future__ import annotations

from typing import Dict, Iterable, List, Sequence

import numpy as np
import tensorflow as tf

from dspnet_tf.export import make_history_example


def history_examples(item_histories: Sequence[Sequence[str]],
                     scene_histories: Sequence[Sequence[str]]) -> List[bytes]:
    """Serialized tf.Examples (`item_history`, `scene_history`) of raw-id histories."""
    return [make_history_example(items, scenes)
            for items, scenes in zip(item_histories, scene_histories)]


def score_examples(version_dir: str, examples: Iterable, batch_size: int = 512
                   ) -> Dict[str, np.ndarray]:
    """Per-example {"ndcg@10", "hr@10"} of each example's last item given the events before it
    (next-event task), and {"in_scene_ndcg@10", "in_scene_hr@10"} when the model is also told
    the last event's scene (in-scene task; models exported before it existed have no such keys).

    `examples`: serialized tf.Examples (bytes) or a tf.data.Dataset of them.
    """
    signature = tf.saved_model.load(version_dir).signatures["evaluate_ranking"]
    if not isinstance(examples, tf.data.Dataset):
        examples = tf.data.Dataset.from_tensor_slices(tf.constant(list(examples), tf.string))
    names = {"ndcg_at_10": "ndcg@10", "hit_at_10": "hr@10",
             "ndcg_at_10_in_scene": "in_scene_ndcg@10", "hit_at_10_in_scene": "in_scene_hr@10"}
    parts: Dict[str, List[np.ndarray]] = {}
    for batch in examples.batch(batch_size):
        out = signature(examples=batch)
        for output, name in names.items():
            if output in out:
                parts.setdefault(name, []).append(out[output].numpy().ravel())
    return {name: np.concatenate(values) for name, values in parts.items()}


def score_example_files(version_dir: str, files: Sequence[str], batch_size: int = 512
                        ) -> Dict[str, np.ndarray]:
    """`score_examples` over gzipped TFRecord files (e.g. the ExampleGen's Split-test)."""
    if not files:
        raise ValueError("no example files to score")
    return score_examples(version_dir, tf.data.TFRecordDataset(list(files),
                                                               compression_type="GZIP"),
                          batch_size)
