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
