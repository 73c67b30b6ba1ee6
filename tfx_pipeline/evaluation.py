"""Evaluator configuration: full-ranking NDCG@10 / HR@10 through TFMA, with blessing rules.

The exported `evaluate_ranking` signature scores each eval example's held-out last item against
the whole catalog and returns per-example NDCG@10 and HR@10; TFMA averages them, compares them
with the latest blessed model and an absolute floor, and blesses (or not) the candidate.
"""

from __future__ import annotations

from typing import Optional

import tensorflow as tf
import tensorflow_model_analysis as tfma

from tfx_pipeline import features


@tf.keras.utils.register_keras_serializable(package="dspnet_tf")
class MeanOfPredictions(tf.keras.metrics.Mean):
    """Mean of a per-example score the model already computed (labels are not needed).

    TFMA's stock metrics compare labels with predictions; a full-ranking metric needs the whole
    catalog's scores, which only the model has, so the model emits the per-example metric and
    this metric averages it.
    """

    def update_state(self, y_true, y_pred, sample_weight=None):  # pylint: disable=arguments-renamed
        del y_true
        return super().update_state(y_pred, sample_weight=sample_weight)


def eval_config(ndcg_floor: float = 0.0, min_improvement: float = 0.0,
                compare_to_baseline: bool = True) -> tfma.EvalConfig:
    """NDCG@10 and HR@10 on the eval split; bless when NDCG@10 >= floor and >= baseline."""

    def metric(name: str, output: str, floor: Optional[float]) -> tfma.MetricsSpec:
        threshold = None
        if floor is not None:
            threshold = tfma.MetricThreshold(
                value_threshold=tfma.GenericValueThreshold(lower_bound={"value": floor}),
                change_threshold=tfma.GenericChangeThreshold(
                    direction=tfma.MetricDirection.HIGHER_IS_BETTER,
                    absolute={"value": min_improvement},
                ) if compare_to_baseline else None,
            )
        return tfma.MetricsSpec(
            output_names=[output],
            metrics=[tfma.MetricConfig(class_name="MeanOfPredictions",
                                       module="tfx_pipeline.evaluation",
                                       config=f'"name": "{name}"',
                                       threshold=threshold)],
        )

    return tfma.EvalConfig(
        # TFMA requires a label per example; the per-example metrics ignore it.
        model_specs=[tfma.ModelSpec(signature_name="evaluate_ranking", model_type="tf_generic",
                                    label_key=features.EVENT_COUNT)],
        metrics_specs=[metric("ndcg@10", "ndcg_at_10", ndcg_floor),
                       metric("hr@10", "hit_at_10", None),
                       tfma.MetricsSpec(metrics=[tfma.MetricConfig(class_name="ExampleCount")])],
        slicing_specs=[tfma.SlicingSpec()],
    )
