"""benchmarks/learnable_ceiling.py ranks as the quality benchmark does, and its ceiling holds."""

import importlib.util
import pathlib

import numpy as np
import pytest

from dspnet_tf.data.event_log import read_event_log
from dspnet_tf.data.scene_world import SceneWorld, SceneWorldConfig
from dspnet_tf.data.splits import leave_one_out
from dspnet_tf.evaluation.quality_benchmark import oracle_ranks

_SCRIPT = pathlib.Path(__file__).resolve().parents[2] / "benchmarks" / "learnable_ceiling.py"
_spec = importlib.util.spec_from_file_location("learnable_ceiling", _SCRIPT)
learnable_ceiling = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(learnable_ceiling)


@pytest.fixture(scope="module")
def world_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("world")
    SceneWorld(SceneWorldConfig(users=80, items=60, categories=3, seed=3)).generate().write(str(folder))
    return folder


def test_exact_ranks_are_the_benchmarks_oracle_ranks(world_dir):
    scored = learnable_ceiling.score(str(world_dir), draws=500, seed=0)
    expected = oracle_ranks(str(world_dir), leave_one_out(read_event_log(str(world_dir))))
    for task in ("next_event", "in_scene"):
        np.testing.assert_array_equal(scored[f"exact_{task}_rank"], expected[task]["item_rank"])
    np.testing.assert_array_equal(scored["exact_scene_hit"],
                                  expected["next_event"]["scene_rank"] == 1)


def test_summary_is_the_mean_of_the_users_ndcg(world_dir):
    scored = learnable_ceiling.score(str(world_dir), draws=500, seed=0)
    summary = learnable_ceiling.summarize(scored, {}, draws=500)
    for oracle in ("exact", "population"):
        rank = scored[f"{oracle}_in_scene_rank"]
        expected = np.mean([1 / np.log2(r + 1) if r <= 10 else 0.0 for r in rank])
        assert summary[oracle]["in_scene_ndcg@10"]["mean"] == pytest.approx(expected)
    assert summary["ratios"]["in_scene_ndcg@10"] == pytest.approx(
        summary["population"]["in_scene_ndcg@10"]["mean"]
        / summary["exact"]["in_scene_ndcg@10"]["mean"])
    assert summary["users"] == 80 and summary["ess"]["preference_ess"]["median"] >= 1.0
