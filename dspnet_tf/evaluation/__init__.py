"""Evaluation: full-ranking metrics."""

from dspnet_tf.evaluation.ranking import hit_rate, ndcg, pessimistic_rank, ranking_metrics

__all__ = ["hit_rate", "ndcg", "pessimistic_rank", "ranking_metrics"]
