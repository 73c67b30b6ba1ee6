"""End to end: a tiny generated event log through the whole TFX pipeline, then a served answer."""

import glob
import os

import numpy as np
import pytest
import tensorflow as tf

pytestmark = pytest.mark.e2e


def test_pipeline_runs_pushes_and_the_pushed_model_answers_raw_ids(tmp_path):
    from ml_metadata.metadata_store import metadata_store
    from tfx.orchestration import metadata

    from dspnet_tf.data.scene_world import SceneWorld, SceneWorldConfig
    from tfx_pipeline.pipeline import run_locally

    data = tmp_path / "data"
    log = SceneWorld(SceneWorldConfig(users=150, items=80, categories=4, seed=1)).generate()
    log.write(str(data))
    out = tmp_path / "out"
    serving_dir = run_locally(
        str(data / "events.csv"), str(out),
        model_config={"max_len": 20, "item_dim": 16, "scene_dim": 8, "num_blocks": 1,
                      "epochs": 1, "batch_size": 64, "top_k": 5})

    store = metadata_store.MetadataStore(
        metadata.sqlite_metadata_connection_config(str(out / "metadata.sqlite")))
    types = {store.get_execution_types_by_id([e.type_id])[0].name for e in store.get_executions()}
    for component in ("SequenceExampleGen", "StatisticsGen", "SchemaGen", "ExampleValidator",
                      "AnomaliesGate", "Transform", "Trainer", "Evaluator", "Pusher"):
        assert any(component in t for t in types), (component, types)

    schema_files = glob.glob(str(out / "pipeline_root" / "SchemaGen" / "schema" / "*" / "schema.pbtxt"))
    schema_text = open(schema_files[0]).read()
    assert "item_history" in schema_text and "scene_history" in schema_text

    versions = [d for d in os.listdir(serving_dir) if d.isdigit()]
    assert versions, os.listdir(serving_dir)
    version_dir = os.path.join(serving_dir, max(versions, key=int))
    assert os.path.exists(os.path.join(version_dir, "saved_model.pb"))

    loaded = tf.saved_model.load(version_dir)
    serve = loaded.signatures["serving_default"]
    example = tf.train.Example(features=tf.train.Features(feature={
        "item_history": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"i00003", b"i00010", b"nope"])),
        "scene_history": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"feed", b"search", b"cart"])),
    }))
    empty = tf.train.Example()
    answer = serve(examples=tf.constant([example.SerializeToString(), empty.SerializeToString()]))
    ids = answer["item_ids"].numpy()
    assert ids.shape == (2, 5)
    known = set(f"i{i:05d}".encode() for i in range(80))
    assert all(i in known for i in ids.ravel())
    probs = answer["scene_probs"].numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert set(answer["scene_ids"].numpy()[0]) <= {n.encode() for n in
                                                   ("feed", "search", "live", "favorites", "cart", "messages")}
    from serving.testing import check_contract, saved_model_cli_signatures

    check_contract(saved_model_cli_signatures(version_dir), top_k=5, num_scenes=probs.shape[1],
                   max_len=20)
    raw = loaded.signatures["predict_raw"](item_history=tf.constant([["", "i00003", "i00010"]]),
                                           scene_history=tf.constant([["", "feed", "search"]]))
    assert raw["item_ids"].shape == (1, 5)

    # The Evaluator computed full-ranking metrics on the eval split and blessed the model.
    import tensorflow_model_analysis as tfma

    evaluations = glob.glob(str(out / "pipeline_root" / "Evaluator" / "evaluation" / "*"))
    metrics = tfma.load_metrics(evaluations[0])
    values = {}
    for record in metrics:
        for key_and_value in record.metric_keys_and_values:
            values[key_and_value.key.name] = key_and_value.value.double_value.value
    assert 0.0 <= values["ndcg@10"] <= values["hr@10"] <= 1.0, values
    assert values["example_count"] == 150
    blessings = glob.glob(str(out / "pipeline_root" / "Evaluator" / "blessing" / "*" / "BLESSED"))
    assert blessings

    # A rerun with an impossible floor: unchanged components come from the cache, the Trainer
    # trains again warm-started from the model the first run pushed (its base model changed),
    # the Evaluator refuses to bless, and Pusher pushes nothing new.
    before = sorted(os.listdir(serving_dir))
    executions_before = len(store.get_executions())
    run_locally(str(data / "events.csv"), str(out), ndcg_floor=1.5,
                model_config={"max_len": 20, "item_dim": 16, "scene_dim": 8, "num_blocks": 1,
                              "epochs": 1, "batch_size": 64, "top_k": 5})
    assert sorted(os.listdir(serving_dir)) == before
    assert glob.glob(str(out / "pipeline_root" / "Evaluator" / "blessing" / "*" / "NOT_BLESSED"))
    from ml_metadata.proto import metadata_store_pb2

    trainer_runs = [e for e in store.get_executions()
                    if "Trainer" in store.get_execution_types_by_id([e.type_id])[0].name]
    assert len(store.get_executions()) > executions_before
    assert [e.last_known_state for e in trainer_runs] == [
        metadata_store_pb2.Execution.COMPLETE, metadata_store_pb2.Execution.COMPLETE]
    import json

    records = [json.load(open(out / "pipeline_root" / "Trainer" / "model_run" / str(e.id)
                              / "warm_start.json")) for e in trainer_runs]
    assert records[0]["base_model"] is None and records[0]["epochs"] == 1
    assert records[1]["base_model"] == str(out / "pipeline_root" / "Trainer" / "model"
                                           / str(trainer_runs[0].id) / "Format-Serving")
    assert records[1]["rows_new"] == {"items": 0, "scenes": 0} and not records[1]["fresh"]
    transforms = [e for e in store.get_executions()
                  if "Transform" in store.get_execution_types_by_id([e.type_id])[0].name]
    assert [e.last_known_state for e in transforms] == [
        metadata_store_pb2.Execution.COMPLETE, metadata_store_pb2.Execution.CACHED]
