"""The pipeline's warm start: the Trainer's base model is the latest blessed model, carried into
the Kubeflow spec with the span pattern; --no-warm-start leaves it out."""

import json

import pytest

from dspnet_tf import cli

RESOLVER = "latest_blessed_model_resolver-model-resolver"


def _compile(tmp_path, *flags):
    out = str(tmp_path / "pipeline.json")
    assert cli.main(["pipeline", "compile", "--out", out, "--image", "example.invalid/dspnet:1",
                     "--data", "gs://bucket/events/span-{SPAN}/*", *flags]) == 0
    return json.loads(open(out).read())["pipelineSpec"]["root"]["dag"]["tasks"]


def _parameters(task):
    values = {name: p["runtimeValue"]["constantValue"]
              for name, p in task["inputs"]["parameters"].items()}
    return {name: value.get("stringValue", value) for name, value in values.items()}


def test_compiled_spec_carries_the_span_pattern_and_the_warm_start(tmp_path):
    tasks = _compile(tmp_path, "--warm-start-epochs", "2", "--epochs", "6")
    assert _parameters(tasks["SequenceExampleGen"])["input_pattern"] == "span-{SPAN}/*"
    trainer = tasks["Trainer"]["inputs"]
    assert trainer["artifacts"]["base_model"]["taskOutputArtifact"] == {
        "outputArtifactKey": "model", "producerTask": RESOLVER}
    # The same resolver gives the Evaluator its baseline: warm start and comparison agree.
    assert tasks["Evaluator"]["inputs"]["artifacts"]["baseline_model"]["taskOutputArtifact"][
        "producerTask"] == RESOLVER
    assert json.loads(_parameters(tasks["Trainer"])["custom_config"]) == {
        "epochs": 6, "warm_start_epochs": 2}


def test_no_warm_start_compiles_a_trainer_without_a_base_model(tmp_path):
    tasks = _compile(tmp_path, "--no-warm-start")
    assert "base_model" not in tasks["Trainer"]["inputs"]["artifacts"]
    assert "baseline_model" in tasks["Evaluator"]["inputs"]["artifacts"]  # still compared
    assert _parameters(tasks["SequenceExampleGen"])["input_pattern"] == "span-{SPAN}/*"


def test_create_pipeline_warm_starts_by_default(tmp_path):
    from tfx_pipeline.pipeline import create_pipeline

    def trainer(**kwargs):
        pipeline = create_pipeline("p", str(tmp_path / "root"), str(tmp_path / "events.csv"),
                                   str(tmp_path / "serving"), **kwargs)
        return next(c for c in pipeline.components if c.id == "Trainer")

    assert "base_model" in trainer().inputs
    assert "base_model" not in trainer(warm_start=False).inputs


def test_the_spec_a_recurring_run_submits_parses_as_kfp_reads_it(tmp_path):
    # docs/daily-training.md: a KFP recurring run takes the compiled file's pipelineSpec as
    # YAML. This is the KFP client's own reader (no server needed).
    import yaml
    from kfp.client.client import _extract_pipeline_yaml

    _compile(tmp_path)
    spec = json.loads(open(tmp_path / "pipeline.json").read())["pipelineSpec"]
    with open(tmp_path / "pipeline_spec.yaml", "w") as handle:
        yaml.safe_dump(spec, handle)
    parsed = _extract_pipeline_yaml(str(tmp_path / "pipeline_spec.yaml")).pipeline_spec
    trainer = parsed.root.dag.tasks["Trainer"]
    assert trainer.inputs.artifacts["base_model"].task_output_artifact.producer_task == RESOLVER


@pytest.mark.parametrize("flags,warm,epochs", [([], True, None),
                                               (["--warm-start-epochs", "3"], True, 3),
                                               (["--no-warm-start"], False, None)])
def test_pipeline_run_passes_the_warm_start_flags(tmp_path, monkeypatch, flags, warm, epochs):
    from tfx_pipeline import pipeline

    (tmp_path / "events.csv").write_text("user_id,item_id,scene,timestamp\nu,i,feed,1\n")
    seen = {}

    def fake_run_locally(data, out, **kwargs):
        seen.update(kwargs)
        return str(tmp_path / "serving")

    monkeypatch.setattr(pipeline, "run_locally", fake_run_locally)
    assert cli.main(["pipeline", "run", "--data", str(tmp_path / "events.csv"),
                     "--out", str(tmp_path / "out"), *flags]) == 0
    assert seen["warm_start"] is warm
    assert seen["model_config"].get("warm_start_epochs") == epochs
