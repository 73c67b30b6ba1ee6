"""The standard event log (user_id, item_id, scene, timestamp): reading, validating, loaders.

Every data source ends up in this one format, as CSV with a header or Parquet, one file or a
folder of files. Malformed rows stop the read with an error naming file, line, field and value,
or, with `skip_malformed=True`, are skipped and counted in the returned `ReadReport`.
"""

from __future__ import annotations

import csv
import dataclasses
import itertools
import os
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

COLUMNS = ("user_id", "item_id", "scene", "timestamp")
MAX_FIELD_CHARS = 1 << 16  # a longer field is malformed input, not an id
MAX_TIMESTAMP = int(np.iinfo(np.int64).max)  # timestamps are stored as int64
PARQUET_BATCH_ROWS = 8192  # rows per Parquet record batch: bounds the Python objects held at once
UTF8_BOM = b"\xef\xbb\xbf"  # spreadsheet "CSV UTF-8" exports start with it


class EventLogError(ValueError):
    """Malformed input; the message names file, line, field and value.

    `reason` is a short category ("empty user_id", "bad timestamp", ...) used to count skips.
    """

    def __init__(self, message: str, reason: str = "malformed row") -> None:
        super().__init__(message)
        self.reason = reason


@dataclasses.dataclass
class ReadReport:
    """What a read did: rows kept, rows skipped (by reason) and the first few problems."""

    files: List[str] = dataclasses.field(default_factory=list)
    rows: int = 0
    skipped: Dict[str, int] = dataclasses.field(default_factory=dict)
    examples: List[str] = dataclasses.field(default_factory=list)

    def skip(self, reason: str, message: str) -> None:
        """Counts one skipped row under `reason` and keeps its message among the first 20."""
        self.skipped[reason] = self.skipped.get(reason, 0) + 1
        if len(self.examples) < 20:
            self.examples.append(message)

    @property
    def skipped_total(self) -> int:
        """Rows skipped for any reason."""
        return sum(self.skipped.values())


@dataclasses.dataclass
class EventLog:
    """Events as parallel arrays (ids are strings, timestamps int64), in file order."""

    user_ids: np.ndarray
    item_ids: np.ndarray
    scenes: np.ndarray
    timestamps: np.ndarray
    report: ReadReport = dataclasses.field(default_factory=ReadReport)

    def __len__(self) -> int:
        return len(self.user_ids)

    @classmethod
    def from_rows(cls, rows: Sequence[Tuple[str, str, str, int]],
                  report: Optional[ReadReport] = None) -> "EventLog":
        """Builds a log from (user_id, item_id, scene, timestamp) tuples, e.g. in tests."""
        if rows:
            users, items, scenes, times = zip(*rows)
        else:
            users, items, scenes, times = (), (), (), ()
        return cls(np.asarray(users, dtype=object), np.asarray(items, dtype=object),
                   np.asarray(scenes, dtype=object), np.asarray(times, dtype=np.int64),
                   report or ReadReport())

    def write_csv(self, path: str) -> None:
        """Writes the standard CSV atomically (a temporary file renamed into place)."""
        from dspnet_tf.resilience import atomic_write  # pylint: disable=import-outside-toplevel

        with atomic_write(path, newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(COLUMNS)
            writer.writerows(zip(self.user_ids, self.item_ids, self.scenes, self.timestamps))


def list_event_files(path: str) -> List[str]:
    """The event-log files under `path` (a file, or a folder of .csv / .parquet files)."""
    if os.path.isdir(path):
        found = sorted(
            os.path.join(path, name) for name in os.listdir(path)
            if name.endswith((".csv", ".parquet")) and not name.startswith(".")
        )
        if not found:
            raise EventLogError(f"{path}: folder has no .csv or .parquet files")
        return found
    if not os.path.exists(path):
        raise EventLogError(f"{path}: no such file or folder")
    return [path]


def _check_row(values: Dict[str, object], where: str) -> Tuple[str, str, str, int]:
    """Validates one row; raises EventLogError naming the field and value."""
    out = []
    for field in ("user_id", "item_id", "scene"):
        value = values[field]
        text = "" if value is None else str(value).strip()
        if not text:
            raise EventLogError(f"{where}: field '{field}' is empty", f"empty {field}")
        out.append(text)
    raw = values["timestamp"]
    try:
        if isinstance(raw, (int, np.integer)):
            stamp = int(raw)
        else:
            text = str(raw).strip()
            stamp = int(float(text)) if text.endswith(".0") else int(text)
    except (TypeError, ValueError, OverflowError):  # OverflowError: int(inf) of a huge float
        raise EventLogError(
            f"{where}: field 'timestamp' has value {str(raw)[:40]!r}, expected an integer",
            "bad timestamp",
        ) from None
    if stamp > MAX_TIMESTAMP:
        # Named here: later it would be an OverflowError of the int64 array, with no file/line.
        raise EventLogError(
            f"{where}: field 'timestamp' has value {str(raw)[:40]!r}, above the int64 maximum "
            f"{MAX_TIMESTAMP}", "bad timestamp")
    if stamp < 0:
        raise EventLogError(f"{where}: field 'timestamp' has negative value {stamp}",
                            "negative timestamp")
    return out[0], out[1], out[2], stamp


def _decoded_lines(path: str) -> Iterator[str]:
    """The file's lines as text, read one at a time; bad UTF-8 is an error naming the line.

    A UTF-8 byte-order mark at the very start is dropped (else it would be part of the first
    column's name); anywhere else it is data.
    """
    with open(path, "rb") as raw:
        for number, line in enumerate(raw, 1):
            if number == 1 and line.startswith(UTF8_BOM):
                line = line[len(UTF8_BOM):]
            try:
                yield line.decode("utf-8")
            except UnicodeDecodeError as err:
                raise EventLogError(f"{path}:{number}: bytes that are not UTF-8 ({err.reason})") from None


def _csv_rows(path: str) -> Iterator[Tuple[int, Dict[str, object]]]:
    # Streams the file: memory does not grow with its size (the Beam ExampleGen reads files of
    # any size through this).
    lines = _decoded_lines(path)
    skipped = 0
    first = next(lines, None)
    while first is not None and not first.strip():
        skipped += 1
        first = next(lines, None)
    if first is None:
        raise EventLogError(f"{path}: file is empty (expected a header {','.join(COLUMNS)})")
    text = itertools.chain([first], lines)
    csv.field_size_limit(MAX_FIELD_CHARS)
    reader = csv.reader(text)
    try:
        header = [name.strip() for name in next(reader)]
    except csv.Error as err:
        raise EventLogError(f"{path}:{skipped + 1}: unreadable header ({err})") from None
    missing = [name for name in COLUMNS if name not in header]
    if missing:
        raise EventLogError(
            f"{path}:{skipped + 1}: missing column(s) {', '.join(missing)}; header is "
            f"{','.join(header)}"
        )
    index = {name: header.index(name) for name in COLUMNS}
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as err:
            yield skipped + reader.line_num, {"__error__": f"unparseable row ({err})"}
            continue
        if not row:
            continue
        if len(row) != len(header):
            yield skipped + reader.line_num, {
                "__error__": f"has {len(row)} fields, the header has {len(header)}"
            }
            continue
        yield skipped + reader.line_num, {name: row[i] for name, i in index.items()}


def _parquet_rows(path: str) -> Iterator[Tuple[int, Dict[str, object]]]:
    # Streams record batches of the four needed columns only, as the CSV path streams lines:
    # reading the whole table would hold every column (a compressible one can be 1000x its size
    # on disk) and its Python objects at once.
    import pyarrow.parquet as pq  # pylint: disable=import-outside-toplevel

    try:
        parquet = pq.ParquetFile(path)
        names = parquet.schema_arrow.names
    except Exception as err:  # pyarrow raises several types for corrupt files
        raise EventLogError(f"{path}: not a readable Parquet file ({err})") from None
    missing = [name for name in COLUMNS if name not in names]
    if missing:
        raise EventLogError(
            f"{path}: missing column(s) {', '.join(missing)}; columns are {', '.join(names)}"
        )
    batches = parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=list(COLUMNS))
    row = 0
    while True:
        try:
            batch = next(batches, None)
        except Exception as err:  # a corrupt page or row group further in
            raise EventLogError(f"{path}: after row {row}: not a readable Parquet file "
                                f"({err})") from None
        if batch is None:
            return
        columns = [batch.column(name).to_pylist() for name in COLUMNS]
        for values in zip(*columns):
            row += 1
            yield row, dict(zip(COLUMNS, values))


def read_event_log(path: str, skip_malformed: bool = False,
                   drop_duplicates: bool = False) -> EventLog:
    """Reads the standard event log from a CSV/Parquet file or a folder of them.

    Events are kept in file order; out-of-order timestamps are fine (each user's events are
    sorted by time, ties in file order, when sequences are built).

    Args:
      path: file or folder.
      skip_malformed: skip bad rows and count them in `log.report` instead of failing.
      drop_duplicates: drop exact repeats of an event (same user, item, scene and timestamp,
        e.g. a logging retry) and count them in `log.report`; by default they are kept, as a
        user can legitimately act on the same item twice in one clock tick.

    Raises:
      EventLogError: naming file, line (Parquet: row), field and value of the first problem.
    """
    report = ReadReport()
    rows: List[Tuple[str, str, str, int]] = []
    for file in list_event_files(path):
        report.files.append(file)
        rows.extend(iter_event_rows(file, skip_malformed, report))
    if drop_duplicates:
        seen, unique = set(), []
        for row in rows:
            if row in seen:
                report.skip("duplicate event", f"duplicate event {row}")
                continue
            seen.add(row)
            unique.append(row)
        rows = unique
    report.rows = len(rows)
    return EventLog.from_rows(rows, report)


def iter_event_rows(file: str, skip_malformed: bool = False,
                    report: Optional[ReadReport] = None) -> Iterator[Tuple[str, str, str, int]]:
    """Streams one CSV/Parquet file's valid (user_id, item_id, scene, timestamp) rows, in order.

    Raises EventLogError naming file, line (Parquet: row), field and value, unless
    `skip_malformed`, which skips the row and counts it in `report`.
    """
    reader = _parquet_rows if file.endswith(".parquet") else _csv_rows
    where_kind = "row" if file.endswith(".parquet") else "line"
    for line, values in reader(file):
        where = f"{file}:{line}" if where_kind == "line" else f"{file}: row {line}"
        try:
            if "__error__" in values:
                raise EventLogError(f"{where}: {values['__error__']}", "unparseable row")
            yield _check_row(values, where)
        except EventLogError as err:
            if not skip_malformed:
                raise
            if report is not None:
                report.skip(err.reason, str(err))


# --- loaders for other formats --------------------------------------------------------------
def load_movielens_100k() -> EventLog:
    """MovieLens-100K from the `recbole==1.2.1` wheel, with one constant scene ("all").

    The file's many equal timestamps keep their file order (stable sort downstream).
    """
    import importlib.resources  # pylint: disable=import-outside-toplevel

    try:
        root = importlib.resources.files("recbole")
    except ModuleNotFoundError:
        raise EventLogError(
            "MovieLens-100K comes from the recbole==1.2.1 wheel: "
            "pip install --no-deps recbole==1.2.1 (make setup does)"
        ) from None
    inter = root / "dataset_example" / "ml-100k" / "ml-100k.inter"
    rows = []
    with inter.open("r", encoding="utf-8") as handle:
        header = handle.readline().rstrip("\n").split("\t")
        names = [h.split(":")[0] for h in header]
        u, i, t = names.index("user_id"), names.index("item_id"), names.index("timestamp")
        for line_no, line in enumerate(handle, start=2):
            parts = line.rstrip("\n").split("\t")
            if len(parts) != len(names):
                raise EventLogError(f"{inter}:{line_no}: has {len(parts)} fields, expected {len(names)}")
            rows.append((parts[u], parts[i], "all", int(float(parts[t]))))
    return EventLog.from_rows(rows)


OUTBRAIN_TRAFFIC_SOURCES = {"1": "internal", "2": "search", "3": "social"}


def _load_with(path: str, required: Sequence[str], convert: Callable[[Dict[str, str], str], Tuple],
               skip_malformed: bool) -> EventLog:
    report = ReadReport()
    rows = []
    for file in list_event_files(path):
        report.files.append(file)
        # utf-8-sig: a byte-order mark at the start is dropped, not read into the first name.
        with open(file, encoding="utf-8-sig", errors="strict", newline="") as handle:
            reader = csv.DictReader(handle)
            csv.field_size_limit(MAX_FIELD_CHARS)
            try:
                # Reading the header decodes the first buffer: inside the try, so bad bytes
                # there are named like bad bytes anywhere else.
                missing = [c for c in required if c not in (reader.fieldnames or [])]
                if missing:
                    raise EventLogError(f"{file}:1: missing column(s) {', '.join(missing)}")
                for values in reader:
                    where = f"{file}:{reader.line_num}"
                    try:
                        if None in values or None in values.values():
                            raise EventLogError(f"{where}: has a different number of fields "
                                                "than the header", "unparseable row")
                        rows.append(_check_row(dict(zip(COLUMNS, convert(values, where))), where))
                    except EventLogError as err:
                        if not skip_malformed:
                            raise
                        report.skip(err.reason, str(err))
            except UnicodeDecodeError as err:
                raise EventLogError(f"{file}: bytes that are not UTF-8 ({err.reason})") from None
            except csv.Error as err:
                # A field past MAX_FIELD_CHARS or broken quoting: the rest of the file is
                # unreadable, so this is an error even with skip_malformed.
                raise EventLogError(f"{file}:{reader.line_num}: unparseable row ({err})") \
                    from None
    report.rows = len(rows)
    return EventLog.from_rows(rows, report)


def load_outbrain_page_views(path: str, skip_malformed: bool = False) -> EventLog:
    """Outbrain click-prediction `page_views.csv`: user = uuid, item = document_id,
    scene = traffic_source (1 internal, 2 search, 3 social), timestamp in ms."""

    def convert(values: Dict[str, str], where: str) -> Tuple:
        source = (values.get("traffic_source") or "").strip()
        return (values["uuid"], values["document_id"],
                OUTBRAIN_TRAFFIC_SOURCES.get(source, source), values["timestamp"])

    return _load_with(path, ("uuid", "document_id", "timestamp", "traffic_source"), convert,
                      skip_malformed)


def load_kuairand(path: str, skip_malformed: bool = False) -> EventLog:
    """KuaiRand logs: user = user_id, item = video_id, scene = tab, timestamp = time_ms."""

    def convert(values: Dict[str, str], where: str) -> Tuple:
        tab = (values.get("tab") or "").strip()
        return (values["user_id"], values["video_id"], f"tab{tab}" if tab else "",
                values["time_ms"])

    return _load_with(path, ("user_id", "video_id", "time_ms", "tab"), convert, skip_malformed)
