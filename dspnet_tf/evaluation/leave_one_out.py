"""Scores a model on each user's held-out last event (leave-one-out, full ranking)."""

from __future__ import annotations

import weakref
from typing import Callable, Dict, Iterable, Sequence, Tuple

import numpy as np
import tensorflow as tf

from dspnet_tf.data.sequences import left_pad
from dspnet_tf.evaluation.ranking import pessimistic_rank, ranking_metrics
from dspnet_tf.evaluation.tasks import IN_SCENE, NEXT_EVENT, TASKS


def rank_last_events(
    model: tf.keras.Model,
    item_sequences: Sequence[Sequence[int]],
    scene_sequences: Sequence[Sequence[int]],
    max_len: int,
    batch_size: int = 512,
    task: str = NEXT_EVENT,
) -> Dict[str, np.ndarray]:
    """Ranks each user's last item and last scene given the events before it.

    Args:
      model: a model whose call returns `item_logits` and `scene_logits` (e.g. DSPnet).
      item_sequences: per-user item ids, oldest first; the last one is the target.
      scene_sequences: aligned scene ids.
      max_len: the model reads at most this many of the most recent events.
      batch_size: users per forward pass.
      task: "next_event" (the model sees the history only) or "in_scene" (it is also told the
        scene of the event to predict, as `target_scene`: the surface that asks for the list).
        A model that does not read `target_scene` answers both alike.

    Returns:
      `item_rank` and `scene_rank`: 1-based pessimistic ranks, one per user with >= 2 events
      (in the in-scene task the scene rank is that of a model told the answer: not a metric).
    """
    if task not in TASKS:
        raise ValueError(f"task={task!r}: one of {TASKS}")
    keep = [i for i, seq in enumerate(item_sequences) if len(seq) >= 2]
    lengths = np.array([min(len(item_sequences[i]) - 1, max_len) for i in keep], np.int64)
    # Users sorted by history length, each batch left padded only to its longest history:
    # every model here is blind to left padding (masked, positions counted from the most
    # recent event), and most histories are far shorter than max_len, so padding all of them
    # to max_len made scoring a validation set cost a third of a training epoch.
    order = np.argsort(lengths, kind="stable")
    rank = _graph_ranker(model) if isinstance(model, tf.keras.Model) else _ranker(model)
    item_rank = np.zeros(len(keep), np.int64)
    scene_rank = np.zeros(len(keep), np.int64)
    for start in range(0, len(keep), batch_size):
        rows = order[start:start + batch_size]
        users = [keep[row] for row in rows]
        width = int(lengths[rows].max())
        batch_item_rank, batch_scene_rank = rank(
            left_pad([item_sequences[u][:-1] for u in users], width),
            left_pad([scene_sequences[u][:-1] for u in users], width),
            np.array([item_sequences[u][-1] for u in users], np.int32),
            np.array([scene_sequences[u][-1] for u in users], np.int32),
            np.array([scene_sequences[u][-1] if task == IN_SCENE else 0 for u in users],
                     np.int32))
        item_rank[rows] = batch_item_rank.numpy()
        scene_rank[rows] = batch_scene_rank.numpy()
    return {"item_rank": item_rank, "scene_rank": scene_rank}


_Ranker = Callable[..., Tuple[tf.Tensor, tf.Tensor]]
_GRAPH_RANKERS: "weakref.WeakKeyDictionary[tf.keras.Model, _Ranker]" = weakref.WeakKeyDictionary()


def _ranker(model: Callable[..., Dict[str, tf.Tensor]]) -> _Ranker:
    def rank(items, scenes, target_items, target_scenes, given_scenes):
        # Target scene 0 = not given: the next-event answer.
        out = model({"item_ids": items, "scene_ids": scenes, "target_scene": given_scenes},
                    training=False)
        return (pessimistic_rank(out["item_logits"], target_items),
                pessimistic_rank(out["scene_logits"], target_scenes))
    return rank


def _graph_ranker(model: tf.keras.Model) -> _Ranker:
    """The forward pass and the ranking as one graph, traced once per model and reused.

    Run eagerly, every op pays Python dispatch: scoring a validation set each epoch cost more
    than the scoring itself (1.5 s per 2,000 users for DSPnet, 0.5-0.7 s as a graph). Without
    autograph (nothing here branches on tensors), which would otherwise convert every layer's
    `call` on the first trace (~8 s). Held through a weak reference so the cached graph does
    not keep a discarded model alive.
    """
    ranker = _GRAPH_RANKERS.get(model)
    if ranker is None:
        if not model.built:  # created inside the graph, its variables would cost a 2nd trace
            one_oov = tf.ones([1, 1], tf.int32)
            model({"item_ids": one_oov, "scene_ids": one_oov}, training=False)
        model_ref = weakref.ref(model)
        ids = tf.TensorSpec([None, None], tf.int32)
        targets = tf.TensorSpec([None], tf.int32)

        @tf.function(input_signature=[ids, ids, targets, targets, targets], autograph=False)
        def ranker(items, scenes, target_items, target_scenes, given_scenes):
            return _ranker(model_ref())(items, scenes, target_items, target_scenes, given_scenes)

        _GRAPH_RANKERS[model] = ranker
    return ranker


def evaluate_last_events(
    model: tf.keras.Model,
    item_sequences: Sequence[Sequence[int]],
    scene_sequences: Sequence[Sequence[int]],
    max_len: int,
    ks: Iterable[int] = (1, 5, 10, 20),
    task: str = NEXT_EVENT,
) -> Dict[str, float]:
    """Mean full-ranking item metrics over users, and in the next-event task scene
    accuracy@1 / NDCG@3 (in the in-scene task the model is told the scene)."""
    ranks = rank_last_events(model, item_sequences, scene_sequences, max_len, task=task)
    per_user = ranking_metrics(ranks["item_rank"], ks)
    summary = {name: float(values.mean()) for name, values in per_user.items()}
    if task == NEXT_EVENT:
        scene = ranking_metrics(ranks["scene_rank"], (1, 3))
        summary["scene_acc@1"] = float(scene["hr@1"].mean())
        summary["scene_ndcg@3"] = float(scene["ndcg@3"].mean())
    return summary
