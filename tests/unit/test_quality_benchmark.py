"""The quality benchmark's outputs: results.json shape, oracle row, significance, files."""

import json

import pytest

from dspnet_tf.data.scene_world import SceneWorld, SceneWorldConfig
from dspnet_tf.evaluation.quality_benchmark import oracle_ranks, run_quality_benchmark
from dspnet_tf.data.event_log import read_event_log
from dspnet_tf.data.splits import leave_one_out


@pytest.fixture(scope="module")
def world_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("world")
    SceneWorld(SceneWorldConfig(users=60, items=50, categories=3, seed=4)).generate().write(str(folder))
    return folder


def test_results_have_the_documented_shape(world_dir, tmp_path):
    results = run_quality_benchmark(str(world_dir), str(tmp_path), models=["sasrec", "most_popular", "dspnet"],
                                    seeds=[0, 1], epochs=1, patience=1, batch_size=32,
                                    overrides={"max_len": 10, "item_dim": 8, "scene_dim": 4,
                                               "num_blocks": 1})
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["seeds"] == [0, 1] and set(saved["models"]) == {"sasrec", "most_popular", "dspnet"}
    for metrics in saved["models"].values():
        for name in ("ndcg@10", "hr@10", "mrr", "scene_acc@1"):
            assert set(metrics[name]) == {"mean", "std"} and 0 <= metrics[name]["mean"] <= 1
    assert saved["oracle"]["ndcg@10"] > 0
    assert saved["significance"]["model"] == "dspnet" and 0 <= saved["significance"]["p_value"] <= 1
    assert saved["significance"]["baseline"] in {"sasrec", "most_popular"}
    assert (tmp_path / "results.md").read_text().count("| oracle |") == 1
    assert (tmp_path / "training_curves.png").stat().st_size > 1000
    assert results["split"]["users"] == 60


def test_oracle_ranks_are_within_the_vocabulary(world_dir):
    split = leave_one_out(read_event_log(str(world_dir)))
    ranks = oracle_ranks(str(world_dir), split)
    assert len(ranks["item_rank"]) == 60
    assert ranks["item_rank"].min() >= 1 and ranks["item_rank"].max() <= len(split.item_vocab) - 2
    assert ranks["scene_rank"].max() <= 6


def test_unknown_model_is_a_clear_error(world_dir, tmp_path):
    with pytest.raises(ValueError, match="unknown model"):
        run_quality_benchmark(str(world_dir), str(tmp_path), models=["bert5rec"])
