"""Sequence ExampleGen: event log -> one tf.Example per user and split (leave-one-out), in Beam.

The stock ExampleGens emit one example per input row and split rows by hash; a sequential
recommender needs one example per *user*, and the same user in every split (train = all but the
last two events, eval = all but the last, test = all). So this component reads the standard
event log, groups events by user with `GroupByKey` (which scales on any Beam runner: only a
single user's events are ever held together), sorts them by time with file order breaking ties,
keeps the last `max_events`, and writes `Split-train/`, `Split-eval/`, `Split-test/` as gzipped
TFRecords of tf.Examples, the layout every downstream TFX component reads.

With an input pattern such as `span-{SPAN}/*` the log is read as TFX spans (one folder per
day, see `tfx_pipeline.spans`): the latest span, or the one a RangeConfig names, is the span
of the output, and every span up to it is read, so each user's history crosses days.
"""

# No `from __future__ import annotations`: TFX reads the component's type hints at runtime.
import json
import os
from typing import Iterable, Iterator, List, Optional, Sequence, Tuple, TypedDict

import apache_beam as beam
import tensorflow as tf
from tfx import v1 as tfx
from tfx.types import artifact_utils

from dspnet_tf.data.event_log import iter_event_rows, list_event_files
from dspnet_tf.data.splits import MIN_EVENTS, SPLIT_SLICES
from tfx_pipeline import features, spans as spans_lib

# (timestamp, file index, row index) orders a user's events; the item and scene ride along.
Event = Tuple[int, int, int, str, str]
STATS_FILE = "sequence_stats.json"


class SequenceStats(TypedDict):
    """What SequenceExampleGen returns: users kept, and users dropped for too few events."""
    users: int
    dropped_users: int


def _read_file(indexed_file: Tuple[int, str], skip_malformed: bool) -> Iterator[Tuple[str, Event]]:
    # Streams the file row by row: a worker never holds a whole file, only Beam's bundles.
    index, path = indexed_file
    for row, (user, item, scene, stamp) in enumerate(iter_event_rows(path, skip_malformed)):
        yield user, (stamp, index, row, item, scene)


def _bytes_feature(values: Iterable[str]) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v.encode() for v in values]))


def user_examples(
    user: str, events: Iterable[Event], max_events: int = 200
) -> Iterator[beam.pvalue.TaggedOutput]:
    """Sorts one user's events and emits their train / eval / test examples (tagged by split)."""
    ordered = sorted(events)[-max_events:]
    if len(ordered) < MIN_EVENTS:
        yield beam.pvalue.TaggedOutput("dropped", user)
        return
    items = [e[3] for e in ordered]
    scenes = [e[4] for e in ordered]
    for split in features.SPLITS:
        cut = SPLIT_SLICES[split]
        example = tf.train.Example(features=tf.train.Features(feature={
            features.USER_ID: _bytes_feature([user]),
            features.ITEM_HISTORY: _bytes_feature(items[cut]),
            features.SCENE_HISTORY: _bytes_feature(scenes[cut]),
            features.EVENT_COUNT: tf.train.Feature(
                int64_list=tf.train.Int64List(value=[len(items[cut])])),
        }))
        yield beam.pvalue.TaggedOutput(split, example.SerializeToString())


class WriteSequenceExamples(beam.PTransform):
    """Event-log files -> `Split-{train,eval,test}/*.gz` tf.Examples + `sequence_stats.json`.

    `span` and `spans` (the span of the output and the spans read, when the files are spans
    of a `{SPAN}` pattern) are added to the stats file.
    """

    def __init__(self, files: List[str], output_dir: str, max_events: int = 200,
                 skip_malformed: bool = False, span: Optional[int] = None,
                 spans: Optional[Sequence[int]] = None) -> None:
        super().__init__()
        self.files, self.output_dir = files, output_dir
        self.max_events, self.skip_malformed = max_events, skip_malformed
        self.span_fields = {} if span is None else {"span": span, "spans": list(spans or [])}

    def expand(self, pipeline: beam.Pipeline) -> beam.pvalue.PCollection:
        """Adds the read, group, write and stats steps; returns the stats file's PCollection."""
        grouped = (
            pipeline
            | "ListFiles" >> beam.Create(list(enumerate(self.files)))
            | "Spread" >> beam.Reshuffle()  # files are read in parallel across workers
            | "ReadEvents" >> beam.FlatMap(_read_file, skip_malformed=self.skip_malformed)
            | "GroupByUser" >> beam.GroupByKey()
        )
        outputs = grouped | "ToExamples" >> beam.FlatMapTuple(
            user_examples, max_events=self.max_events
        ).with_outputs("dropped", *features.SPLITS)
        for split in features.SPLITS:
            _ = outputs[split] | f"Write{split}" >> beam.io.WriteToTFRecord(
                os.path.join(self.output_dir, f"Split-{split}", "data_tfrecord"),
                file_name_suffix=".gz",
            )
        kept = outputs["test"] | "CountKept" >> beam.combiners.Count.Globally()
        dropped = outputs["dropped"] | "CountDropped" >> beam.combiners.Count.Globally()
        span_fields = self.span_fields  # not self in the lambda: Beam pickles what it uses
        return (
            kept
            | "Stats" >> beam.Map(
                lambda k, d: json.dumps({"users": k, "dropped_users": d, **span_fields}),
                d=beam.pvalue.AsSingleton(dropped),
            )
            | "WriteStats" >> beam.io.WriteToText(
                os.path.join(self.output_dir, STATS_FILE), shard_name_template="")
        )


@tfx.dsl.components.component(use_beam=True)
def SequenceExampleGen(  # pylint: disable=invalid-name
    examples: tfx.dsl.components.OutputArtifact[tfx.types.standard_artifacts.Examples],
    input_base: tfx.dsl.components.Parameter[str],
    max_events: tfx.dsl.components.Parameter[int] = 200,
    skip_malformed: tfx.dsl.components.Parameter[bool] = False,
    input_pattern: tfx.dsl.components.Parameter[str] = None,
    range_config: tfx.dsl.components.Parameter[str] = None,
    input_fingerprint: tfx.dsl.components.Parameter[str] = None,
    beam_pipeline: tfx.dsl.components.BeamComponentParameter[beam.Pipeline] = None,
) -> SequenceStats:
    """Builds per-user leave-one-out tf.Examples from the event log under `input_base`.

    Args:
      examples: output Examples with splits train, eval and test; its `span` property is the
        span trained on (0 without a pattern, as in TFX).
      input_base: a CSV/Parquet event log file or folder (user_id,item_id,scene,timestamp);
        with `input_pattern`, the folder the pattern is relative to.
      max_events: keep each user's most recent events only.
      skip_malformed: skip malformed rows instead of failing (counted in the reader's report).
      input_pattern: e.g. `span-{SPAN}/*`: the log is a folder per span (day); the latest span,
        or the one `range_config` names, is trained on, with every span up to it read.
      range_config: a TFX RangeConfig as JSON (`spans.range_config_to_json`; as TFX's
        ExampleGens keep theirs, and a proto parameter does not compile for Kubeflow V2):
        `static_range` with start == end selects that span. Needs `input_pattern`.
      input_fingerprint: not read: a value that changes with the input files (see
        `tfx_pipeline.spans.SpanSelection.fingerprint`), so that new data is not answered from
        the cache. A stock ExampleGen's driver fingerprints its input before the cache lookup;
        a function component has no driver, so the pipeline passes one when it is built.
      beam_pipeline: provided by TFX from the pipeline's Beam arguments.

    Returns:
      users kept and users dropped for having fewer than 3 events.
    """
    del input_fingerprint  # a cache key only
    span, spans = None, None
    if input_pattern:
        selection = spans_lib.resolve_spans(input_base, input_pattern,
                                            spans_lib.range_config_from_json(range_config))
        files, span, spans = selection.files, selection.span, selection.spans
        examples.span = span
        examples.set_string_custom_property("input_fingerprint", selection.fingerprint)
    elif range_config:
        raise spans_lib.SpanError(f"range_config given without an input_pattern with "
                                  f"{spans_lib.SPAN_SPEC} (input_base {input_base})")
    else:
        files = list_event_files(input_base)
        examples.span = 0
    examples.split_names = artifact_utils.encode_split_names(list(features.SPLITS))
    examples.set_string_custom_property("payload_format", "FORMAT_TF_EXAMPLE")
    stats_path = os.path.join(examples.uri, STATS_FILE)
    with beam_pipeline as pipeline:
        _ = pipeline | "EventLogToExamples" >> WriteSequenceExamples(
            files, examples.uri, max_events, skip_malformed, span, spans)
    with tf.io.gfile.GFile(stats_path) as handle:
        stats = json.loads(handle.read())
    return {"users": stats["users"], "dropped_users": stats["dropped_users"]}


# @component replaced the function with a generated component class (and an executor class it
# also sets on this module); both carry the function's description, for the API reference.
SequenceExampleGen.__doc__ = SequenceExampleGen.test_call.__doc__
SequenceExampleGen.EXECUTOR_SPEC.executor_class.__doc__ = (
    "The executor @component generated for SequenceExampleGen: runs the function in TFX.")
