"""Full-ranking metrics with pessimistic ties (HR@k, NDCG@k, MRR), in TF and numpy.

Every model is scored by the rank of the true next item among ALL candidates. A candidate that
ties with the true item counts as ranked above it (pessimistic), so a model that outputs constant
scores gets the worst rank, not a lucky one.
"""

from __future__ import annotations

from typing import Dict, Iterable

import numpy as np
import tensorflow as tf


def pessimistic_rank(logits: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
    """1-based rank of labels[b] in logits[b, :] with ties counted against it. [B, C], [B] -> [B]."""
    true_score = tf.gather(logits, tf.cast(labels, tf.int32), batch_dims=1)
    return tf.reduce_sum(tf.cast(logits >= true_score[:, tf.newaxis], tf.float32), axis=1)


def hit_rate(rank: tf.Tensor, k: int) -> tf.Tensor:
    """Per-example HR@k: 1 if the true item is in the top k."""
    return tf.cast(rank <= k, tf.float32)


def ndcg(rank: tf.Tensor, k: int) -> tf.Tensor:
    """Per-example NDCG@k for one relevant item: 1 / log2(rank + 1) inside the top k, else 0."""
    rank = tf.cast(rank, tf.float32)
    return tf.where(rank <= k, tf.math.log(2.0) / tf.math.log(rank + 1.0), 0.0)


def ranking_metrics(ranks: np.ndarray, ks: Iterable[int] = (5, 10, 20)) -> Dict[str, np.ndarray]:
    """Per-user HR@k, NDCG@k and MRR from 1-based ranks (numpy; keep them for paired tests)."""
    ranks = np.asarray(ranks, dtype=np.float64)
    out = {}
    for k in ks:
        out[f"hr@{k}"] = (ranks <= k).astype(np.float64)
        out[f"ndcg@{k}"] = np.where(ranks <= k, 1.0 / np.log2(ranks + 1.0), 0.0)
    out["mrr"] = 1.0 / ranks
    return out
