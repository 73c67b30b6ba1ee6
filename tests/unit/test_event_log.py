"""Event log reading, validation errors, loaders of other formats, leave-one-out splits."""

import pytest

from dspnet_tf.data.event_log import (EventLogError, load_kuairand, load_movielens_100k,
                                      load_outbrain_page_views, read_event_log)
from dspnet_tf.data.splits import leave_one_out

GOOD = """user_id,item_id,scene,timestamp
u1,a,feed,30
u1,b,search,10
u2,a,live,5
u1,c,cart,10
u2,b,feed,7
u2,c,feed,7
u3,a,feed,1
"""


def write(tmp_path, text, name="events.csv", mode="w"):
    path = tmp_path / name
    if mode == "wb":
        path.write_bytes(text)
    else:
        path.write_text(text)
    return str(path)


def test_reads_csv_and_splits_leave_one_out_with_stable_ties(tmp_path):
    log = read_event_log(write(tmp_path, GOOD))
    assert len(log) == 7
    split = leave_one_out(log)
    assert split.dropped_users == 1  # u3 has 1 event
    assert split.users == ["u1", "u2"]
    vocab = split.item_vocab
    # u1 sorted by time: b(10), c(10, later in file), a(30).
    assert [vocab.tokens[i] for i in split.items[0]] == ["b", "c", "a"]
    assert [split.scene_vocab.tokens[i] for i in split.scenes[0]] == ["search", "cart", "feed"]
    assert [vocab.tokens[i] for i in split.items[1]] == ["a", "b", "c"]
    train_items, _ = split.train
    valid_items, _ = split.valid
    assert train_items[0] == split.items[0][:1]
    assert valid_items[0] == split.items[0][:2]
    assert vocab.tokens[:2] == ["<pad>", "<oov>"]
    assert vocab.lookup(["zzz"]) == [1]


def test_reads_a_folder_of_csv_and_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp_path / "logs"
    folder.mkdir()
    write(folder, GOOD, "a.csv")
    pq.write_table(pa.table({"user_id": ["u9", "u9"], "item_id": ["x", "y"],
                             "scene": ["feed", "cart"], "timestamp": [1, 2]}),
                   str(folder / "b.parquet"))
    log = read_event_log(str(folder))
    assert len(log) == 9 and set(log.user_ids) == {"u1", "u2", "u3", "u9"}


@pytest.mark.parametrize("text, message", [
    ("user_id,item_id,timestamp\nu1,a,1\n", r"events.csv:1: missing column\(s\) scene"),
    ("", "file is empty"),
    (GOOD + "u4,d,feed,yesterday\n", r"events.csv:9: field 'timestamp' has value 'yesterday'"),
    (GOOD + "u4,,feed,3\n", r"events.csv:9: field 'item_id' is empty"),
    (GOOD + "u4,d,feed,-5\n", r"events.csv:9: field 'timestamp' has negative value -5"),
    (GOOD + "u4,d,feed\n", r"events.csv:9: has 3 fields, the header has 4"),
])
def test_malformed_input_names_file_line_field_and_value(tmp_path, text, message):
    with pytest.raises(EventLogError, match=message):
        read_event_log(write(tmp_path, text))


def test_non_utf8_bytes_name_the_line(tmp_path):
    path = write(tmp_path, GOOD.encode() + b"u4,\xff\xfe,feed,3\n", mode="wb")
    with pytest.raises(EventLogError, match=r"events.csv:9: bytes that are not UTF-8"):
        read_event_log(path)


def test_huge_field_is_an_error_not_a_hang(tmp_path):
    path = write(tmp_path, GOOD + "u4," + "x" * 200_000 + ",feed,3\n")
    with pytest.raises(EventLogError, match="unparseable row"):
        read_event_log(path)


def test_skip_malformed_counts_by_reason(tmp_path):
    text = GOOD + "u4,d,feed,yesterday\nu4,,feed,3\nu5,e,feed,-1\nu6,f,feed,2\n"
    log = read_event_log(write(tmp_path, text), skip_malformed=True)
    assert len(log) == 8
    assert log.report.skipped == {"bad timestamp": 1, "empty item_id": 1, "negative timestamp": 1}
    assert any(":9:" in example for example in log.report.examples)


def test_missing_path_is_a_clear_error(tmp_path):
    with pytest.raises(EventLogError, match="no such file or folder"):
        read_event_log(str(tmp_path / "nope.csv"))


def test_outbrain_page_views_fixture(tmp_path):
    path = write(tmp_path, "uuid,document_id,timestamp,platform,geo_location,traffic_source\n"
                           "1fd5f051fba643,120,31905835,1,RS,2\n"
                           "1fd5f051fba643,8885,32053104,1,VN>44,1\n"
                           "8557aa9004be3b,1,70238,2,US>CA>807,3\n", "page_views.csv")
    log = load_outbrain_page_views(path)
    assert list(log.scenes) == ["search", "internal", "social"]
    assert list(log.item_ids) == ["120", "8885", "1"]
    assert log.timestamps.tolist() == [31905835, 32053104, 70238]


def test_kuairand_fixture(tmp_path):
    path = write(tmp_path, "user_id,video_id,date,hourmin,time_ms,is_click,is_like,tab\n"
                           "0,9523,20220408,1000,1649383240471,1,0,1\n"
                           "0,4310,20220408,1000,1649383288137,0,0,4\n"
                           "7,11,20220409,900,1649466000000,1,0,\n", "log_standard.csv")
    with pytest.raises(EventLogError, match=r"log_standard.csv:4: field 'scene' is empty"):
        load_kuairand(path)
    log = load_kuairand(path, skip_malformed=True)
    assert list(log.scenes) == ["tab1", "tab4"] and log.report.skipped == {"empty scene": 1}


def test_movielens_100k_from_the_recbole_wheel():
    log = load_movielens_100k()
    assert len(log) == 100_000
    assert set(log.scenes) == {"all"}
    split = leave_one_out(log)
    assert len(split.users) == 943 and split.dropped_users == 0
    assert len(split.item_vocab) - 2 == 1682


# --- Parquet: streamed in record batches of the four needed columns ---------------------------
def _parquet_log(path, rows=300, row_group_size=40, extra=True, bad_row=None):
    """Writes `rows` events over several row groups (plus an unused column); returns the rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    events = [(f"u{i % 7}", f"i{(i * 13) % 50}", ("feed", "search", "cart")[i % 3], 1000 + i)
              for i in range(rows)]
    columns = {"user_id": [e[0] for e in events], "item_id": [e[1] for e in events],
               "scene": [e[2] for e in events], "timestamp": [e[3] for e in events]}
    if bad_row is not None:
        columns["item_id"][bad_row - 1] = ""
    if extra:  # an extra column first, so a reader by position would pick it up
        columns = {"notes": [f"note {i}" for i in range(rows)], **columns}
    pq.write_table(pa.table(columns), str(path), row_group_size=row_group_size)
    return events


def test_parquet_streamed_in_batches_gives_the_same_events_and_row_numbers(tmp_path, monkeypatch):
    from dspnet_tf.data import event_log

    monkeypatch.setattr(event_log, "PARQUET_BATCH_ROWS", 64)  # batches cross row groups of 40
    events = _parquet_log(tmp_path / "events.parquet")
    log = read_event_log(str(tmp_path / "events.parquet"))
    assert list(zip(log.user_ids, log.item_ids, log.scenes, log.timestamps.tolist())) == events
    # The same events as the CSV of them, in the same order.
    csv_text = "user_id,item_id,scene,timestamp\n" + "".join(f"{u},{i},{s},{t}\n"
                                                             for u, i, s, t in events)
    from_csv = read_event_log(write(tmp_path, csv_text))
    assert [list(a) for a in (log.user_ids, log.timestamps)] == \
        [list(a) for a in (from_csv.user_ids, from_csv.timestamps)]
    # Row numbers count on across batches.
    _parquet_log(tmp_path / "bad.parquet", bad_row=150)
    with pytest.raises(EventLogError, match=r"bad.parquet: row 150: field 'item_id' is empty"):
        read_event_log(str(tmp_path / "bad.parquet"))


def test_parquet_reads_only_the_needed_columns_in_bounded_batches(tmp_path, monkeypatch):
    import pyarrow.parquet as pq

    from dspnet_tf.data import event_log

    _parquet_log(tmp_path / "events.parquet", rows=500, row_group_size=500)
    seen = []
    original = pq.ParquetFile.iter_batches

    def spy(self, *args, **kwargs):
        for batch in original(self, *args, **kwargs):
            seen.append((batch.schema.names, batch.num_rows))
            yield batch

    monkeypatch.setattr(pq.ParquetFile, "iter_batches", spy)
    monkeypatch.setattr(pq, "read_table", None)  # the whole-file read must not be used
    monkeypatch.setattr(event_log, "PARQUET_BATCH_ROWS", 128)
    assert len(read_event_log(str(tmp_path / "events.parquet"))) == 500
    assert seen and all(names == list(event_log.COLUMNS) for names, _ in seen)
    assert max(rows for _, rows in seen) <= 128 and sum(rows for _, rows in seen) == 500


def test_parquet_with_a_huge_compressible_extra_column_stays_small_in_memory(tmp_path):
    """A column that is 256 MB uncompressed (about 100 KB on disk) is never decompressed."""
    import subprocess
    import sys
    from pathlib import Path

    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "bomb.parquet"
    schema = pa.schema([("user_id", pa.string()), ("item_id", pa.string()),
                        ("scene", pa.string()), ("timestamp", pa.int64()),
                        ("payload", pa.large_string())])
    with pq.ParquetWriter(str(path), schema, compression="zstd",
                          write_statistics=False) as writer:
        for group in range(16):  # one row group of 4 rows x 4 MB at a time
            writer.write_table(pa.table({
                "user_id": [f"u{group}"] * 4, "item_id": ["a", "b", "c", "d"],
                "scene": ["feed"] * 4, "timestamp": list(range(4)),
                "payload": ["x" * (4 << 20)] * 4}, schema=schema))
    assert path.stat().st_size < 8 << 20
    # A fresh process (the module alone, no TensorFlow) so the allocator's peak is this read's.
    module = Path(__file__).resolve().parents[2] / "dspnet_tf" / "data" / "event_log.py"
    script = (
        "import importlib.util, sys, pyarrow as pa\n"
        f"spec = importlib.util.spec_from_file_location('event_log', {str(module)!r})\n"
        "mod = importlib.util.module_from_spec(spec); sys.modules['event_log'] = mod\n"
        "spec.loader.exec_module(mod)\n"
        f"log = mod.read_event_log({str(path)!r})\n"
        "print(len(log), pa.default_memory_pool().max_memory())\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    rows, peak = map(int, result.stdout.split())
    assert rows == 64
    assert peak < 32 << 20, f"peak Arrow memory {peak / 2**20:.0f} MB for 256 MB unread"
