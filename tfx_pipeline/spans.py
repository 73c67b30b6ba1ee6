"""Spans: an event log that grows by day (`events/span-1/`, `span-2/`, ...), read as TFX reads it.

A pattern such as `span-{SPAN}/*` (relative to an input base, as in TFX's `Input.Split`) names
one folder of events per span. The span trained on is chosen with TFX's own semantics and
code (`FileBasedInputProcessor`): the latest span by default, or the one a
`tfx.proto.RangeConfig` names (`static_range` with start == end, as every TFX ExampleGen
requires; `rolling_range` with num_spans=1 means the latest). Unlike a stock ExampleGen, which
ingests that span's files only, a sequential recommender needs each user's whole history: span
N reads every span up to N, so a user's sequence crosses days.

Example:
  >>> selection = resolve_spans("out/events", "span-{SPAN}/*")          # the latest span
  >>> selection = resolve_spans("out/events", "span-{SPAN}/*", static_range(2))
  >>> selection.span, selection.spans   # (2, [1, 2]): trained on span 2, history from 1 and 2
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Dict, List, Optional, Tuple

from tfx.components.example_gen import input_processor
from tfx.components.example_gen import utils as example_gen_utils
from tfx.dsl.io import fileio
from tfx.proto import example_gen_pb2, range_config_pb2
from tfx.utils import proto_utils

from dspnet_tf.data.event_log import EventLogError, list_event_files

SPAN_SPEC = example_gen_utils.SPAN_SPEC  # "{SPAN}" (or "{SPAN:width}" for zero padding)
SPLIT_NAME = "events"  # the one Input.Split the resolution works on (TFX names splits)
_GLOB_CHARS = re.compile(r"[*?\[{]")


class SpanError(EventLogError):
    """A span pattern that cannot be resolved: the message names the pattern and the folders.

    An EventLogError, so every caller that reports bad input data reports this one too.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message, "span")


@dataclasses.dataclass(frozen=True)
class SpanSelection:
    """What a pattern resolved to.

    Attributes:
      span: the span trained on (recorded on the Examples artifact).
      spans: the spans read, oldest first: every available span up to `span`.
      files: their event files, by span and then by name (the ExampleGen breaks timestamp ties
        by file order, so a tie across days keeps the earlier day first).
      available: every span the pattern matches.
      fingerprint: sizes and modification times of `files` (TFX's input fingerprint format).
    """

    span: int
    spans: List[int]
    files: List[str]
    available: List[int]
    fingerprint: str


def has_span_spec(path: str) -> bool:
    """Whether a path or pattern contains `{SPAN}` (or `{SPAN:width}`)."""
    return re.search(example_gen_utils.SPAN_FULL_REGEX, path) is not None


def split_span_path(path: str) -> Tuple[str, str]:
    """`out/events/span-{SPAN}/*` -> (`out/events`, `span-{SPAN}/*`): input base and pattern.

    The base is the path up to the first component with `{SPAN}` or a glob character, as TFX
    takes an input base and a split pattern relative to it.
    """
    if not has_span_spec(path):
        raise SpanError(f"{path}: not a span pattern (no {SPAN_SPEC}, e.g. events/span-{{SPAN}}/*)")
    parts = path.split("/")
    first = next(i for i, part in enumerate(parts) if _GLOB_CHARS.search(part))
    base = "/".join(parts[:first]) or (os.curdir if first == 0 else "/")
    return base, "/".join(parts[first:])


def static_range(span: int) -> range_config_pb2.RangeConfig:
    """The RangeConfig that selects one span (TFX's ExampleGen form: start == end)."""
    return range_config_pb2.RangeConfig(static_range=range_config_pb2.StaticRange(
        start_span_number=span, end_span_number=span))


def range_config_to_json(range_config: range_config_pb2.RangeConfig) -> str:
    """A RangeConfig as the JSON text a component parameter carries (TFX's own form)."""
    return proto_utils.proto_to_json(range_config)


def range_config_from_json(text: Optional[str]) -> Optional[range_config_pb2.RangeConfig]:
    """The RangeConfig of `range_config_to_json`'s text; None for None or ""."""
    if not text:
        return None
    try:
        return proto_utils.json_to_proto(text, range_config_pb2.RangeConfig())
    except Exception as err:  # json_format.ParseError, or not JSON at all
        raise SpanError(f"range_config {text[:200]!r}: not a RangeConfig in JSON ({err})") \
            from None


def _requested_span(range_config: Optional[range_config_pb2.RangeConfig]) -> Optional[int]:
    if range_config is not None and range_config.HasField("static_range"):
        return range_config.static_range.start_span_number
    return None


def _files_by_span(input_base: str, split: example_gen_pb2.Input.Split) -> Dict[int, List[str]]:
    """Every span the pattern matches, with its event files.

    TFX's public resolution returns one span (the latest or the requested one) and the history
    needs all of them, so this lists them with the two helpers that resolution itself uses
    (tfx==1.16.0 is pinned): the same glob, regex, width modifiers and integer parsing.
    """
    glob, regex = example_gen_utils._create_matching_glob_and_regex(  # pylint: disable=protected-access
        uri=input_base, split=split, is_match_span=True, is_match_date=False,
        is_match_version=False, range_config=None)
    by_span: Dict[int, List[str]] = {}
    for path in sorted(fileio.glob(glob)):
        try:
            _, span, _, _ = example_gen_utils._find_matched_span_version_from_path(  # pylint: disable=protected-access
                path, regex, is_match_span=True, is_match_date=False, is_match_version=False)
        except ValueError:
            match = re.search(regex, path)
            token = match.group(example_gen_utils.SPAN_PROPERTY_NAME) if match else "?"
            raise SpanError(
                f"{path}: its {SPAN_SPEC} part {token!r} is not an integer (pattern "
                f"{split.pattern!r} under {input_base}); span folders are numbered, e.g. "
                "span-1, span-2") from None
        if fileio.isdir(path):
            found = list_event_files(path)  # raises, naming the folder, if it has none
        elif path.endswith((".csv", ".parquet")) and not os.path.basename(path).startswith("."):
            found = [path]
        else:
            found = []  # e.g. a _SUCCESS marker next to the data
        by_span.setdefault(span, []).extend(found)
    for span, files in by_span.items():
        if not files:
            raise SpanError(f"span {span} of {os.path.join(input_base, split.pattern)} has no "
                            ".csv or .parquet event files")
    return by_span


def files_by_span(input_base: str, pattern: str) -> Dict[int, List[str]]:
    """Every span a `{SPAN}` pattern matches under `input_base`, with that span's own files.

    The files of one day only (not its history): what drift checks compare day to day.

    Raises:
      SpanError: a span folder whose number is not an integer, or a span without event files.
    """
    return _files_by_span(input_base, example_gen_pb2.Input.Split(name=SPLIT_NAME,
                                                                  pattern=pattern))


def _fingerprint(files: List[str]) -> str:
    # TFX's io_utils.generate_fingerprint, over a list of files instead of one glob (the spans
    # read are several globs): a new or changed file changes it.
    total_bytes = xor_checksum = sum_checksum = 0
    for path in files:
        stat = fileio.stat(path)
        total_bytes += stat.length
        mtime = int(stat.mtime_nsec / 10**9)
        xor_checksum ^= mtime
        sum_checksum += mtime
    return (f"split:{SPLIT_NAME},num_files:{len(files)},total_bytes:{total_bytes},"
            f"xor_checksum:{xor_checksum},sum_checksum:{sum_checksum}")


def resolve_spans(input_base: str, pattern: str,
                  range_config: Optional[range_config_pb2.RangeConfig] = None) -> SpanSelection:
    """Resolves a `{SPAN}` pattern under `input_base` to the span trained on and its history.

    Args:
      input_base: the folder the pattern is relative to (e.g. `out/events`).
      pattern: e.g. `span-{SPAN}/*` (files) or `span-{SPAN}` (folders of event files);
        `{SPAN:2}` matches zero-padded numbers. Date and `{VERSION}` specs are not supported.
      range_config: None or `rolling_range` (num_spans=1) for the latest span; `static_range`
        with start_span_number == end_span_number for that span.

    Returns:
      The span, the spans read (every available one up to it) and their files.

    Raises:
      SpanError: no `{SPAN}` in the pattern, nothing matching it, a span folder whose number
        is not an integer, a requested span that is not there, or a range TFX rejects.
    """
    split = example_gen_pb2.Input.Split(name=SPLIT_NAME, pattern=pattern)
    where = os.path.join(input_base, pattern)
    try:
        is_span, is_date, is_version = example_gen_utils.verify_split_pattern_specs(split)
    except ValueError as err:
        raise SpanError(f"input pattern {where}: {err}") from None
    if not is_span or is_date or is_version:
        raise SpanError(f"input pattern {where}: needs one {SPAN_SPEC} (e.g. span-{{SPAN}}/*) "
                        "and no {VERSION} or date ({YYYY}{MM}{DD}) specs")
    by_span = _files_by_span(input_base, split)
    if not by_span:
        raise SpanError(f"input pattern {where}: matches no file (expected event files in "
                        f"folders such as {pattern.replace(SPAN_SPEC, '1')})")
    available = sorted(by_span)
    try:
        # TFX's own rules: validates the RangeConfig and picks the latest or requested span.
        processor = input_processor.FileBasedInputProcessor(input_base, [split], range_config)
    except ValueError as err:
        raise SpanError(f"input pattern {where}: {err} (span N reads every span up to N; the "
                        "range names N only)") from None
    requested = _requested_span(range_config)
    if requested is not None and requested not in by_span:
        raise SpanError(f"RangeConfig asks for span {requested}, but {where} has spans "
                        f"{_describe(available)}")
    try:
        span, _ = processor.resolve_span_and_version()
    except ValueError as err:  # e.g. span 1 requested, folders zero-padded without {SPAN:2}
        raise SpanError(f"input pattern {where}: {err}") from None
    spans = [s for s in available if s <= span]
    files = [path for s in spans for path in by_span[s]]
    return SpanSelection(span=span, spans=spans, files=files, available=available,
                         fingerprint=_fingerprint(files))


def resolve_data(data: str, span: Optional[int] = None) -> SpanSelection:
    """`resolve_spans` of a whole path such as `out/events/span-{SPAN}/*`; `span` None: latest."""
    base, pattern = split_span_path(data)
    return resolve_spans(base, pattern, None if span is None else static_range(span))


def _describe(spans: List[int]) -> str:
    """[1, 2, 3, 5] -> '1-3, 5'."""
    runs: List[List[int]] = []
    for span in spans:
        if runs and span == runs[-1][-1] + 1:
            runs[-1].append(span)
        else:
            runs.append([span])
    return ", ".join(str(r[0]) if len(r) == 1 else f"{r[0]}-{r[-1]}" for r in runs)
