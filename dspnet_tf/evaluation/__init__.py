"""Evaluation: full-ranking metrics and leave-one-out scoring."""

from dspnet_tf.evaluation.leave_one_out import evaluate_last_events, rank_last_events
from dspnet_tf.evaluation.ranking import hit_rate, ndcg, pessimistic_rank, ranking_metrics
from dspnet_tf.evaluation.tasks import IN_SCENE, NEXT_EVENT, TASKS

__all__ = [
    "IN_SCENE",
    "NEXT_EVENT",
    "TASKS",
    "evaluate_last_events",
    "hit_rate",
    "ndcg",
    "pessimistic_rank",
    "rank_last_events",
    "ranking_metrics",
]
