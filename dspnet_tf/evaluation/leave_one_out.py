"""Scores a model on each user's held-out last event (leave-one-out, full ranking)."""

from __future__ import annotations

from typing import Dict, Iterable, Sequence

import numpy as np
import tensorflow as tf

from dspnet_tf.data.sequences import left_pad
from dspnet_tf.evaluation.ranking import pessimistic_rank, ranking_metrics


def rank_last_events(
    model: tf.keras.Model,
    item_sequences: Sequence[Sequence[int]],
    scene_sequences: Sequence[Sequence[int]],
    max_len: int,
    batch_size: int = 512,
) -> Dict[str, np.ndarray]:
    """Ranks each user's last item and last scene given the events before it.

    Args:
      model: a model whose call returns `item_logits` and `scene_logits` (e.g. DSPnet).
      item_sequences: per-user item ids, oldest first; the last one is the target.
      scene_sequences: aligned scene ids.
      max_len: history length fed to the model.
      batch_size: users per forward pass.

    Returns:
      `item_rank` and `scene_rank`: 1-based pessimistic ranks, one per user with >= 2 events.
    """
    keep = [i for i, seq in enumerate(item_sequences) if len(seq) >= 2]
    histories_i = left_pad([item_sequences[i][:-1] for i in keep], max_len)
    histories_s = left_pad([scene_sequences[i][:-1] for i in keep], max_len)
    target_i = np.array([item_sequences[i][-1] for i in keep], np.int32)
    target_s = np.array([scene_sequences[i][-1] for i in keep], np.int32)
    item_ranks, scene_ranks = [], []
    for start in range(0, len(keep), batch_size):
        stop = start + batch_size
        out = model(
            {"item_ids": histories_i[start:stop], "scene_ids": histories_s[start:stop]},
            training=False,
        )
        item_ranks.append(pessimistic_rank(out["item_logits"], target_i[start:stop]).numpy())
        scene_ranks.append(pessimistic_rank(out["scene_logits"], target_s[start:stop]).numpy())
    return {
        "item_rank": np.concatenate(item_ranks) if item_ranks else np.zeros(0),
        "scene_rank": np.concatenate(scene_ranks) if scene_ranks else np.zeros(0),
    }


def evaluate_last_events(
    model: tf.keras.Model,
    item_sequences: Sequence[Sequence[int]],
    scene_sequences: Sequence[Sequence[int]],
    max_len: int,
    ks: Iterable[int] = (1, 5, 10, 20),
) -> Dict[str, float]:
    """Mean full-ranking item metrics and scene accuracy@1 / NDCG@3 over users."""
    ranks = rank_last_events(model, item_sequences, scene_sequences, max_len)
    per_user = ranking_metrics(ranks["item_rank"], ks)
    scene = ranking_metrics(ranks["scene_rank"], (1, 3))
    summary = {name: float(values.mean()) for name, values in per_user.items()}
    summary["scene_acc@1"] = float(scene["hr@1"].mean())
    summary["scene_ndcg@3"] = float(scene["ndcg@3"].mean())
    return summary
