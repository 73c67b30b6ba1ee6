"""benchmarks/time_to_best.py: its summary matches a direct numpy computation."""

import argparse
import importlib.util
import json
import pathlib

import numpy as np

_SCRIPT = pathlib.Path(__file__).resolve().parents[2] / "benchmarks" / "time_to_best.py"
_spec = importlib.util.spec_from_file_location("time_to_best", _SCRIPT)
time_to_best = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(time_to_best)


def _write_run(out, model, precision, seed, seconds, epoch, ndcg, resolved):
    folder = out / f"{model}_{precision}_seed{seed}"
    folder.mkdir()
    results = {
        "models": {model: {"ndcg@10": {"mean": ndcg, "std": 0.0}}},
        "timing": {model: [{"seconds_to_best": seconds, "best_epoch": epoch,
                            "seconds_per_epoch": seconds / epoch,
                            "best_valid_ndcg@10": ndcg - 0.002}]},
        "settings": {"overrides": {"item_loss": "softmax", "precision": resolved}},
    }
    (folder / "results.json").write_text(json.dumps(results))


def _args(out, seeds):
    return argparse.Namespace(out=str(out), learning_rate=2e-3, window_stride=10, patience=10,
                              epochs=200, seeds=seeds, precisions=["float32", "auto"],
                              sasrec_seeds=[0], dspnet="unused", summarize=True)


def test_summary_matches_numpy(tmp_path):
    rng = np.random.default_rng(1)
    seconds = {"float32": rng.uniform(150, 250, 3), "auto": rng.uniform(150, 250, 3)}
    ndcg = {"float32": rng.uniform(0.06, 0.07, 3), "auto": rng.uniform(0.06, 0.07, 3)}
    _write_run(tmp_path, "sasrec", "float32", 0, 120.0, 24, 0.065, "float32")
    for precision, resolved in (("float32", "float32"), ("auto", "mixed_bfloat16")):
        for seed in range(3):
            _write_run(tmp_path, "dspnet", precision, seed, seconds[precision][seed], 20 + seed,
                       ndcg[precision][seed], resolved)
    args = _args(tmp_path, [0, 1, 2])
    runs = [time_to_best.run_one(m, p, s, args)
            for m, p, s in [("sasrec", "float32", 0)]
            + [("dspnet", p, s) for p in ("float32", "auto") for s in range(3)]]
    summary = time_to_best.summarize(runs, args)

    auto = summary["configs"]["dspnet auto"]
    assert auto["resolved_precision"] == "mixed_bfloat16"
    np.testing.assert_allclose(auto["seconds_to_best"]["mean"], seconds["auto"].mean())
    np.testing.assert_allclose(auto["seconds_to_best"]["std"], seconds["auto"].std(ddof=1))
    np.testing.assert_allclose(auto["recbole_over_this"], 2580.0 / seconds["auto"].mean())
    np.testing.assert_allclose(auto["this_over_sasrec"], seconds["auto"].mean() / 120.0)
    bound = 2 * np.sqrt(ndcg["auto"].var(ddof=1) / 3 + ndcg["float32"].var(ddof=1) / 3)
    difference = ndcg["auto"].mean() - ndcg["float32"].mean()
    np.testing.assert_allclose(auto["vs_float32"]["bound"], bound)
    np.testing.assert_allclose(auto["vs_float32"]["difference"], difference)
    assert auto["vs_float32"]["within_noise"] == (abs(difference) <= bound)
    assert "vs_float32" not in summary["configs"]["dspnet float32"]

    time_to_best.write_summary(summary, str(tmp_path))
    table = (tmp_path / "summary.md").read_text()
    assert f"{seconds['auto'].mean():.0f} ±" in table
    assert json.loads((tmp_path / "summary.json").read_text())["learning_rate"] == 2e-3


def test_a_run_far_outside_the_noise_is_flagged(tmp_path):
    for seed, (a, b) in enumerate([(0.060, 0.040), (0.061, 0.041), (0.062, 0.042)]):
        _write_run(tmp_path, "dspnet", "float32", seed, 200.0, 20, a, "float32")
        _write_run(tmp_path, "dspnet", "auto", seed, 190.0, 20, b, "mixed_bfloat16")
    args = _args(tmp_path, [0, 1, 2])
    runs = [time_to_best.run_one("dspnet", p, s, args) for p in ("float32", "auto")
            for s in range(3)]
    summary = time_to_best.summarize(runs, args)
    check = summary["configs"]["dspnet auto"]["vs_float32"]
    assert not check["within_noise"]
    np.testing.assert_allclose(check["difference"], -0.020)
    assert "this_over_sasrec" not in summary["configs"]["dspnet auto"]  # no SASRec run
