"""Daily spans: the scene world continued day by day, {SPAN} resolution, and the ExampleGen
reading every span up to the one it trains on (issue 35, items 1 and 2)."""

import csv
import glob
import itertools
import json
import os

import numpy as np
import pytest

from dspnet_tf.data.scene_world import (DAY_SECONDS, FIRST_DAY_START, SceneDays, SceneDrift,
                                        SceneWorld, SceneWorldConfig, generate_days,
                                        load_scene_days)

BEAM_ARGS = ["--direct_running_mode=in_memory", "--direct_num_workers=1"]
SMALL = SceneWorldConfig(users=120, items=60, categories=4, seed=3)


def _read_span(path):
    with open(path, newline="") as handle:
        return [(r["user_id"], r["item_id"], r["scene"], int(r["timestamp"]))
                for r in csv.DictReader(handle)]


# --- the world, continued day by day ------------------------------------------------------
def test_days_continue_each_users_sequence_across_span_files(tmp_path):
    log, paths = generate_days(SMALL, str(tmp_path), days=3)
    names = SMALL.scene_names
    assert sorted(os.listdir(paths["events"])) == ["span-1", "span-2", "span-3"]
    assert paths["pattern"] == os.path.join(paths["events"], "span-{SPAN}", "*")
    rows = {day: _read_span(os.path.join(paths["events"], f"span-{day}", "events.csv"))
            for day in (1, 2, 3)}
    # Day 1 is the single-log world, event for event.
    single = SceneWorld(SMALL).generate()
    assert [by_day[0] for by_day in log.items] == single.items
    assert [by_day[0] for by_day in log.scenes] == single.scenes
    crossing = 0
    for user in range(SMALL.users):
        uid = f"u{user:06d}"
        events = [row for day in (1, 2, 3) for row in rows[day] if row[0] == uid]
        items, scenes, days = log.sequence(user)
        assert [(r[1], r[2]) for r in events] == [(f"i{v:05d}", names[s])
                                                  for v, s in zip(items, scenes)]
        stamps = [r[3] for r in events]
        assert all(a < b for a, b in zip(stamps, stamps[1:])), uid  # strictly increasing
        for stamp, day in zip(stamps, days):  # each day's events inside that UTC day
            assert 0 <= stamp - FIRST_DAY_START - (day - 1) * DAY_SECONDS < DAY_SECONDS
        crossing += len(set(days)) > 1
    assert crossing > SMALL.users // 2  # most users come back on a later day
    world = json.loads(open(paths["world"]).read())
    assert world["days"] == 3 and world["events"] == log.num_events
    assert world["events_per_day"] == [len(rows[d]) for d in (1, 2, 3)]


def test_days_are_deterministic_and_rebuilt_from_world_json(tmp_path):
    drift = SceneDrift(day=2, kind="popularity_shift")
    log, paths = generate_days(SMALL, str(tmp_path), days=2, drift_day=2,
                               drift_kind="popularity_shift")
    again = SceneDays(SMALL, days=2, drift=drift).generate()
    assert again.items == log.items and again.scenes == log.scenes
    rebuilt = load_scene_days(paths["world"])
    assert rebuilt.drift == drift and rebuilt.days == 2
    items, scenes, days = log.sequence(0)
    np.testing.assert_array_equal(
        rebuilt.oracle_joint(0, items, scenes, days, 2),
        SceneDays(SMALL, days=2, drift=drift).oracle_joint(0, items, scenes, days, 2))


def brute_force_joint(days_world, user, items, scenes, days, next_day):
    """P(next scene, next item | history) by enumerating every intent and governing-scene path,
    event t drawn under the world of its day (the test_scene_world enumeration, per day)."""
    c = days_world.config
    worlds = [days_world.world_on(d) for d in list(days) + [next_day]]
    base = days_world.world
    n_steps = len(items) + 1
    A = base.intent_transitions(user)
    m = c.misalignment

    def item_prob(t, k, g, v, hist_v, hist_s):
        plain = worlds[t].base_item_distribution[g, k, v]
        if g not in (3, 4):  # favorites, cart
            return plain
        ages = [(j, hist_v[j]) for j in range(t) if hist_s[j] != g]
        if not ages:
            return plain
        weights = np.array([c.return_decay ** (t - 1 - j) for j, _ in ages])
        hit = sum(w for w, (_, vj) in zip(weights, ages) if vj == v)
        return c.return_probability * hit / weights.sum() + (1 - c.return_probability) * plain

    joint = np.zeros((c.scenes, c.items))
    for s_next, v_next in itertools.product(range(c.scenes), range(c.items)):
        seq_v, seq_s = list(items) + [v_next], list(scenes) + [s_next]
        p_scenes = worlds[0].scene_initial[user][seq_s[0]]
        for t in range(1, n_steps):
            p_scenes *= worlds[t].scene_transitions[user, seq_s[t - 1], seq_s[t]]
        if p_scenes == 0:
            continue
        total = 0.0
        for ks in itertools.product(range(c.categories), repeat=n_steps):
            p_k = base.user_preference[user][ks[0]]
            for t in range(1, n_steps):
                p_k *= A[ks[t - 1], ks[t]]
            p_items = 1.0
            for t in range(n_steps):
                q = worlds[t].scene_marginal
                p_items *= sum(((1 - m) * (g == seq_s[t]) + m * q[g])
                               * item_prob(t, ks[t], g, seq_v[t], seq_v, seq_s)
                               for g in range(c.scenes))
            total += p_k * p_items
        joint[s_next, v_next] = p_scenes * total
    return joint / joint.sum()


@pytest.mark.parametrize("drift_kind,misalignment", [
    (None, 0.0), (None, 0.5), ("popularity_shift", 0.5), ("scene_gone", 0.5),
    ("new_scene", 0.0), ("new_items", 0.5)])
def test_oracle_over_the_continued_sequence_matches_brute_force(drift_kind, misalignment):
    # Two events on day 1, then day 2: a history of 4 crosses the day boundary.
    config = SceneWorldConfig(users=6, items=6, categories=2, scenes=6, min_events=2,
                              mean_extra_events=0.0, misalignment=misalignment, seed=11)
    drift = SceneDrift(day=2, kind=drift_kind, scene="search") if drift_kind else None
    days_world = SceneDays(config, days=2, drift=drift, active_probability=1.0)
    log = days_world.generate()
    checked = 0
    for user in range(config.users):
        items, scenes, days = log.sequence(user)
        if len(items) < 4:
            continue
        for cut in (3, 4):  # predict the second day-2 event; the day after the last one
            next_day = days[cut] if cut < len(items) else 3
            expected = brute_force_joint(days_world, user, items[:cut], scenes[:cut],
                                         days[:cut], next_day)
            got = days_world.oracle_joint(user, items[:cut], scenes[:cut], days[:cut], next_day)
            np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12)
        checked += 1
        if checked == 2:
            break
    assert checked == 2


def _scene_counts(log, scene):
    index = log.world.config.scene_names.index(scene)
    return [sum(by_day[day].count(index) for by_day in log.scenes)
            for day in range(log.world.days)]


def test_drift_kinds_do_what_they_claim():
    config = SceneWorldConfig(users=200, items=80, categories=4, seed=5)
    plain = SceneDays(config, days=4).generate()
    assert all(_scene_counts(plain, "live"))  # live has events every day without a drift

    gone = SceneDays(config, days=4, drift=SceneDrift(3, "scene_gone", "live")).generate()
    counts = _scene_counts(gone, "live")
    assert counts[0] > 0 and counts[1] > 0 and counts[2:] == [0, 0]
    # The days before the drift are the undrifted world's (each user has their own stream).
    assert [d[:2] for d in gone.items] == [d[:2] for d in plain.items]

    new = SceneDays(config, days=4, drift=SceneDrift(2, "new_scene", "live")).generate()
    counts = _scene_counts(new, "live")
    assert counts[0] == 0 and all(counts[1:])

    shifted_world = SceneDays(config, days=4, drift=SceneDrift(3, "popularity_shift"))
    shifted = shifted_world.generate()
    old_weight = shifted_world.world_on(2).item_weight
    new_weight = shifted_world.world_on(3).item_weight
    assert not np.array_equal(old_weight, new_weight)
    assert sorted(old_weight) == pytest.approx(sorted(new_weight))  # the same Zipf ranks, dealt again
    # Events follow the popularity of their day: correlation with the new weights flips.
    def counts_on(log, days):
        out = np.zeros(config.items)
        for by_day in log.items:
            for day in days:
                np.add.at(out, by_day[day - 1], 1)
        return out
    before, after = counts_on(shifted, (1, 2)), counts_on(shifted, (3, 4))
    corr = lambda a, b: np.corrcoef(a, b)[0, 1]  # noqa: E731
    assert corr(before, old_weight) > corr(before, new_weight) + 0.2
    assert corr(after, new_weight) > corr(after, old_weight) + 0.2


def test_new_items_launch_on_their_day_as_popular_items():
    config = SceneWorldConfig(users=200, items=80, categories=4, seed=5)
    days = SceneDays(config, days=3, drift=SceneDrift(3, "new_items"))
    launched = days.world.launch_items()
    assert len(launched) == 4 and launched.min() >= 2 * config.categories  # 5% of 80
    log = days.generate()
    on_day = [{item for by_day in log.items for item in by_day[d]} for d in range(3)]
    assert not set(launched) & (on_day[0] | on_day[1])  # never seen before day 3
    assert set(launched) <= on_day[2]  # all of them on day 3
    day3 = [item for by_day in log.items for item in by_day[2]]
    share = np.isin(day3, launched).mean()
    # They are the catalog's most popular items outside the guaranteed pairs: a large share.
    assert share > 0.1, share
    assert np.all(days.world_on(2).item_weight[launched] == 0)
    assert np.all(days.world_on(3).item_weight[launched] > 0)


def test_day_and_drift_settings_are_checked(tmp_path):
    with pytest.raises(ValueError, match="SceneDrift.day=1"):
        SceneDrift(1, "scene_gone")
    with pytest.raises(ValueError, match="SceneDrift.kind='vanish'"):
        SceneDrift(2, "vanish")
    with pytest.raises(ValueError, match="after the last day"):
        SceneDays(SMALL, days=2, drift=SceneDrift(3, "scene_gone"))
    with pytest.raises(ValueError, match="'teleport': not a scene"):
        SceneDays(SMALL, days=2, drift=SceneDrift(2, "new_scene", "teleport"))
    with pytest.raises(ValueError, match="days=0"):
        SceneDays(SMALL, days=0)
    with pytest.raises(ValueError, match="both a day and a kind"):
        generate_days(SMALL, str(tmp_path), days=3, drift_day=2)


# --- span resolution ----------------------------------------------------------------------
def _write_spans(base, by_span, name="events.csv"):
    for span, text in by_span.items():
        folder = os.path.join(str(base), f"span-{span}")
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, name), "w") as handle:
            handle.write("user_id,item_id,scene,timestamp\n" + text)


SPAN_EVENTS = {
    1: "u1,a,feed,1\nu1,b,search,2\nu2,x,feed,1\n",
    2: "u1,c,cart,10\nu2,y,live,11\nu2,z,feed,12\nu3,q,feed,12\n",
}


def test_the_latest_span_by_default_and_a_static_range_for_one(tmp_path):
    from tfx_pipeline import spans

    _write_spans(tmp_path, {**SPAN_EVENTS, 3: "u1,d,feed,20\n"})
    (tmp_path / "span-3" / "_SUCCESS").write_text("")  # markers next to data are not data
    latest = spans.resolve_spans(str(tmp_path), "span-{SPAN}/*")
    assert (latest.span, latest.spans, latest.available) == (3, [1, 2, 3], [1, 2, 3])
    assert latest.files == [str(tmp_path / f"span-{s}" / "events.csv") for s in (1, 2, 3)]
    second = spans.resolve_spans(str(tmp_path), "span-{SPAN}/*", spans.static_range(2))
    assert (second.span, second.spans) == (2, [1, 2]) and len(second.files) == 2
    assert second.fingerprint != latest.fingerprint
    # A folder pattern, a whole path, and TFX's rolling range of one span (the latest).
    assert spans.resolve_spans(str(tmp_path), "span-{SPAN}").files == latest.files
    assert spans.resolve_data(str(tmp_path / "span-{SPAN}" / "*"), span=1).spans == [1]
    from tfx.proto import range_config_pb2
    rolling = range_config_pb2.RangeConfig(
        rolling_range=range_config_pb2.RollingRange(num_spans=1))
    assert spans.resolve_spans(str(tmp_path), "span-{SPAN}/*", rolling).span == 3


def test_zero_padded_spans_with_a_width_modifier(tmp_path):
    from tfx_pipeline import spans

    for span in (1, 2, 10):
        _write_spans(tmp_path / "days", {f"{span:03d}": "u1,a,feed,1\n"})
    selection = spans.resolve_spans(str(tmp_path / "days"), "span-{SPAN:3}/*")
    assert (selection.span, selection.spans) == (10, [1, 2, 10])  # numbers, not strings


def test_span_errors_name_the_problem(tmp_path):
    from tfx.proto import range_config_pb2

    from tfx_pipeline import spans

    _write_spans(tmp_path, SPAN_EVENTS)
    base = str(tmp_path)
    with pytest.raises(spans.SpanError, match=r"day-\{SPAN\}/\*: matches no file"):
        spans.resolve_spans(base, "day-{SPAN}/*")
    with pytest.raises(spans.SpanError, match="asks for span 5, but .* has spans 1-2"):
        spans.resolve_spans(base, "span-{SPAN}/*", spans.static_range(5))
    wide = range_config_pb2.RangeConfig(static_range=range_config_pb2.StaticRange(
        start_span_number=1, end_span_number=2))
    with pytest.raises(spans.SpanError, match="start and end span numbers .* must be equal"):
        spans.resolve_spans(base, "span-{SPAN}/*", wide)
    with pytest.raises(spans.SpanError, match="needs one {SPAN}"):
        spans.resolve_spans(base, "span-*/*")
    with pytest.raises(spans.SpanError, match="not a span pattern"):
        spans.split_span_path(os.path.join(base, "span-1"))
    with pytest.raises(spans.SpanError, match="not a RangeConfig in JSON"):
        spans.range_config_from_json("span 2")
    _write_spans(tmp_path, {"latest": "u1,a,feed,1\n"})
    with pytest.raises(spans.SpanError, match=r"span-latest/events.csv: its \{SPAN\} part "
                                              r"'latest' is not an integer"):
        spans.resolve_spans(base, "span-{SPAN}/*")


def test_split_span_path():
    from tfx_pipeline.spans import split_span_path

    assert split_span_path("out/events/span-{SPAN}/*") == ("out/events", "span-{SPAN}/*")
    assert split_span_path("gs://b/events/span-{SPAN}/*.csv") == ("gs://b/events",
                                                                  "span-{SPAN}/*.csv")
    assert split_span_path("span-{SPAN}/*") == (".", "span-{SPAN}/*")


# --- the ExampleGen over spans ------------------------------------------------------------
def _read_examples(output_dir, split):
    import tensorflow as tf

    out = {}
    for path in glob.glob(os.path.join(output_dir, f"Split-{split}", "*.gz")):
        for record in tf.data.TFRecordDataset(path, compression_type="GZIP"):
            feature = tf.train.Example.FromString(record.numpy()).features.feature
            out[feature["user_id"].bytes_list.value[0].decode()] = [
                v.decode() for v in feature["item_history"].bytes_list.value]
    return out


def test_beam_transform_builds_histories_across_spans(tmp_path):
    import apache_beam as beam

    from tfx_pipeline import spans
    from tfx_pipeline.sequence_example_gen import STATS_FILE, WriteSequenceExamples

    _write_spans(tmp_path / "events", SPAN_EVENTS)
    selection = spans.resolve_spans(str(tmp_path / "events"), "span-{SPAN}/*")
    out = str(tmp_path / "examples")
    with beam.Pipeline(argv=BEAM_ARGS) as pipeline:
        _ = pipeline | WriteSequenceExamples(selection.files, out, span=selection.span,
                                             spans=selection.spans)
    test = _read_examples(out, "test")
    assert test == {"u1": ["a", "b", "c"], "u2": ["x", "y", "z"]}  # u3: one event, dropped
    assert _read_examples(out, "train") == {"u1": ["a"], "u2": ["x"]}
    stats = json.loads(open(os.path.join(out, STATS_FILE)).read())
    assert stats == {"users": 2, "dropped_users": 1, "span": 2, "spans": [1, 2]}


def test_component_records_the_span_and_reruns_for_a_new_one(tmp_path):
    """SequenceExampleGen alone under LocalDagRunner: the span on the artifact, a rerun from
    the cache, a new span run again, and a RangeConfig for an earlier span."""
    from ml_metadata.metadata_store import metadata_store
    from ml_metadata.proto import metadata_store_pb2
    from tfx import v1 as tfx

    from tfx_pipeline import spans
    from tfx_pipeline.pipeline import _example_gen_input
    from tfx_pipeline.sequence_example_gen import STATS_FILE, SequenceExampleGen

    events = tmp_path / "events"
    _write_spans(events, SPAN_EVENTS)
    metadata = str(tmp_path / "metadata.sqlite")

    def run(range_config=None):
        gen = SequenceExampleGen(max_events=200, **_example_gen_input(
            str(events / "span-{SPAN}" / "*"), range_config))
        tfx.orchestration.LocalDagRunner().run(tfx.dsl.Pipeline(
            pipeline_name="spans", pipeline_root=str(tmp_path / "root"), components=[gen],
            enable_cache=True, beam_pipeline_args=BEAM_ARGS,
            metadata_connection_config=tfx.orchestration.metadata
            .sqlite_metadata_connection_config(metadata)))

    run()
    run()  # same spans: taken from the cache
    _write_spans(events, {3: "u1,d,feed,20\n"})
    run()  # span 3 arrived: a new fingerprint, so a new execution
    run(spans.static_range(2))
    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = metadata
    store = metadata_store.MetadataStore(config)
    states = [e.last_known_state for e in store.get_executions()]
    assert states == [metadata_store_pb2.Execution.COMPLETE, metadata_store_pb2.Execution.CACHED,
                      metadata_store_pb2.Execution.COMPLETE, metadata_store_pb2.Execution.COMPLETE]
    artifacts = sorted(store.get_artifacts_by_type("Examples"), key=lambda a: a.id)
    assert [a.properties["span"].int_value for a in artifacts] == [2, 3, 2]
    histories = [_read_examples(a.uri, "test")["u1"] for a in artifacts]
    assert histories == [["a", "b", "c"], ["a", "b", "c", "d"], ["a", "b", "c"]]
    stats = json.loads(open(os.path.join(artifacts[1].uri, STATS_FILE)).read())
    assert stats["span"] == 3 and stats["spans"] == [1, 2, 3]


def test_create_pipeline_takes_a_span_pattern(tmp_path):
    from tfx_pipeline import spans
    from tfx_pipeline.pipeline import create_pipeline

    _write_spans(tmp_path / "events", SPAN_EVENTS)
    pattern = str(tmp_path / "events" / "span-{SPAN}" / "*")
    pipeline = create_pipeline("p", str(tmp_path / "root"), pattern, str(tmp_path / "serving"),
                               str(tmp_path / "m.sqlite"), range_config=spans.static_range(1))
    gen = next(c for c in pipeline.components if c.id == "SequenceExampleGen")
    params = gen.exec_properties
    assert params["input_base"] == str(tmp_path / "events")
    assert params["input_pattern"] == "span-{SPAN}/*"
    assert params["input_fingerprint"].startswith("split:events,num_files:1,")
    assert spans.range_config_from_json(params["range_config"]) == spans.static_range(1)
    with pytest.raises(spans.SpanError, match="has no {SPAN} pattern"):
        create_pipeline("p", str(tmp_path / "root"), str(tmp_path / "events"),
                        str(tmp_path / "serving"), range_config=spans.static_range(1))


def test_a_span_pattern_compiles_for_kubeflow(tmp_path):
    # The RangeConfig travels as JSON text: a proto parameter does not compile for Kubeflow V2,
    # and a remote base is resolved when the component runs, not when the pipeline is built.
    from tfx_pipeline import spans
    from tfx_pipeline.pipeline import compile_for_kubeflow

    out = str(tmp_path / "pipeline.json")
    compile_for_kubeflow(out, "example.invalid/dspnet:1", "gs://bucket/events/span-{SPAN}/*",
                         "gs://bucket/root", "gs://bucket/serving",
                         range_config=spans.static_range(4))
    spec = json.loads(open(out).read())
    parameters = spec["pipelineSpec"]["root"]["dag"]["tasks"]["SequenceExampleGen"]["inputs"][
        "parameters"]
    value = {name: p["runtimeValue"]["constantValue"] for name, p in parameters.items()}
    assert value["input_base"] == {"stringValue": "gs://bucket/events"}
    assert value["input_pattern"] == {"stringValue": "span-{SPAN}/*"}
    assert spans.range_config_from_json(value["range_config"]["stringValue"]) == \
        spans.static_range(4)
    assert "input_fingerprint" not in value
