"""Drift between daily spans (issue 35, item 4): TFDV's comparators on a day's own events vs the
previous day's; a drifted day stops the run before Transform, or warns and trains."""

import json
import os

import pytest

BEAM_ARGS = ["--direct_running_mode=in_memory", "--direct_num_workers=1"]


def _stats(counts):
    """Hand-made TFDV statistics of one day: {feature: {value: count}}, one value per event."""
    from tensorflow_metadata.proto.v0 import statistics_pb2

    out = statistics_pb2.DatasetFeatureStatisticsList()
    dataset = out.datasets.add(num_examples=sum(next(iter(counts.values())).values()))
    for name, by_value in counts.items():
        feature = dataset.features.add(type=statistics_pb2.FeatureNameStatistics.STRING)
        feature.path.step.append(name)
        stats = feature.string_stats
        total = sum(by_value.values())
        common = stats.common_stats
        common.num_non_missing = common.tot_num_values = total
        common.min_num_values = common.max_num_values = 1
        common.avg_num_values = 1.0
        stats.unique = len(by_value)
        ranked = sorted(by_value.items(), key=lambda kv: -kv[1])
        for rank, (value, count) in enumerate(ranked):
            stats.top_values.add(value=value, frequency=count)
            stats.rank_histogram.buckets.add(low_rank=rank, high_rank=rank, label=value,
                                             sample_count=count)
    return out


PREVIOUS = {"scene": {"feed": 50, "search": 30, "live": 20}, "item_id": {"a": 50, "b": 50}}
# live gone: feed's share goes 0.5 -> 0.7, live's 0.2 -> 0: L-infinity 0.2.
CURRENT = {"scene": {"feed": 70, "search": 30}, "item_id": {"a": 50, "b": 50}}


@pytest.mark.parametrize("threshold,drifted", [(0.1, True), (0.25, False)])
def test_comparison_of_hand_made_statistics(threshold, drifted):
    from tfx_pipeline import drift

    measurements, anomalies = drift.compare_statistics(
        _stats(CURRENT), _stats(PREVIOUS), scene_threshold=threshold, item_threshold=0.05)
    by_feature = {m.feature: m for m in measurements}
    assert set(by_feature) == {"scene", "item_id"}
    scene = by_feature["scene"]
    assert scene.measure == "L-infinity distance"
    assert scene.value == pytest.approx(0.2) and scene.threshold == pytest.approx(threshold)
    assert scene.drifted is drifted
    assert by_feature["item_id"].measure == "Jensen-Shannon divergence"
    assert by_feature["item_id"].value == pytest.approx(0.0) and not by_feature["item_id"].drifted
    message = drift.drift_message(3, 2, measurements)
    if drifted:
        assert message == ("span 3 drifted from span 2: scene L-infinity distance 0.2 > "
                           f"threshold {threshold:g} (value that changed most: live)")
        assert "scene" in anomalies.anomaly_info
    else:
        assert message is None and not anomalies.anomaly_info


def test_item_divergence_and_settings():
    from tfx_pipeline import drift

    shifted = {"scene": PREVIOUS["scene"], "item_id": {"a": 90, "b": 10}}
    measurements, _ = drift.compare_statistics(_stats(shifted), _stats(PREVIOUS))
    item = next(m for m in measurements if m.feature == "item_id")
    assert item.drifted and item.value > drift.DEFAULT_ITEM_THRESHOLD
    assert drift.drift_message(2, 1, measurements).startswith(
        "span 2 drifted from span 1: item_id Jensen-Shannon divergence ")
    with pytest.raises(ValueError, match="on_drift='ignore': must be one of stop, warn"):
        drift.check_on_drift("ignore")
    assert drift.previous_span([1, 2, 4], 4) == 2 and drift.previous_span([3, 4], 3) is None


def test_the_gate_is_added_for_span_patterns_only(tmp_path):
    from tfx_pipeline.pipeline import compile_for_kubeflow, create_pipeline

    events = tmp_path / "events" / "span-1"
    events.mkdir(parents=True)
    (events / "events.csv").write_text("user_id,item_id,scene,timestamp\nu1,a,feed,1\n")
    pattern = str(tmp_path / "events" / "span-{SPAN}" / "*")
    pipeline = create_pipeline("p", str(tmp_path / "root"), pattern, str(tmp_path / "serving"),
                               on_drift="warn", scene_drift_threshold=0.3)
    ids = [c.id for c in pipeline.components]
    gate = pipeline.components[ids.index("SpanDriftGate")]
    transform = pipeline.components[ids.index("Transform")]
    assert "SpanDriftGate" in {n.id for n in transform.upstream_nodes}
    assert gate.exec_properties["on_drift"] == "warn"
    assert gate.exec_properties["scene_threshold"] == 0.3
    assert gate.exec_properties["input_pattern"] == "span-{SPAN}/*"
    plain = create_pipeline("p", str(tmp_path / "root"), str(events / "events.csv"),
                            str(tmp_path / "serving"))
    assert "SpanDriftGate" not in [c.id for c in plain.components]
    with pytest.raises(ValueError, match="on_drift='ignore'"):
        create_pipeline("p", str(tmp_path / "root"), pattern, str(tmp_path / "serving"),
                        on_drift="ignore")
    out = str(tmp_path / "pipeline.json")
    compile_for_kubeflow(out, "example.invalid/dspnet:1", "gs://bucket/events/span-{SPAN}/*",
                         "gs://bucket/root", "gs://bucket/serving", on_drift="warn",
                         item_drift_threshold=0.2)
    tasks = json.loads(open(out).read())["pipelineSpec"]["root"]["dag"]["tasks"]
    parameters = tasks["SpanDriftGate"]["inputs"]["parameters"]
    assert parameters["on_drift"]["runtimeValue"]["constantValue"] == {"stringValue": "warn"}
    assert "SpanDriftGate" in tasks["Transform"]["dependentTasks"]


# --- the pipeline on generated days (LocalDagRunner, data stages only) ----------------------
def _days(tmp_path, drift_kind=None, days=3):
    from dspnet_tf.data.scene_world import SceneWorldConfig, generate_days

    config = SceneWorldConfig(users=200, items=60, categories=4, seed=1)
    _, paths = generate_days(config, str(tmp_path / "world"), days=days,
                             drift_day=days if drift_kind else None, drift_kind=drift_kind)
    return paths["pattern"]


def _run(tmp_path, pattern, **kwargs):
    from tfx_pipeline.pipeline import run_locally

    run_locally(pattern, str(tmp_path / "out"), data_stages_only=True,
                model_config={"max_len": 20}, beam_pipeline_args=BEAM_ARGS, **kwargs)


def _executions(tmp_path):
    """{component type name: [state name]} from the run's ML Metadata, and the gate's
    anomalies artifacts."""
    from ml_metadata.metadata_store import metadata_store
    from ml_metadata.proto import metadata_store_pb2
    from tfx.orchestration import metadata

    store = metadata_store.MetadataStore(metadata.sqlite_metadata_connection_config(
        str(tmp_path / "out" / "metadata.sqlite")))
    states = {}
    for execution in store.get_executions():
        name = store.get_execution_types_by_id([execution.type_id])[0].name.split(".")[-1]
        states.setdefault(name, []).append(
            metadata_store_pb2.Execution.State.Name(execution.last_known_state))
    anomalies = [a for a in store.get_artifacts_by_type("ExampleAnomalies")
                 if "drifted" in a.custom_properties]
    return states, anomalies


@pytest.mark.e2e
def test_a_drifted_day_stops_before_transform_naming_the_scene(tmp_path):
    from tfx_pipeline.drift import DataDriftError

    pattern = _days(tmp_path, drift_kind="scene_gone")
    with pytest.raises(DataDriftError, match=r"span 3 drifted from span 2: scene L-infinity "
                                             r"distance 0\.1\d* > threshold 0\.07 \(value that "
                                             r"changed most: live\)"):
        _run(tmp_path, pattern)
    states, _ = _executions(tmp_path)
    assert "Transform" not in states, states


@pytest.mark.e2e
def test_the_same_day_with_warn_goes_through_transform(tmp_path, caplog):
    pattern = _days(tmp_path, drift_kind="scene_gone")
    with caplog.at_level("WARNING"):
        _run(tmp_path, pattern, on_drift="warn")
    states, anomalies = _executions(tmp_path)
    assert states["Transform"] == ["COMPLETE"], states
    [gate] = anomalies
    assert gate.custom_properties["drifted"].int_value == 1
    assert gate.custom_properties["drift"].string_value.startswith(
        "span 3 drifted from span 2: scene L-infinity distance")
    assert "on_drift='warn': training goes on" in caplog.text
    from tensorflow_metadata.proto.v0 import anomalies_pb2

    recorded = anomalies_pb2.Anomalies.FromString(
        open(os.path.join(gate.uri, "Split-current", "SchemaDiff.pb"), "rb").read())
    assert "scene" in recorded.anomaly_info  # TFDV's own anomalies, for tfdv.display_anomalies


@pytest.mark.e2e
def test_an_ordinary_day_passes_and_the_first_span_is_not_compared(tmp_path, caplog):
    from tfx_pipeline import spans

    pattern = _days(tmp_path, days=2)
    with caplog.at_level("INFO"):
        _run(tmp_path, pattern, range_config=spans.static_range(1))
        _run(tmp_path, pattern)
    assert "span 1 is the first span; there is no previous span" in caplog.text
    states, anomalies = _executions(tmp_path)
    assert states["Transform"] == ["COMPLETE", "COMPLETE"], states
    assert [a.custom_properties["drifted"].int_value for a in anomalies] == [0, 0]
    assert "Drift check, span 2 vs span 1: " in caplog.text
