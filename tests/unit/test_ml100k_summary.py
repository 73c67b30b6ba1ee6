"""benchmarks/ml100k_summary.py: the five-seed figures it reports match a direct computation."""

import importlib.util
import json
import pathlib

import numpy as np
import pytest

_SCRIPT = pathlib.Path(__file__).resolve().parents[2] / "benchmarks" / "ml100k_summary.py"
_spec = importlib.util.spec_from_file_location("ml100k_summary", _SCRIPT)
ml100k_summary = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ml100k_summary)


def _write_run(out_dir, model, seed, ndcg, hr, best_epoch):
    folder = out_dir / f"{model}_seed{seed}"
    folder.mkdir()
    results = {
        "models": {model: {"ndcg@10": {"mean": ndcg, "std": 0.0},
                           "hr@10": {"mean": hr, "std": 0.0}}},
        "timing": {model: [{"best_epoch": best_epoch, "seconds_to_best": 10.0 * best_epoch,
                            "seconds_per_epoch": 10.0, "best_valid_ndcg@10": ndcg + 0.001}]},
        "settings": {"epochs": 200},
    }
    (folder / "results.json").write_text(json.dumps(results))


def test_summary_matches_numpy_and_ignores_unfinished_runs(tmp_path):
    rng = np.random.default_rng(0)
    dspnet = rng.uniform(0.05, 0.07, size=3)
    sasrec = rng.uniform(0.05, 0.07, size=4)
    for seed, value in enumerate(dspnet):
        _write_run(tmp_path, "dspnet", seed, value, 2 * value, 20 + seed)
    for seed, value in enumerate(sasrec):
        _write_run(tmp_path, "sasrec", seed, value, 2 * value, 30 + seed)
    (tmp_path / "dspnet_seed3").mkdir()  # a run still going: no results.json yet

    summary = ml100k_summary.summarise(ml100k_summary.load_runs(tmp_path), "dspnet", "sasrec")

    assert summary["models"]["dspnet"]["seeds"] == [0, 1, 2]
    assert summary["models"]["sasrec"]["ndcg@10"]["mean"] == pytest.approx(sasrec.mean())
    assert summary["models"]["sasrec"]["ndcg@10"]["std"] == pytest.approx(sasrec.std(ddof=1))
    paired = summary["paired"]
    assert paired["seeds"] == [0, 1, 2]  # only the seeds both models finished
    difference = dspnet - sasrec[:3]
    assert paired["mean_difference"] == pytest.approx(difference.mean())
    assert paired["standard_error"] == pytest.approx(difference.std(ddof=1) / np.sqrt(3))
    assert paired["ndcg@10_ratio"] == pytest.approx(dspnet.mean() / sasrec[:3].mean())
    table = ml100k_summary.markdown(summary)
    assert f"| 3 | - | - | - | - | {sasrec[3]:.4f} |" in table


def test_a_result_of_another_shape_is_named(tmp_path):
    folder = tmp_path / "dspnet_seed0"
    folder.mkdir()
    (folder / "results.json").write_text(json.dumps({"models": {"sasrec": {}}}))
    with pytest.raises(SystemExit, match="dspnet_seed0/results.json"):
        ml100k_summary.load_runs(tmp_path)


def test_baseline_runs_can_come_from_another_folder(tmp_path, monkeypatch, capsys):
    new, old = tmp_path / "new", tmp_path / "old"
    new.mkdir(), old.mkdir()
    for seed in range(2):
        _write_run(new, "dspnet", seed, 0.06 + 0.01 * seed, 0.12, 20)
        _write_run(new, "sasrec", seed, 0.5, 0.9, 20)  # ignored: the baseline is read from old/
        _write_run(old, "sasrec", seed, 0.05 + 0.01 * seed, 0.11, 30)
        _write_run(old, "dspnet", seed, 0.9, 0.9, 30)  # ignored: the compared model is new/'s
    monkeypatch.setattr("sys.argv", ["ml100k_summary.py", str(new), "--baseline-dir", str(old)])
    ml100k_summary.main()
    summary = json.loads((new / "summary.json").read_text())
    assert summary["models"]["sasrec"]["ndcg@10"]["mean"] == pytest.approx(0.055)
    assert summary["models"]["dspnet"]["ndcg@10"]["mean"] == pytest.approx(0.065)
    assert summary["paired"]["mean_difference"] == pytest.approx(0.01)
    assert "0.0650" in capsys.readouterr().out


def test_a_seed_filter_reports_those_seeds_only(tmp_path, monkeypatch, capsys):
    values = {seed: 0.05 + 0.001 * seed for seed in range(6)}
    for seed, value in values.items():
        _write_run(tmp_path, "dspnet", seed, value, 0.1, 20)
        _write_run(tmp_path, "sasrec", seed, value - 0.002, 0.1, 20)
    out = tmp_path / "first.json"
    monkeypatch.setattr("sys.argv", ["ml100k_summary.py", str(tmp_path), "--seeds", "0-2,5",
                                     "--summary", str(out)])
    ml100k_summary.main()
    summary = json.loads(out.read_text())
    assert summary["paired"]["seeds"] == [0, 1, 2, 5]
    expected = np.mean([values[s] for s in (0, 1, 2, 5)])
    assert summary["models"]["dspnet"]["ndcg@10"]["mean"] == pytest.approx(expected)
    assert summary["paired"]["mean_difference"] == pytest.approx(0.002)
    assert not (tmp_path / "summary.json").exists()  # --summary moved it
    assert "| 3 |" not in capsys.readouterr().out


@pytest.mark.parametrize("spec", ["0-", "a", "4-2", "1,,2"])
def test_a_malformed_seed_list_is_refused_by_name(spec):
    with pytest.raises(ValueError, match=repr(spec)):
        ml100k_summary.parse_seeds(spec)


def test_a_seed_list_with_no_finished_run_says_so(tmp_path, monkeypatch):
    _write_run(tmp_path, "dspnet", 0, 0.06, 0.1, 20)
    monkeypatch.setattr("sys.argv", ["ml100k_summary.py", str(tmp_path), "--seeds", "7"])
    with pytest.raises(SystemExit, match="for seeds 7"):
        ml100k_summary.main()
