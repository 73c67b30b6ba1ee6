"""Bad event logs: a clear error naming file, line and field, or (asked for) skipped and counted.

The unit tests of the loader cover missing columns, empty files, wrong types, empty fields,
negative timestamps, short rows, non-UTF-8 bytes and huge fields; these add the cases a
production log also meets, through both the library reader and the pipeline's ExampleGen.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dspnet_tf.data.event_log import EventLogError, read_event_log
from dspnet_tf.data.splits import group_by_user

pytestmark = pytest.mark.reliability

HEADER = "user_id,item_id,scene,timestamp\n"


def _write(tmp_path, text, name="events.csv"):
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return str(path)


def test_duplicated_events_are_kept_or_dropped_and_counted(tmp_path):
    path = _write(tmp_path, HEADER + "u1,a,feed,1\nu1,a,feed,1\nu1,b,live,2\nu1,a,feed,1\n")
    assert len(read_event_log(path)) == 4
    log = read_event_log(path, drop_duplicates=True)
    assert len(log) == 2 and log.report.skipped == {"duplicate event": 2}


def test_out_of_order_timestamps_are_sorted_per_user_ties_in_file_order(tmp_path):
    path = _write(tmp_path, HEADER + "u1,c,cart,30\nu1,a,feed,10\nu1,b,live,20\nu1,d,feed,20\n")
    items, scenes = group_by_user(read_event_log(path))["u1"]
    assert items == ["a", "b", "d", "c"] and scenes == ["feed", "live", "feed", "cart"]


def test_header_only_file_is_an_empty_log_not_a_crash(tmp_path):
    assert len(read_event_log(_write(tmp_path, HEADER))) == 0


BOM = b"\xef\xbb\xbf"  # UTF-8 byte-order mark: Excel's "CSV UTF-8" and other exports start with it


def test_byte_order_mark_and_crlf_lines_are_read(tmp_path):
    path = _write(tmp_path, BOM + (HEADER + "u1,a,feed,1\nu2,b,live,2\n").replace("\n", "\r\n")
                  .encode())
    with open(path, "rb") as handle:
        assert handle.read(3) == BOM  # the file really starts with the mark
    log = read_event_log(path)
    # The mark is not part of the first column's name (or of the first user id).
    assert list(log.user_ids) == ["u1", "u2"] and list(log.item_ids) == ["a", "b"]
    assert list(log.scenes) == ["feed", "live"] and list(log.timestamps) == [1, 2]


def test_byte_order_mark_is_read_by_the_outbrain_and_kuairand_loaders(tmp_path):
    from dspnet_tf.data.event_log import load_kuairand, load_outbrain_page_views

    outbrain = load_outbrain_page_views(_write(
        tmp_path, BOM + (OUTBRAIN_HEADER + "u1,d1,1000,1,US,2\n").encode(), name="pv.csv"))
    assert list(outbrain.user_ids) == ["u1"] and list(outbrain.scenes) == ["search"]
    kuairand = load_kuairand(_write(tmp_path, BOM + b"user_id,video_id,tab,time_ms\nu1,v1,1,5\n",
                                    name="log.csv"))
    assert list(kuairand.user_ids) == ["u1"] and list(kuairand.scenes) == ["tab1"]


def test_byte_order_mark_inside_the_file_is_not_stripped(tmp_path):
    # Only the file's first bytes can be a byte-order mark; elsewhere it is data.
    log = read_event_log(_write(tmp_path, BOM + HEADER.encode() + BOM + b"u1,a,feed,1\n"))
    assert list(log.user_ids) == ["\ufeffu1"]


@pytest.mark.parametrize("value", ["9223372036854775808", "99999999999999999999999",
                                   "99999999999999999999.0", "1" * 400 + ".0"])
def test_timestamp_above_int64_names_file_line_field_and_value(tmp_path, value):
    # Before: OverflowError from numpy (or from int(inf) for a float too large), no file/line.
    with pytest.raises(EventLogError, match=rf"events.csv:3: field 'timestamp' has value "
                                            rf"'{value[:40]}"):
        read_event_log(_write(tmp_path, HEADER + f"u1,a,feed,1\nu1,b,live,{value}\n"))
    log = read_event_log(_write(tmp_path, HEADER + f"u1,a,feed,1\nu1,b,live,{value}\n"),
                         skip_malformed=True)
    assert len(log) == 1 and log.report.skipped == {"bad timestamp": 1}


def test_largest_int64_timestamp_is_read(tmp_path):
    log = read_event_log(_write(tmp_path, HEADER + "u1,a,feed,9223372036854775807\n"))
    assert int(log.timestamps[0]) == 2**63 - 1


def test_parquet_uint64_timestamp_above_int64_names_the_row(tmp_path):
    path = tmp_path / "big.parquet"
    pq.write_table(pa.table({"user_id": ["u1", "u2"], "item_id": ["a", "b"],
                             "scene": ["feed", "live"],
                             "timestamp": pa.array([1, 2**63], type=pa.uint64())}), str(path))
    with pytest.raises(EventLogError, match=r"big.parquet: row 2: field 'timestamp' has value "
                                            r"'9223372036854775808'"):
        read_event_log(str(path))


def test_float_timestamp_that_is_not_whole_names_the_field(tmp_path):
    with pytest.raises(EventLogError, match=r"events.csv:2: field 'timestamp' has value '1.5'"):
        read_event_log(_write(tmp_path, HEADER + "u1,a,feed,1.5\n"))


def test_unbalanced_quote_is_named_not_swallowed(tmp_path):
    with pytest.raises(EventLogError, match=r"events.csv:\d+"):
        read_event_log(_write(tmp_path, HEADER + 'u1,"a,feed,1\nu2,b,live,2\n'))


def test_corrupt_parquet_is_named(tmp_path):
    path = _write(tmp_path, b"PAR1 this is not parquet PAR1", name="events.parquet")
    with pytest.raises(EventLogError, match="events.parquet: not a readable Parquet file"):
        read_event_log(path)


def test_parquet_missing_column_and_wrong_type(tmp_path):
    missing = tmp_path / "a.parquet"
    pq.write_table(pa.table({"user_id": ["u1"], "item_id": ["a"], "timestamp": [1]}),
                   str(missing))
    with pytest.raises(EventLogError, match=r"a.parquet: missing column\(s\) scene"):
        read_event_log(str(missing))
    wrong = tmp_path / "b.parquet"
    pq.write_table(pa.table({"user_id": ["u1"], "item_id": ["a"], "scene": ["feed"],
                             "timestamp": ["noon"]}), str(wrong))
    with pytest.raises(EventLogError, match=r"b.parquet: row 1: field 'timestamp' has value "
                                            r"'noon'"):
        read_event_log(str(wrong))


def test_folder_without_event_files_is_named(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(EventLogError, match="no .*csv"):
        read_event_log(str(tmp_path))


def test_the_pipeline_examplegen_names_the_bad_line_too(tmp_path):
    import apache_beam as beam

    from tfx_pipeline.sequence_example_gen import WriteSequenceExamples

    path = _write(tmp_path, HEADER + "u1,a,feed,1\nu1,b,live,yesterday\n")
    with pytest.raises(Exception, match=r"events.csv:3: field 'timestamp' has value 'yesterday'"):
        with beam.Pipeline() as pipeline:
            _ = pipeline | WriteSequenceExamples([path], str(tmp_path / "out"))


OUTBRAIN_HEADER = "uuid,document_id,timestamp,platform,geo_location,traffic_source\n"


@pytest.mark.parametrize("text, message", [
    (OUTBRAIN_HEADER + "u1,d1,1000,1,US,2\nu1,d2,1001,1\n", r"page_views.csv:3: has a different"),
    (OUTBRAIN_HEADER + "u1,d1,soon,1,US,2\n", r"page_views.csv:2: field 'timestamp'"),
    (OUTBRAIN_HEADER + "u1," + "d" * 200_000 + ",1000,1,US,2\n", r"page_views.csv:\d+: unparseable"),
    ("uuid,timestamp\nu1,1\n", r"page_views.csv:1: missing column\(s\) document_id"),
])
def test_outbrain_loader_names_file_line_and_field(tmp_path, text, message):
    from dspnet_tf.data.event_log import load_outbrain_page_views

    with pytest.raises(EventLogError, match=message):
        load_outbrain_page_views(_write(tmp_path, text, name="page_views.csv"))


def test_kuairand_loader_refuses_non_utf8_by_name(tmp_path):
    from dspnet_tf.data.event_log import load_kuairand

    path = _write(tmp_path, b"user_id,video_id,tab,time_ms\nu1,\xff,1,5\n", name="log.csv")
    with pytest.raises(EventLogError, match="log.csv: bytes that are not UTF-8"):
        load_kuairand(path)
