"""Three simulated days through the pipeline, each run warm-started from the last blessed model:
items launched on day 3 (unknown to days 1 and 2) are recommended after day 3's run."""

import glob
import json
import os

import numpy as np
import pytest

pytestmark = pytest.mark.e2e

MODEL_CONFIG = {"max_len": 20, "item_dim": 16, "scene_dim": 8, "num_blocks": 1, "epochs": 3,
                "batch_size": 64, "top_k": 10}


def _trainer_records(out):
    """warm_start.json of every Trainer run so far, oldest first (run folders are numbered)."""
    runs = glob.glob(os.path.join(out, "pipeline_root", "Trainer", "model_run", "*",
                                  "warm_start.json"))
    runs.sort(key=lambda path: int(path.split(os.sep)[-2]))
    return [json.load(open(path)) for path in runs]


def _vocabulary(export_dir):
    return json.load(open(os.path.join(export_dir, "assets.extra",
                                       "dspnet_vocabularies.json")))["items"]


def test_items_launched_on_day_3_are_recommended_after_its_warm_started_run(tmp_path):
    import tensorflow as tf

    from dspnet_tf.data.scene_world import SceneWorld, SceneWorldConfig, generate_days
    from serving.model_manager import model_versions
    from tfx_pipeline import spans
    from tfx_pipeline.pipeline import run_locally

    config = SceneWorldConfig(users=150, items=80, categories=4, seed=1)
    log, paths = generate_days(config, str(tmp_path / "data"), days=3, drift_day=3,
                               drift_kind="new_items")
    launched = {f"i{i:05d}" for i in SceneWorld(config).launch_items()}
    out = str(tmp_path / "out")
    pushed = []
    for day in (1, 2, 3):
        # A launch moves the item distribution past the drift gate's threshold by design.
        serving_dir = run_locally(paths["pattern"], out, range_config=spans.static_range(day),
                                  on_drift="warn", model_config=MODEL_CONFIG)
        versions = model_versions(serving_dir)
        pushed.append(versions[max(versions)] if versions else None)

    records = _trainer_records(out)
    assert len(records) == 3
    assert records[0]["base_model"] is None and records[0]["epochs"] == 3  # day 1: scratch
    for record in records[1:]:
        assert record["base_model"], record  # warm-started from the latest blessed model
        assert record["epochs"] == 1 and not record["fresh"], record
    # Each day's model vocabulary, from the Trainer's exports in execution order.
    exports = sorted(glob.glob(os.path.join(out, "pipeline_root", "Trainer", "model", "*",
                                            "Format-Serving")),
                     key=lambda path: int(path.split(os.sep)[-2]))
    vocabularies = [_vocabulary(path) for path in exports]
    assert not launched & set(vocabularies[1]) and launched <= set(vocabularies[2])
    for day in (2, 3):
        record = records[day - 1]
        base = set(_vocabulary(record["base_model"]))
        real = vocabularies[day - 1][2:]
        assert record["rows_new"]["items"] == sum(1 for t in real if t not in base), record
        assert record["rows_carried"]["items"] == sum(1 for t in real if t in base), record
    assert records[2]["rows_new"]["items"] >= len(launched)

    # Day 3's model was blessed and pushed, and it recommends the launched items.
    assert pushed[2] is not None and pushed[2] != pushed[1]
    histories = []
    for user in range(config.users):
        items, scenes, days = log.sequence(user, through_day=3)
        if days and days[-1] == 3:
            histories.append(([f"i{i:05d}" for i in items[-20:]],
                              [config.scene_names[s] for s in scenes[-20:]]))
    width = max(len(h[0]) for h in histories)
    pad = lambda rows: tf.constant([[""] * (width - len(r)) + list(r) for r in rows])  # noqa: E731

    def share_with_launched(version_dir):
        serve = tf.saved_model.load(version_dir).signatures["predict_raw"]
        answer = serve(item_history=pad([h[0] for h in histories]),
                       scene_history=pad([h[1] for h in histories]))
        lists = [[i.decode() for i in row] for row in answer["item_ids"].numpy()]
        return np.mean([bool(launched & set(row)) for row in lists])

    before, after = share_with_launched(pushed[1]), share_with_launched(pushed[2])
    assert before == 0.0  # day 2's model cannot know them
    # They are a quarter of day 3's events (the catalog's most popular items): most top-10
    # lists of the users active that day should hold at least one.
    assert after > 0.5, (after, len(histories))
