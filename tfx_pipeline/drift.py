"""Drift between daily spans: the day's events compared with the previous day's, by TFDV.

With a `{SPAN}` input (`tfx_pipeline.spans`) the pipeline trains on span N, whose examples hold
each user's history over every span up to N. Statistics of those cumulative histories change
little when one day changes (the day is diluted in the history), so the drift check computes
TFDV statistics of span N's *own* events and of the previous span's (one row per event, the
event log's `scene` and `item_id` columns) and compares them with TFDV's drift comparators
(`tfdv.validate_statistics(..., previous_statistics=...)`):

- `scene`: L-infinity distance (the largest change of one scene's share of the day's events);
- `item_id`: Jensen-Shannon divergence (the whole item distribution; a popularity shift moves
  many items a little, which L-infinity, one item's change, would hardly see).

Over a threshold, `on_drift="stop"` fails the run before Transform with a message naming the
span, the feature and the distance; `"warn"` logs the same message, records it on the
anomalies artifact and lets the run go on. The first span has no previous span: nothing is
compared (and the log says so).

Both days' statistics are computed here, from the span files, rather than looked up in ML
Metadata from an earlier run: the previous day may never have run through this pipeline (a
backfill, a first run on day 5, another `max_events`), and one day's events are a small
read next to the ExampleGen's, which reads every span.
"""

# No `from __future__ import annotations`: TFX reads the component's type hints at runtime.
import dataclasses
import logging
import os
import re
from typing import Iterable, Iterator, List, Optional, Sequence, Tuple

import apache_beam as beam
import pyarrow as pa
import tensorflow as tf
import tensorflow_data_validation as tfdv
from tensorflow_metadata.proto.v0 import anomalies_pb2, schema_pb2, statistics_pb2
from tfx import v1 as tfx
from tfx.types import artifact_utils

from dspnet_tf.data.event_log import iter_event_rows
from tfx_pipeline import spans as spans_lib

SCENE_FEATURE = "scene"
ITEM_FEATURE = "item_id"
# Defaults, measured on the scene world (60 items, 4 days, seeds 1 and 2; 150 users, about
# 2,000 events a day, and 300 users, about 4,000): between two ordinary days the scene
# L-infinity distance was at most 0.032 and the item Jensen-Shannon divergence at most 0.024
# (sampling noise, smaller with more events). A drifted day: scene_gone and new_scene move the
# scene distance to 0.14-0.16 (and the items' to 0.08-0.13); popularity_shift moves the items'
# to 0.15-0.21 and leaves the scenes' at noise. The thresholds sit between, about twice the
# noise. The item divergence's noise grows with the catalog per day's events (a finite sample
# of many items): recalibrate `item_threshold` for a catalog much larger than a day's events.
DEFAULT_SCENE_THRESHOLD = 0.07
DEFAULT_ITEM_THRESHOLD = 0.05
ON_DRIFT_CHOICES = ("stop", "warn")
STATS_FILE = "FeatureStats.pb"  # StatisticsGen's file name in each Split- folder
ANOMALIES_FILE = "SchemaDiff.pb"  # ExampleValidator's
CURRENT_SPLIT, PREVIOUS_SPLIT = "current", "previous"
_BATCH_ROWS = 4096
# TFDV's L-infinity anomaly text ends "The feature value with maximum difference is: live".
_MOST_CHANGED = re.compile(r"maximum difference is: (.+)$")
_MEASURE_NAMES = {anomalies_pb2.DriftSkewInfo.Measurement.L_INFTY: "L-infinity distance",
                  anomalies_pb2.DriftSkewInfo.Measurement.JENSEN_SHANNON_DIVERGENCE:
                      "Jensen-Shannon divergence"}


class DataDriftError(RuntimeError):
    """A span drifted from the previous one; the message names the feature and the distance."""


@dataclasses.dataclass(frozen=True)
class DriftMeasurement:
    """One comparator's result for one feature."""

    feature: str
    measure: str  # "L-infinity distance" or "Jensen-Shannon divergence"
    value: float
    threshold: float
    most_changed: str = ""  # TFDV's value with the largest change (L-infinity only)

    @property
    def drifted(self) -> bool:
        """Whether the distance is over the threshold (TFDV's rule: strictly greater)."""
        return self.value > self.threshold

    def describe(self) -> str:
        """E.g. 'scene L-infinity distance 0.15 > threshold 0.07'."""
        sign = ">" if self.drifted else "<="
        text = f"{self.feature} {self.measure} {self.value:.3g} {sign} threshold {self.threshold:g}"
        return text + (f" (value that changed most: {self.most_changed})" if self.most_changed
                       else "")


def check_on_drift(on_drift: str) -> str:
    """Returns `on_drift` if it is "stop" or "warn"; raises ValueError naming it otherwise."""
    if on_drift not in ON_DRIFT_CHOICES:
        raise ValueError(f"on_drift={on_drift!r}: must be one of {', '.join(ON_DRIFT_CHOICES)}")
    return on_drift


def drift_schema(scene_threshold: float = DEFAULT_SCENE_THRESHOLD,
                 item_threshold: float = DEFAULT_ITEM_THRESHOLD) -> schema_pb2.Schema:
    """The schema of a day's events with TFDV drift comparators on the scene and item features.

    No domains or presence constraints: a new scene or item is drift (measured here), not a
    schema violation; ExampleValidator checks the training examples against their own schema.
    """
    schema = schema_pb2.Schema()
    for name in (SCENE_FEATURE, ITEM_FEATURE):
        schema.feature.add(name=name, type=schema_pb2.BYTES)
    tfdv.get_feature(schema, SCENE_FEATURE).drift_comparator.infinity_norm.threshold = \
        scene_threshold
    tfdv.get_feature(schema, ITEM_FEATURE).drift_comparator \
        .jensen_shannon_divergence.threshold = item_threshold
    return schema


def compare_statistics(current: statistics_pb2.DatasetFeatureStatisticsList,
                       previous: statistics_pb2.DatasetFeatureStatisticsList,
                       scene_threshold: float = DEFAULT_SCENE_THRESHOLD,
                       item_threshold: float = DEFAULT_ITEM_THRESHOLD,
                       ) -> Tuple[List[DriftMeasurement], anomalies_pb2.Anomalies]:
    """TFDV's drift comparison of a day's statistics with the previous day's.

    Returns:
      (measurements, anomalies): one DriftMeasurement per feature and comparator, and TFDV's
      Anomalies proto (its drift anomalies name the value that moved most).
    """
    anomalies = tfdv.validate_statistics(current, drift_schema(scene_threshold, item_threshold),
                                         previous_statistics=previous)
    measurements = []
    for info in anomalies.drift_skew_info:
        feature = ".".join(info.path.step)
        found = _MOST_CHANGED.search(anomalies.anomaly_info[feature].description) \
            if feature in anomalies.anomaly_info else None
        for measurement in info.drift_measurements:
            measurements.append(DriftMeasurement(
                feature=feature,
                measure=_MEASURE_NAMES.get(measurement.type, str(measurement.type)),
                value=measurement.value, threshold=measurement.threshold,
                most_changed=found.group(1).strip() if found and measurement.type ==
                anomalies_pb2.DriftSkewInfo.Measurement.L_INFTY else ""))
    return measurements, anomalies


def drift_message(span: int, previous_span: int,
                  measurements: Sequence[DriftMeasurement]) -> Optional[str]:
    """'span 3 drifted from span 2: scene L-infinity distance 0.15 > threshold 0.07 ...'; None if
    no measurement is over its threshold."""
    # The feature furthest over its threshold first: the likeliest cause.
    over = [m.describe() for m in sorted((m for m in measurements if m.drifted),
                                         key=lambda m: -m.value / max(m.threshold, 1e-12))]
    if not over:
        return None
    return f"span {span} drifted from span {previous_span}: " + "; ".join(over)


def _event_rows(path: str, skip_malformed: bool) -> Iterator[tuple]:
    for _, item, scene, _ in iter_event_rows(path, skip_malformed):
        yield item, scene


def _to_record_batch(rows: List[tuple]) -> pa.RecordBatch:
    # TFDV reads list columns: one event per row, one value per list.
    items = pa.array([[item.encode()] for item, _ in rows], type=pa.list_(pa.binary()))
    scenes = pa.array([[scene.encode()] for _, scene in rows], type=pa.list_(pa.binary()))
    return pa.RecordBatch.from_arrays([items, scenes], [ITEM_FEATURE, SCENE_FEATURE])


class DayEventStatistics(beam.PTransform):
    """Event files (one day's) -> TFDV statistics of their events, written to `output_path`."""

    def __init__(self, files: Sequence[str], output_path: str,
                 skip_malformed: bool = False) -> None:
        super().__init__()
        self.files, self.output_path, self.skip_malformed = list(files), output_path, skip_malformed

    def expand(self, pipeline: beam.Pipeline) -> beam.pvalue.PDone:
        """Reads, batches, computes and writes the statistics."""
        return (
            pipeline
            | "ListFiles" >> beam.Create(self.files)
            | "ReadEvents" >> beam.FlatMap(_event_rows, skip_malformed=self.skip_malformed)
            | "Batch" >> beam.BatchElements(min_batch_size=_BATCH_ROWS,
                                            max_batch_size=_BATCH_ROWS)
            | "ToRecordBatch" >> beam.Map(_to_record_batch)
            | "Statistics" >> tfdv.GenerateStatistics(tfdv.StatsOptions())
            | "Write" >> tfdv.WriteStatisticsToBinaryFile(self.output_path)
        )


def _write_anomalies(anomalies: tfx.types.standard_artifacts.ExampleAnomalies,
                     proto: anomalies_pb2.Anomalies) -> None:
    path = os.path.join(anomalies.uri, f"Split-{CURRENT_SPLIT}", ANOMALIES_FILE)
    tf.io.gfile.makedirs(os.path.dirname(path))
    with tf.io.gfile.GFile(path, "wb") as handle:
        handle.write(proto.SerializeToString())


def previous_span(available: Iterable[int], span: int) -> Optional[int]:
    """The latest span before `span` (gaps allowed: the day before a missing day); None if none."""
    earlier = [s for s in available if s < span]
    return max(earlier) if earlier else None


@tfx.dsl.components.component(use_beam=True)
def SpanDriftGate(  # pylint: disable=invalid-name
    examples: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Examples],
    statistics: tfx.dsl.components.OutputArtifact[tfx.types.standard_artifacts.ExampleStatistics],
    anomalies: tfx.dsl.components.OutputArtifact[tfx.types.standard_artifacts.ExampleAnomalies],
    input_base: tfx.dsl.components.Parameter[str],
    input_pattern: tfx.dsl.components.Parameter[str],
    on_drift: tfx.dsl.components.Parameter[str] = "stop",
    scene_threshold: tfx.dsl.components.Parameter[float] = DEFAULT_SCENE_THRESHOLD,
    item_threshold: tfx.dsl.components.Parameter[float] = DEFAULT_ITEM_THRESHOLD,
    skip_malformed: tfx.dsl.components.Parameter[bool] = False,
    beam_pipeline: tfx.dsl.components.BeamComponentParameter[beam.Pipeline] = None,
) -> None:
    """Compares the examples' span's own events with the previous span's; stops or warns on drift.

    Args:
      examples: SequenceExampleGen's output; its `span` is the day checked.
      statistics: output: TFDV statistics of that day's events (split `current`) and of the
        previous day's (split `previous`; absent on the first span).
      anomalies: output: TFDV's drift anomalies (split `current`); custom properties `drift`
        (the message, "" if none) and `drifted` (0 or 1).
      input_base: the folder the span pattern is relative to (as SequenceExampleGen's).
      input_pattern: the span pattern, e.g. `span-{SPAN}/*`.
      on_drift: "stop" fails the run (nothing downstream runs); "warn" logs and goes on.
      scene_threshold: L-infinity threshold for the `scene` feature.
      item_threshold: Jensen-Shannon divergence threshold for the `item_id` feature.
      skip_malformed: skip malformed event rows (as SequenceExampleGen was told).
      beam_pipeline: provided by TFX from the pipeline's Beam arguments.

    Raises:
      DataDriftError: with on_drift "stop", a feature's distance is over its threshold.
    """
    check_on_drift(on_drift)
    span = examples.span
    by_span = spans_lib.files_by_span(input_base, input_pattern)
    before = previous_span(by_span, span)
    splits = [CURRENT_SPLIT] if before is None else [CURRENT_SPLIT, PREVIOUS_SPLIT]
    statistics.span = span
    statistics.split_names = artifact_utils.encode_split_names(splits)
    anomalies.span = span
    anomalies.split_names = artifact_utils.encode_split_names([CURRENT_SPLIT])
    paths = {split: os.path.join(statistics.uri, f"Split-{split}", STATS_FILE) for split in splits}
    with beam_pipeline as pipeline:
        for split, day in ((CURRENT_SPLIT, span), (PREVIOUS_SPLIT, before)):
            if day is not None:
                _ = pipeline | f"Day{split.title()}" >> DayEventStatistics(
                    by_span[day], paths[split], skip_malformed)
    if before is None:
        logging.info("Drift check: span %d is the first span; there is no previous span to "
                     "compare it with", span)
        _write_anomalies(anomalies, anomalies_pb2.Anomalies())
        message = ""
    else:
        measurements, proto = compare_statistics(
            tfdv.load_stats_binary(paths[CURRENT_SPLIT]),
            tfdv.load_stats_binary(paths[PREVIOUS_SPLIT]), scene_threshold, item_threshold)
        _write_anomalies(anomalies, proto)
        message = drift_message(span, before, measurements) or ""
        logging.info("Drift check, span %d vs span %d: %s", span, before,
                     "; ".join(m.describe() for m in measurements))
    anomalies.set_string_custom_property("drift", message)
    anomalies.set_int_custom_property("drifted", int(bool(message)))
    if message and on_drift == "stop":
        raise DataDriftError(message + " (on_drift='stop'; rerun with on_drift='warn' to train "
                             "anyway, or raise the threshold)")
    if message:
        logging.warning("%s (on_drift='warn': training goes on)", message)


# @component replaced the function with a generated component class (and an executor class it
# also sets on this module); both carry the function's description, for the API reference.
SpanDriftGate.__doc__ = SpanDriftGate.test_call.__doc__
SpanDriftGate.EXECUTOR_SPEC.executor_class.__doc__ = (
    "The executor @component generated for SpanDriftGate: runs the function in TFX.")
