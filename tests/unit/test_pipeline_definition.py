"""Pipeline definition: component graph, Kubeflow compilation, the anomalies gate."""

import json
import os

import pytest
import yaml


def test_create_pipeline_wires_every_component(tmp_path):
    from tfx_pipeline.pipeline import create_pipeline

    pipeline = create_pipeline("p", str(tmp_path / "root"), str(tmp_path / "data"),
                               str(tmp_path / "serving"), str(tmp_path / "m.sqlite"),
                               model_config={"max_len": 10, "epochs": 1})
    ids = [c.id for c in pipeline.components]
    assert sorted(ids) == sorted(["SequenceExampleGen", "StatisticsGen", "SchemaGen",
                                  "ExampleValidator", "AnomaliesGate", "Transform", "Trainer",
                                  "latest_blessed_model_resolver", "Evaluator", "Pusher"])
    assert ids.index("Pusher") > ids.index("Evaluator") > ids.index("Trainer") > ids.index("Transform")
    transform = pipeline.components[ids.index("Transform")]
    assert "AnomaliesGate" in {n.id for n in transform.upstream_nodes}


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_compile_for_kubeflow_writes_a_pipeline_spec(tmp_path, suffix):
    from tfx_pipeline.pipeline import compile_for_kubeflow

    out = str(tmp_path / f"pipeline{suffix}")
    compile_for_kubeflow(out, "example.invalid/dspnet:1", "gs://bucket/data", "gs://bucket/root",
                         "gs://bucket/serving", model_config={"epochs": 1},
                         beam_pipeline_args=["--runner=DataflowRunner"])
    with open(out) as handle:
        spec = json.load(handle) if suffix == ".json" else yaml.safe_load(handle)
    assert {"displayName", "pipelineSpec", "runtimeConfig"} <= set(spec)
    text = json.dumps(spec)
    assert "example.invalid/dspnet:1" in text and "--runner=DataflowRunner" in text
    tasks = spec["pipelineSpec"]["root"]["dag"]["tasks"]
    for component in ("SequenceExampleGen", "StatisticsGen", "SchemaGen", "ExampleValidator",
                      "AnomaliesGate", "Transform", "Trainer", "Evaluator", "Pusher"):
        assert component in tasks, (component, sorted(tasks))
    images = {c["container"]["image"] for c in spec["pipelineSpec"]["deploymentSpec"]["executors"].values()
              if "container" in c}
    assert images == {"example.invalid/dspnet:1"}
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


def test_anomalies_gate_describes_each_anomaly(tmp_path):
    from tensorflow_metadata.proto.v0 import anomalies_pb2

    from tfx_pipeline.anomalies_gate import describe_anomalies

    (tmp_path / "Split-eval").mkdir()
    proto = anomalies_pb2.Anomalies()
    proto.anomaly_info["scene_history"].description = "Examples contain values missing from the schema: teleport."
    (tmp_path / "Split-eval" / "SchemaDiff.pb").write_bytes(proto.SerializeToString())
    (tmp_path / "Split-train").mkdir()
    (tmp_path / "Split-train" / "SchemaDiff.pb").write_bytes(anomalies_pb2.Anomalies().SerializeToString())
    problems = describe_anomalies(str(tmp_path), ["train", "eval"])
    assert problems == ["eval: scene_history: Examples contain values missing from the schema: teleport."]


def _write_anomalies(folder, by_split):
    """ExampleValidator's output layout: Split-<name>/SchemaDiff.pb per split."""
    from tensorflow_metadata.proto.v0 import anomalies_pb2

    for split, features in by_split.items():
        proto = anomalies_pb2.Anomalies()
        for feature, description in features.items():
            proto.anomaly_info[feature].description = description
        (folder / f"Split-{split}").mkdir(parents=True)
        (folder / f"Split-{split}" / "SchemaDiff.pb").write_bytes(proto.SerializeToString())


def _run_gate(uri, splits):
    """Runs the AnomaliesGate component's executor as the orchestrator does."""
    from tfx import v1 as tfx
    from tfx.types import artifact_utils

    from tfx_pipeline.anomalies_gate import AnomaliesGate

    anomalies = tfx.types.standard_artifacts.ExampleAnomalies()
    anomalies.uri = str(uri)
    anomalies.split_names = artifact_utils.encode_split_names(splits)
    executor = AnomaliesGate.EXECUTOR_SPEC.executor_class()
    return executor.Do({"anomalies": [anomalies]}, {}, {})


def test_anomalies_gate_component_fails_the_run_on_anomalies(tmp_path):
    from tfx_pipeline.anomalies_gate import DataAnomaliesError

    _write_anomalies(tmp_path, {
        "train": {},
        "eval": {"scene_history": "Examples contain values missing from the schema: teleport.",
                 "item_history": "Unexpectedly short list."}})
    with pytest.raises(DataAnomaliesError) as raised:
        _run_gate(tmp_path, ["train", "eval"])
    message = str(raised.value)
    assert message.splitlines()[1:] == [
        "  eval: item_history: Unexpectedly short list.",
        "  eval: scene_history: Examples contain values missing from the schema: teleport."]


def test_anomalies_gate_component_passes_clean_splits(tmp_path):
    # Empty anomaly protos in every split (what ExampleValidator writes for good data), and an
    # anomaly in a split the artifact does not list: the gate lets the run go on.
    _write_anomalies(tmp_path, {"train": {}, "eval": {},
                                "unlisted": {"item_history": "not read"}})
    assert not _run_gate(tmp_path, ["train", "eval"])
