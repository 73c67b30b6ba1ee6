"""Evaluator configuration: full-ranking NDCG@10 / HR@10 of both tasks through TFMA, with
blessing rules (the in-scene NDCG@10 decides by default).

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
        """Adds the per-example scores in `y_pred` to the mean; `y_true` is ignored."""
        del y_true
        return super().update_state(y_pred, sample_weight=sample_weight)


BLESSING_TASKS = ("in_scene", "next_event")


def eval_config(ndcg_floor: float = 0.0, min_improvement: float = 0.0,
                compare_to_baseline: bool = True,
                blessing_task: str = "in_scene") -> tfma.EvalConfig:
    """NDCG@10 and HR@10 of both tasks on the eval split; bless when the blessing task's NDCG@10
    is >= floor and >= the baseline's.

    The in-scene task (the model is told the scene of the held-out event) is the one every
    served request poses, so it decides by default; on a log with one real scene the two tasks
    ask the same question.
    """
    if blessing_task not in BLESSING_TASKS:
        raise ValueError(f"blessing_task={blessing_task!r}: one of {BLESSING_TASKS}")
    in_scene = blessing_task == "in_scene"

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
        metrics_specs=[metric("ndcg@10", "ndcg_at_10", None if in_scene else ndcg_floor),
                       metric("hr@10", "hit_at_10", None),
                       metric("in_scene_ndcg@10", "ndcg_at_10_in_scene",
                              ndcg_floor if in_scene else None),
                       metric("in_scene_hr@10", "hit_at_10_in_scene", None),
                       tfma.MetricsSpec(metrics=[tfma.MetricConfig(class_name="ExampleCount")])],
        slicing_specs=[tfma.SlicingSpec()],
    )
