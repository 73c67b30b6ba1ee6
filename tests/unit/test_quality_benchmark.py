"""The quality benchmark's outputs: results.json shape, oracle row, significance, files."""

import dataclasses
import json
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest

from dspnet_tf.data.event_log import read_event_log
from dspnet_tf.data.scene_world import SceneWorld, SceneWorldConfig
from dspnet_tf.data.splits import leave_one_out
from dspnet_tf.evaluation.quality_benchmark import (
    ABLATION_MODELS,
    PRIOR_MODELS,
    SWEEP_MODELS,
    model_config,
    oracle_ranks,
    run_quality_benchmark,
)


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
    # One oracle row per task table.
    assert len(re.findall(r"^\| oracle \| \d", (tmp_path / "results.md").read_text(),
                          re.MULTILINE)) == 2
    assert (tmp_path / "training_curves.png").stat().st_size > 1000
    assert results["split"]["users"] == 60
    # Both tasks, each in the top level's shape; the top level is the next-event task.
    assert set(saved["tasks"]) == {"next_event", "in_scene"}
    assert saved["tasks"]["next_event"]["models"] == saved["models"]
    in_scene = saved["tasks"]["in_scene"]
    assert set(in_scene["models"]) == set(saved["models"])
    assert "scene_acc@1" not in in_scene["models"]["dspnet"]  # the scene is given
    assert in_scene["oracle"]["ndcg@10"] >= saved["oracle"]["ndcg@10"] - 0.05
    assert in_scene["significance"]["baseline"] in {"sasrec", "most_popular"}
    # Models that do not read the target scene answer both tasks alike.
    assert in_scene["models"]["sasrec"]["ndcg@10"] == saved["models"]["sasrec"]["ndcg@10"]
    lift = saved["scene_lift"]
    expected = ((in_scene["models"]["dspnet"]["ndcg@10"]["mean"]
                 - saved["models"]["dspnet"]["ndcg@10"]["mean"])
                / (in_scene["oracle"]["ndcg@10"] - saved["oracle"]["ndcg@10"]))
    assert lift["captured"] == pytest.approx(expected)
    # The oracle-gap diagnostic of the default DSPnet: every part swapped, NDCG in [0, 1].
    gap = saved["oracle_gap"]["dspnet"]
    for key in ("model", "oracle", "oracle_scene_model_item", "model_scene_oracle_item",
                "model_in_scene", "oracle_in_scene", "model_own_next_event"):
        assert 0.0 <= gap[f"{key}_ndcg@10"] <= 1.0
    assert "Where the oracle gap lives" in (tmp_path / "results.md").read_text()
    # QUALITY.md's first section is printed from these files, not typed.
    script = pathlib.Path(__file__).parents[2] / "benchmarks" / "in_scene_summary.py"
    summary = subprocess.run([sys.executable, str(script), str(tmp_path)],
                             check=True, capture_output=True, text=True).stdout
    ratio = in_scene["models"]["dspnet"]["ndcg@10"]["mean"] / in_scene["oracle"]["ndcg@10"]
    assert f"| in-scene DSPnet / in-scene oracle | {ratio:.3f} |" in summary
    assert f"= {lift['captured']:.3f} |" in summary


def test_oracle_ranks_are_within_the_vocabulary(world_dir):
    split = leave_one_out(read_event_log(str(world_dir)))
    ranks = oracle_ranks(str(world_dir), split)
    for task in ("next_event", "in_scene"):
        assert len(ranks[task]["item_rank"]) == 60
        assert ranks[task]["item_rank"].min() >= 1
        assert ranks[task]["item_rank"].max() <= len(split.item_vocab) - 2
        assert ranks[task]["scene_rank"].max() <= 6
    # Told the scene, the oracle ranks the true item at least as well on average.
    assert ranks["in_scene"]["item_rank"].mean() <= ranks["next_event"]["item_rank"].mean()


def test_scene_popular_ranks_by_the_target_scenes_own_counts():
    from dspnet_tf.models.most_popular import MostPopular

    # Scene 2 saw item 5 three times, scene 3 saw item 6 twice; item 7 is the most popular overall.
    items = [[5, 5, 5, 6, 6, 7, 7, 7, 7]]
    scenes = [[2, 2, 2, 3, 3, 2, 3, 3, 3]]
    model = MostPopular(items, scenes, 8, 4, by_target_scene=True)
    history = {"item_ids": np.zeros((3, 1), np.int32), "scene_ids": np.zeros((3, 1), np.int32)}
    logits = model({**history, "target_scene": np.array([2, 3, 0])})["item_logits"].numpy()
    assert np.argsort(-logits[0])[:2].tolist() == [5, 7]  # scene 2: 5 (3x), then 7 (1x)
    assert np.argsort(-logits[1])[:2].tolist() == [7, 6]  # scene 3: 7 (3x), then 6 (2x)
    assert np.argmax(logits[2]) == 7  # no target scene: global popularity
    assert logits[:, 0].max() < -1e8  # padding is never ranked


def test_unknown_model_is_a_clear_error(world_dir, tmp_path):
    with pytest.raises(ValueError, match="unknown model"):
        run_quality_benchmark(str(world_dir), str(tmp_path), models=["bert5rec"])


TINY = {"max_len": 10, "item_dim": 8, "scene_dim": 4, "num_blocks": 1}


def test_studies_write_ablations_prior_and_a_paired_misalignment_sweep(world_dir, tmp_path):
    results = run_quality_benchmark(
        str(world_dir), str(tmp_path), models=["dspnet", "sasrec", "bert4rec", "most_popular"],
        seeds=[0], epochs=1, patience=1, batch_size=32, overrides=TINY,
        studies=["ablations", "prior", "misalignment"], misalignments=(0.0, 1.0), sweep_users=40)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved == json.loads(json.dumps(results))
    for name in ("dspnet_no_scene", "dspnet_no_sfe", "dspnet_no_ccr", "dspnet_ccr_uniform",
                 "dspnet_adv", "dspnet_prior_laplace",
                 "dspnet_prior_mixture", "bert4rec"):
        assert 0 <= saved["models"][name]["ndcg@10"]["mean"] <= 1, name
    assert set(saved["comparisons"]) == {"sasrec", "bert4rec", "most_popular"}
    sweep = saved["studies"]["misalignment"]
    assert [p["misalignment"] for p in sweep["points"]] == [0.0, 1.0]
    for point in sweep["points"]:
        assert 0 <= point["dspnet_vs_sasrec"]["p_value"] <= 1
        assert point["oracle_ndcg@10"] > 0
        assert isinstance(point["dspnet_significantly_below"], bool)
    # The sweep's worlds differ from the benchmark's world only in misalignment.
    world = json.loads((world_dir / "world.json").read_text())["scene_world"]
    swept = json.loads((tmp_path / "worlds" / "misalignment_1" / "world.json").read_text())
    assert {k: v for k, v in swept["scene_world"].items() if k not in ("misalignment", "users")} == \
        {k: v for k, v in world.items() if k not in ("misalignment", "users")}
    assert swept["scene_world"]["misalignment"] == 1.0 and swept["users"] == 40
    markdown = (tmp_path / "results.md").read_text()
    for heading in ("## Main table", "## Ablations", "## Prior sensitivity", "## Misalignment sweep"):
        assert heading in markdown
    for plot in ("main_table.png", "misalignment_sweep.png", "training_curves.png"):
        assert (tmp_path / plot).stat().st_size > 1000


def test_a_study_trains_its_reference_model_when_the_main_table_does_not(world_dir, tmp_path):
    # A study's table compares against the full model; without `dspnet` among the main models
    # the run used to train every study model and then fail while writing results.md.
    finished = []
    run_quality_benchmark(str(world_dir), str(tmp_path), models=["most_popular"], seeds=[0],
                          epochs=1, patience=1, batch_size=32, overrides=TINY, studies=["prior"],
                          progress=finished.append)
    assert [line.split(":")[1].strip() for line in finished] == [
        "most_popular seed 0", "dspnet seed 0", "dspnet_adv seed 0",
        "dspnet_prior_laplace seed 0", "dspnet_prior_mixture seed 0"]
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["studies"]["prior"] == ["dspnet", "dspnet_adv", "dspnet_prior_laplace",
                                         "dspnet_prior_mixture"]
    markdown = (tmp_path / "results.md").read_text()
    prior_table = markdown.split("## Prior sensitivity")[1].split("## Training time")[0]
    assert prior_table.count("| dspnet") == 8  # four models, in each task's table


def test_an_ablation_named_alone_writes_its_report_without_the_reference_model(world_dir,
                                                                            tmp_path):
    # An ablation named alone (`--models dspnet_adv --studies ""`) used to train the model,
    # write results.json, and then fail writing results.md, whose ablation table always began
    # with a dspnet row.
    run_quality_benchmark(str(world_dir), str(tmp_path), models=["dspnet_adv"], seeds=[0],
                          epochs=1, patience=1, batch_size=32, overrides=TINY, studies=[])
    saved = json.loads((tmp_path / "results.json").read_text())
    assert list(saved["models"]) == ["dspnet_adv"]
    ablation_table = (tmp_path / "results.md").read_text().split("## Ablations")[1]
    assert "| dspnet_adv |" in ablation_table and "| dspnet |" not in ablation_table


def test_the_prior_is_off_in_dspnet_and_on_in_its_ablation_and_every_prior_study_model(
        world_dir):
    split = leave_one_out(read_event_log(str(world_dir / "events.csv")))
    assert not model_config("dspnet", split, {}).use_adversarial
    assert "dspnet_adv" in ABLATION_MODELS and "dspnet_no_adv" not in ABLATION_MODELS
    priors = {name: model_config(name, split, {}) for name in PRIOR_MODELS}
    assert all(config.use_adversarial for config in priors.values())
    assert sorted(config.prior for config in priors.values()) == ["gaussian", "laplace", "mixture"]


def test_the_pointer_follows_the_training_logs_repeats(world_dir):
    log = read_event_log(str(world_dir / "events.csv"))
    split = leave_one_out(log)
    softmax = {"item_loss": "softmax"}
    assert model_config("dspnet", split, softmax).training_repeat_share > 0.01  # world returns
    assert model_config("dspnet", split, softmax).uses_repeat_pointer
    # The same users with every item of a history made distinct (as on MovieLens-100K):
    # nothing to copy, so the default DSPnet leaves the pointer out; explicit switches stay.
    distinct = leave_one_out(dataclasses.replace(
        log, item_ids=np.array([f"{u}:{k}" for k, u in enumerate(log.user_ids)])))
    assert model_config("dspnet", distinct, softmax).training_repeat_share == 0.0
    assert not model_config("dspnet", distinct, softmax).uses_repeat_pointer
    # The fair baselines follow the same rule: the pointer where the log has repeats.
    assert not model_config("sasrec_repeat", distinct, softmax).uses_repeat_pointer
    assert model_config("sasrec_repeat", split, softmax).uses_repeat_pointer
    assert model_config("dspnet", distinct, {**softmax, "training_repeat_share": 0.5}
                        ).uses_repeat_pointer


def test_a_sweep_needs_a_scene_world(tmp_path):
    log = tmp_path / "events.csv"
    log.write_text("user_id,item_id,scene,timestamp\n" + "".join(
        f"u{u},i{t},feed,{t}\n" for u in range(3) for t in range(4)))
    with pytest.raises(ValueError, match="misalignment sweep needs a scene-world"):
        run_quality_benchmark(str(log), str(tmp_path / "out"), studies=["misalignment"])
    with pytest.raises(ValueError, match="unknown study"):
        run_quality_benchmark(str(log), str(tmp_path / "out"), studies=["vibes"])


def test_runs_in_worker_processes_give_the_results_of_runs_in_this_process(world_dir, tmp_path):
    # Each run seeds itself, so training two at once in worker processes (one TensorFlow thread
    # each) must reproduce the one-at-a-time results, assembled under the same model and seed.
    def run(workers, out):
        finished = []
        results = run_quality_benchmark(
            str(world_dir), str(tmp_path / out), models=["dspnet", "sasrec", "most_popular"],
            seeds=[0, 1], epochs=2, patience=2, batch_size=32, overrides=TINY,
            studies=["misalignment"], misalignments=(0.5,), sweep_users=40,
            progress=finished.append, workers=workers)
        return results, finished

    inline, inline_lines = run(1, "inline")
    pooled, pooled_lines = run(2, "pooled")
    assert sorted(line.split(" (")[0] for line in pooled_lines) == \
        sorted(line.split(" (")[0] for line in inline_lines)
    assert len(inline_lines) == 3 * 2 + len(SWEEP_MODELS)  # main runs, then one sweep point
    for name in ("dspnet", "sasrec", "most_popular"):
        for metric in ("ndcg@10", "hr@10", "scene_acc@1"):
            assert pooled["models"][name][metric] == pytest.approx(
                inline["models"][name][metric], abs=1e-6), (name, metric)
    # The two models (and seeds) differ, so a mix-up in assembling the runs would show.
    assert inline["models"]["dspnet"]["ndcg@10"] != inline["models"]["sasrec"]["ndcg@10"]
    assert [len(t) for t in pooled["timing"].values()] == [2, 2, 2]
    assert pooled["settings"]["workers"] == 2 and inline["settings"]["workers"] == 1
    # The report says the runs' seconds were measured side by side.
    assert "2 runs trained at once" in (tmp_path / "pooled" / "results.md").read_text()
    assert "trained at once" not in (tmp_path / "inline" / "results.md").read_text()
    assert pooled["studies"]["misalignment"]["points"][0]["dspnet_vs_sasrec"] == pytest.approx(
        inline["studies"]["misalignment"]["points"][0]["dspnet_vs_sasrec"], abs=1e-6)
    in_scene = [run["studies"]["misalignment"]["points"][0]["tasks"]["in_scene"]
                for run in (pooled, inline)]
    assert in_scene[0]["dspnet_vs_baseline"] == pytest.approx(in_scene[1]["dspnet_vs_baseline"],
                                                              abs=1e-6)
    assert in_scene[0]["baseline"] == "sasrec_scene_repeat_target"


def test_a_bad_override_fails_before_any_run_names_the_field(world_dir, tmp_path):
    finished = []
    with pytest.raises(ValueError, match="dropout=2.0"):
        run_quality_benchmark(str(world_dir), str(tmp_path), models=["most_popular", "sasrec"],
                              seeds=[0], epochs=1, batch_size=32,
                              overrides=dict(TINY, dropout=2.0), progress=finished.append,
                              workers=2)
    assert finished == [] and not (tmp_path / "results.json").exists()


# Known answers of the benchmark's statistics: six users, two seeds per model.
SIX_USERS = {
    "dspnet": [[1, 1, 3, 3, 1, 20], [1, 3, 1, 3, 1, 25]],
    "sasrec": [[3, 3, 3, 3, 3, 1], [3, 3, 3, 3, 1, 3]],
    "most_popular": [[30] * 6, [30] * 6],
}


def _normal_wilcoxon_p(rank_sum_below, n, tie_groups):
    """Two-sided p of the signed-rank statistic T under the normal approximation (no
    continuity correction), with the variance's tie correction, written out by hand."""
    import math

    variance = n * (n + 1) * (2 * n + 1) / 24 - sum(t ** 3 - t for t in tie_groups) / 48
    z = (rank_sum_below - n * (n + 1) / 4) / math.sqrt(variance)
    return math.erfc(abs(z) / math.sqrt(2))


@pytest.mark.filterwarnings("ignore:Sample size too small")
def test_paired_test_is_a_wilcoxon_signed_rank_test_with_known_p_values():
    import scipy.stats

    from dspnet_tf.evaluation.quality_benchmark import paired_test

    # Differences 1..6, all positive: T = 0, variance 6*7*13/24 = 22.75.
    ours, theirs = np.arange(2.0, 8.0), np.ones(6)
    result = paired_test(ours, theirs)
    assert result["p_value"] == pytest.approx(_normal_wilcoxon_p(0, 6, []), rel=1e-9)
    assert result["p_value"] == pytest.approx(0.0277078, abs=1e-6)
    assert result["mean_difference"] == pytest.approx(3.5)
    assert result["ratio"] == pytest.approx(4.5)
    # A zero difference is dropped; tied |differences| share their mean rank:
    # d = .5, .25, .25, 0, .25, -.75 -> ranks 4, 2, 2, -, 2, 5; T = min(10, 5) = 5, n = 5.
    ours = np.array([1.0, 0.75, 0.75, 0.5, 1.0, 0.0])
    theirs = np.array([0.5, 0.5, 0.5, 0.5, 0.75, 0.75])
    result = paired_test(ours, theirs)
    expected = _normal_wilcoxon_p(5, 5, [3])
    assert result["p_value"] == pytest.approx(expected, rel=1e-9)
    assert result["p_value"] == pytest.approx(
        scipy.stats.wilcoxon(ours - theirs, method="approx").pvalue, rel=1e-9)
    assert result["mean_difference"] == pytest.approx(1 / 12)
    assert result["ratio"] == pytest.approx(8 / 7)
    # Never different: p = 1; a baseline scoring 0 everywhere has no ratio.
    assert paired_test(ours, ours.copy())["p_value"] == 1.0
    assert np.isnan(paired_test(ours, np.zeros(6))["ratio"])


@pytest.mark.filterwarnings("ignore:Sample size too small")
def test_task_table_summarises_seeds_and_tests_dspnet_against_the_best_baseline():
    from dspnet_tf.evaluation.quality_benchmark import NEXT_EVENT, _per_user, _task_table

    scene_ranks = np.array([1, 2, 1, 1, 3, 1])
    per_user = {name: [_per_user({"item_rank": np.array(r), "scene_rank": scene_ranks})
                       for r in runs] for name, runs in SIX_USERS.items()}
    oracle = {"item_rank": np.array([1, 1, 1, 2, 2, 3]), "scene_rank": np.ones(6)}
    table = _task_table(NEXT_EVENT, per_user, oracle, list(SIX_USERS))
    models = table["models"]
    # NDCG@10 = 1 / log2(rank + 1): rank 1 -> 1, 3 -> 0.5, 20, 25, 30 -> 0.
    assert models["dspnet"]["ndcg@10"] == {"mean": pytest.approx(4 / 6), "std": 0.0}
    assert models["sasrec"]["ndcg@10"] == {"mean": pytest.approx(3.5 / 6), "std": 0.0}
    assert models["most_popular"]["ndcg@10"] == {"mean": 0.0, "std": 0.0}
    # Seeds differ in HR@20 (rank 20 hits, 25 misses): mean of the seed means, population std.
    assert models["dspnet"]["hr@20"]["mean"] == pytest.approx(11 / 12)
    assert models["dspnet"]["hr@20"]["std"] == pytest.approx(1 / 12)
    mrr_seeds = [(3 + 2 / 3 + 1 / 20) / 6, (3 + 2 / 3 + 1 / 25) / 6]
    assert models["dspnet"]["mrr"]["mean"] == pytest.approx(np.mean(mrr_seeds))
    assert models["dspnet"]["mrr"]["std"] == pytest.approx(abs(mrr_seeds[0] - mrr_seeds[1]) / 2)
    assert models["dspnet"]["scene_acc@1"]["mean"] == pytest.approx(4 / 6)
    assert table["oracle"]["ndcg@10"] == pytest.approx(
        (3 + 2 * 0.6309297536 + 0.5) / 6)
    assert table["oracle"]["scene_acc@1"] == 1.0
    # The paired unit is the user's NDCG@10 averaged over seeds: dspnet [1, .75, .75, .5, 1, 0],
    # sasrec [.5, .5, .5, .5, .75, .75] (T = 5 of n = 5, three tied), most-popular all 0
    # (T = 0 of n = 5, tie groups of two and two).
    sasrec, popular = table["comparisons"]["sasrec"], table["comparisons"]["most_popular"]
    assert sasrec["p_value"] == pytest.approx(_normal_wilcoxon_p(5, 5, [3]), rel=1e-9)
    assert sasrec["p_value"] == pytest.approx(0.492207, abs=1e-6)
    assert popular["p_value"] == pytest.approx(_normal_wilcoxon_p(0, 5, [2, 2]), rel=1e-9)
    assert table["significance"] == {"model": "dspnet", "baseline": "sasrec",
                                     "metric": "ndcg@10", "p_value": sasrec["p_value"],
                                     "ratio": pytest.approx(8 / 7)}
