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
    """Per-example {"ndcg@10", "hr@10"} of each example's last item given the events before it.

    `examples`: serialized tf.Examples (bytes) or a tf.data.Dataset of them.
    """
    signature = tf.saved_model.load(version_dir).signatures["evaluate_ranking"]
    if not isinstance(examples, tf.data.Dataset):
        examples = tf.data.Dataset.from_tensor_slices(tf.constant(list(examples), tf.string))
    ndcg, hit = [], []
    for batch in examples.batch(batch_size):
        out = signature(examples=batch)
        ndcg.append(out["ndcg_at_10"].numpy().ravel())
        hit.append(out["hit_at_10"].numpy().ravel())
    return {"ndcg@10": np.concatenate(ndcg), "hr@10": np.concatenate(hit)}


def score_example_files(version_dir: str, files: Sequence[str], batch_size: int = 512
                        ) -> Dict[str, np.ndarray]:
    """`score_examples` over gzipped TFRecord files (e.g. the ExampleGen's Split-test)."""
    if not files:
        raise ValueError("no example files to score")
    return score_examples(version_dir, tf.data.TFRecordDataset(list(files),
                                                               compression_type="GZIP"),
                          batch_size)
