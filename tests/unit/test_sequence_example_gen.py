"""The sequence ExampleGen's Beam transform agrees with the in-memory leave-one-out split."""

import glob
import json
import os

import apache_beam as beam
import tensorflow as tf

from dspnet_tf.data.event_log import read_event_log
from dspnet_tf.data.splits import leave_one_out
from tfx_pipeline.sequence_example_gen import STATS_FILE, WriteSequenceExamples

PART_1 = """user_id,item_id,scene,timestamp
u1,a,feed,30
u1,b,search,10
u2,a,live,5
u1,c,cart,10
u3,z,feed,1
"""
PART_2 = """user_id,item_id,scene,timestamp
u2,b,feed,7
u2,c,feed,7
u4,q,feed,4
u4,r,cart,4
u2,d,messages,9
u1,e,feed,10
"""


def _read(output_dir, split):
    out = {}
    for path in glob.glob(os.path.join(output_dir, f"Split-{split}", "*.gz")):
        for record in tf.data.TFRecordDataset(path, compression_type="GZIP"):
            example = tf.train.Example.FromString(record.numpy())
            feature = example.features.feature
            user = feature["user_id"].bytes_list.value[0].decode()
            out[user] = ([v.decode() for v in feature["item_history"].bytes_list.value],
                         [v.decode() for v in feature["scene_history"].bytes_list.value],
                         feature["event_count"].int64_list.value[0])
    return out


def test_examples_match_the_split_function_on_ties_short_users_and_several_files(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "part1.csv").write_text(PART_1)
    (data / "part2.csv").write_text(PART_2)
    files = sorted(str(p) for p in data.iterdir())
    out = str(tmp_path / "examples")
    with beam.Pipeline(argv=["--direct_running_mode=in_memory", "--direct_num_workers=1"]) as p:
        _ = p | WriteSequenceExamples(files, out, max_events=200)

    split = leave_one_out(read_event_log(str(data)))
    expected_users = set(split.users)
    assert expected_users == {"u1", "u2"}  # u3 (1 event) and u4 (2 events) are dropped
    for name, view in (("train", split.train), ("eval", split.valid), ("test", split.test)):
        got = _read(out, name)
        assert set(got) == expected_users, name
        for row, user in enumerate(split.users):
            items = [split.item_vocab.tokens[i] for i in view[0][row]]
            scenes = [split.scene_vocab.tokens[i] for i in view[1][row]]
            assert got[user][:2] == (items, scenes), (name, user)
            assert got[user][2] == len(items)
    # Ties keep file order across files: u1's events at t=10 are b, c (part 1), then e (part 2).
    assert _read(out, "test")["u1"][0] == ["b", "c", "e", "a"]
    stats = json.loads(open(os.path.join(out, STATS_FILE)).read())
    assert stats == {"users": 2, "dropped_users": 2}


def test_max_events_keeps_the_most_recent(tmp_path):
    data = tmp_path / "log.csv"
    data.write_text("user_id,item_id,scene,timestamp\n" +
                    "".join(f"u1,i{t},feed,{t}\n" for t in range(10)))
    out = str(tmp_path / "examples")
    with beam.Pipeline(argv=["--direct_running_mode=in_memory", "--direct_num_workers=1"]) as p:
        _ = p | WriteSequenceExamples([str(data)], out, max_events=4)
    assert _read(out, "test")["u1"][0] == ["i6", "i7", "i8", "i9"]
    assert _read(out, "train")["u1"][0] == ["i6", "i7"]
