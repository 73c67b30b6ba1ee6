"""Known answers of the full-ranking metrics (HR@k, NDCG@k, MRR) with pessimistic ties."""

import numpy as np
import pytest
import tensorflow as tf

from dspnet_tf.evaluation import evaluate_last_events
from dspnet_tf.evaluation.ranking import hit_rate, ndcg, pessimistic_rank, ranking_metrics
from dspnet_tf.models.most_popular import MostPopular

# Four users over five candidates; the true item's score is marked with [ ].
LOGITS = [[0.1, [0.5], 0.3, 0.5, 0.2],   # ties with item 3: counted above it -> rank 2
          [1.0, 1.0, 1.0, 1.0, [1.0]],   # constant scores: the worst rank, 5
          [[0.9], 0.1, 0.2, 0.3, 0.4],   # strictly best -> rank 1
          [0.0, -1.0, 2.0, 3.0, [-0.5]]]  # 0.0, 2.0, 3.0 above -> rank 4
LABELS = [1, 4, 0, 4]
RANKS = [2, 5, 1, 4]
# 1 / log2(rank + 1) by hand: rank 1 -> 1, 2 -> 1/log2(3), 4 -> 1/log2(5), 5 -> 1/log2(6).
INV_LOG2 = {1: 1.0, 2: 0.6309297536, 3: 0.5, 4: 0.4306765581, 5: 0.3868528072}


def _plain(logits):
    return [[v[0] if isinstance(v, list) else v for v in row] for row in logits]


def test_pessimistic_rank_counts_ties_against_the_true_item():
    ranks = pessimistic_rank(tf.constant(_plain(LOGITS)), tf.constant(LABELS))
    np.testing.assert_array_equal(ranks.numpy(), RANKS)
    # int64 labels and a batch of one, as the export's evaluate_ranking passes them.
    one = pessimistic_rank(tf.constant([[2.0, 2.0, 1.0]]), tf.constant([0], tf.int64))
    np.testing.assert_array_equal(one.numpy(), [2])


def test_tf_hit_rate_and_ndcg_of_known_ranks():
    ranks = tf.constant(RANKS, tf.float32)
    np.testing.assert_array_equal(hit_rate(ranks, 1).numpy(), [0, 0, 1, 0])
    np.testing.assert_array_equal(hit_rate(ranks, 4).numpy(), [1, 0, 1, 1])
    np.testing.assert_allclose(ndcg(ranks, 3).numpy(), [INV_LOG2[2], 0, 1, 0], rtol=1e-6)
    np.testing.assert_allclose(ndcg(ranks, 5).numpy(),
                               [INV_LOG2[2], INV_LOG2[5], 1, INV_LOG2[4]], rtol=1e-6)


def test_numpy_ranking_metrics_of_known_ranks():
    metrics = ranking_metrics(RANKS, ks=(1, 3, 5))
    assert sorted(metrics) == ["hr@1", "hr@3", "hr@5", "mrr", "ndcg@1", "ndcg@3", "ndcg@5"]
    np.testing.assert_array_equal(metrics["hr@1"], [0, 0, 1, 0])
    np.testing.assert_array_equal(metrics["hr@3"], [1, 0, 1, 0])
    np.testing.assert_array_equal(metrics["hr@5"], [1, 1, 1, 1])
    np.testing.assert_array_equal(metrics["ndcg@1"], [0, 0, 1, 0])
    np.testing.assert_allclose(metrics["ndcg@3"], [INV_LOG2[2], 0, 1, 0], rtol=1e-9)
    np.testing.assert_allclose(metrics["ndcg@5"], [INV_LOG2[2], INV_LOG2[5], 1, INV_LOG2[4]],
                               rtol=1e-9)
    np.testing.assert_allclose(metrics["mrr"], [1 / 2, 1 / 5, 1, 1 / 4], rtol=1e-12)
    # Means over users, as the reports print them.
    assert metrics["hr@3"].mean() == 0.5
    assert metrics["mrr"].mean() == pytest.approx((0.5 + 0.2 + 1 + 0.25) / 4)
    assert metrics["ndcg@5"].mean() == pytest.approx(
        (INV_LOG2[2] + INV_LOG2[5] + 1 + INV_LOG2[4]) / 4, rel=1e-9)


def test_tf_and_numpy_metrics_agree_on_every_rank_and_cutoff():
    ranks = np.arange(1, 31)
    for k in (1, 5, 10, 20):
        reference = ranking_metrics(ranks, ks=(k,))
        np.testing.assert_array_equal(hit_rate(tf.constant(ranks), k).numpy(),
                                      reference[f"hr@{k}"])
        np.testing.assert_allclose(ndcg(tf.constant(ranks), k).numpy(), reference[f"ndcg@{k}"],
                                   rtol=1e-6)
        assert reference[f"hr@{k}"].sum() == k  # ranks 1..k hit, the rest miss


def test_evaluate_last_events_reports_the_means_of_known_ranks():
    # Most-popular over the training lists ranks the three users' last items 1, 3 and 5 (item 3
    # is seen three times; items 2 and 4 tie at rank 3; unseen 1 and 5 tie at rank 5) and
    # their scenes 2, 1, 2.
    model = MostPopular([[2, 3, 3], [3, 4]], [[2, 2, 3], [3, 3]], item_vocab_size=6,
                        scene_vocab_size=4)
    summary = evaluate_last_events(model, [[2, 3], [2, 4], [2, 5]], [[2, 2], [2, 3], [2, 2]],
                                   max_len=4, ks=(1, 3))
    assert summary["hr@1"] == pytest.approx(1 / 3)
    assert summary["hr@3"] == pytest.approx(2 / 3)
    assert summary["ndcg@3"] == pytest.approx((1 + INV_LOG2[3]) / 3)
    assert summary["mrr"] == pytest.approx((1 + 1 / 3 + 1 / 5) / 3)
    assert summary["scene_acc@1"] == pytest.approx(1 / 3)
    assert summary["scene_ndcg@3"] == pytest.approx((INV_LOG2[2] + 1 + INV_LOG2[2]) / 3)
