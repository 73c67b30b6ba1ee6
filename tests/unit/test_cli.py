"""The dspnet command line: help texts and user errors."""

import subprocess
import sys

import pytest

from dspnet_tf import cli

SUBCOMMANDS = ["demo", "train", "generate scene-world"]
PIPELINE_COMMANDS = ["pipeline run", "pipeline compile"]


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_help_explains_options_and_defaults(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(command.split() + ["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "--seed" in text and "default" in text


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_bad_value_is_a_short_error_with_nonzero_exit(command, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "dspnet_tf.cli", *command.split(), "--users", "0", "--out", str(tmp_path)],
        capture_output=True, text=True)
    assert result.returncode == 2
    assert "expected a positive integer, got 0" in result.stderr
    assert "Traceback" not in result.stderr


def test_unwritable_output_is_a_one_line_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = subprocess.run(
        [sys.executable, "-m", "dspnet_tf.cli", "train", "--out", str(blocker / "sub")],
        capture_output=True, text=True)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("dspnet train: error:"), result.stderr
    assert "Traceback" not in result.stderr


def test_generate_scene_world_writes_the_standard_log(tmp_path):
    from dspnet_tf.data.event_log import read_event_log

    assert cli.main(["generate", "scene-world", "--users", "30", "--items", "100",
                     "--categories", "4", "--out", str(tmp_path)]) == 0
    log = read_event_log(str(tmp_path / "events.csv"))
    assert len(set(log.user_ids)) == 30
    assert (tmp_path / "world.json").exists()


def test_generate_bad_misalignment_is_a_one_line_error(tmp_path, capsys):
    assert cli.main(["generate", "scene-world", "--misalignment", "2", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "misalignment" in err[0]


def test_generate_days_writes_a_span_per_day_and_pipeline_flags_check_the_pattern(tmp_path,
                                                                                  capsys):
    from dspnet_tf.data.event_log import read_event_log

    out = tmp_path / "days"
    assert cli.main(["generate", "scene-world", "--users", "30", "--items", "60", "--categories",
                     "4", "--days", "2", "--drift-day", "2", "--drift-kind", "scene_gone",
                     "--out", str(out)]) == 0
    assert "span-{SPAN}" in capsys.readouterr().out
    day_2 = read_event_log(str(out / "events" / "span-2"))
    assert len(day_2.scenes) and "live" not in set(day_2.scenes)  # the drift: live is gone
    # A span the data does not have, and --span without a pattern: one-line errors naming them.
    pattern = str(out / "events" / "span-{SPAN}" / "*")
    assert cli.main(["pipeline", "run", "--data", pattern, "--span", "5",
                     "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "span 5" in err[0] and "1-2" in err[0]
    assert cli.main(["pipeline", "run", "--data", str(out / "events" / "span-1"), "--span", "1",
                     "--out", str(tmp_path / "run")]) == 2
    assert "{SPAN}" in capsys.readouterr().err
    assert cli.main(["generate", "scene-world", "--drift-day", "2", "--drift-kind", "scene_gone",
                     "--out", str(tmp_path / "x")]) == 2
    assert "--days" in capsys.readouterr().err


@pytest.mark.parametrize("command", PIPELINE_COMMANDS)
def test_pipeline_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(command.split() + ["--help"])
    assert exit_info.value.code == 0
    assert "--beam-arg" in capsys.readouterr().out


def test_pipeline_run_missing_data_is_a_one_line_error(tmp_path, capsys):
    assert cli.main(["pipeline", "run", "--data", str(tmp_path / "nope"), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no such file or folder" in err[0]


def test_pipeline_compile_wrong_suffix_is_a_one_line_error(tmp_path, capsys):
    assert cli.main(["pipeline", "compile", "--out", str(tmp_path / "p.txt"), "--image", "x"]) == 2
    assert "expected a .json or .yaml" in capsys.readouterr().err


def test_benchmark_quality_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["benchmark", "quality", "--help"])
    assert exit_info.value.code == 0
    assert "--models" in capsys.readouterr().out


def test_benchmark_quality_seeds_and_protocol_defaults(tmp_path, monkeypatch):
    from dspnet_tf.evaluation import quality_benchmark

    calls = []

    def record(data, out_dir, **kwargs):
        calls.append(kwargs)
        (tmp_path / "out").mkdir(exist_ok=True)
        (tmp_path / "out" / "results.md").write_text("table\n")

    monkeypatch.setattr(quality_benchmark, "run_quality_benchmark", record)
    base = ["benchmark", "quality", "--data", str(tmp_path), "--out", str(tmp_path / "out")]
    assert cli.main(base) == 0
    assert cli.main(base + ["--seeds", "2", "--first-seed", "2"]) == 0
    assert [c["seeds"] for c in calls] == [[0, 1, 2], [2, 3]]
    assert calls[0]["overrides"] == {"item_loss": "auto"} and calls[0]["epochs"] == 15
    # Both tasks and every fair baseline by default (--quick too); the CLI's spelled-out list
    # is the benchmark's own.
    assert calls[0]["tasks"] == ["next_event", "in_scene"]
    assert calls[0]["models"] == list(quality_benchmark.MAIN_MODELS)
    assert list(cli.DEFAULT_QUALITY_MODELS) == list(quality_benchmark.MAIN_MODELS)
    assert cli.main(base + ["--quick"]) == 0
    assert calls[-1]["tasks"] == ["next_event", "in_scene"] and calls[-1]["seeds"] == [0]
    assert cli.main(base + ["--tasks", "in_scene"]) == 0
    assert calls[-1]["tasks"] == ["in_scene"]


def test_benchmark_quality_unknown_model_is_a_one_line_error(tmp_path, capsys):
    (tmp_path / "events.csv").write_text("user_id,item_id,scene,timestamp\nu1,a,feed,1\n")
    code = cli.main(["benchmark", "quality", "--data", str(tmp_path), "--models", "bert5rec",
                     "--out", str(tmp_path / "out")])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown model" in err[0]


def _error_cases(tmp_path):
    """One user mistake per subcommand: argv and a phrase the message must contain."""
    earlier_run = tmp_path / "run"
    (earlier_run / "pipeline").mkdir(parents=True)
    (earlier_run / ".dspnet-demo-run").write_text("{}")  # written by the earlier demo run
    blocker = tmp_path / "file"
    blocker.write_text("x")
    return {
        "demo": (["demo", "--out", str(earlier_run)], "earlier run"),
        "train": (["train", "--out", str(blocker / "sub"), "--users", "20", "--epochs", "1"],
                  "error"),
        "generate scene-world": (["generate", "scene-world", "--misalignment", "2", "--out",
                                  str(tmp_path / "w")], "misalignment"),
        "pipeline run": (["pipeline", "run", "--data", str(tmp_path / "none.csv"), "--out",
                          str(tmp_path / "o")], "none.csv"),
        "pipeline compile": (["pipeline", "compile", "--out", str(tmp_path / "p.txt"), "--image",
                              "img"], ".json or .yaml"),
        "benchmark quality": (["benchmark", "quality", "--data", str(tmp_path / "none.csv"),
                               "--out", str(tmp_path / "q")], "none.csv"),
        "serve": (["serve", "--model-base-path", str(tmp_path / "missing")], "no such folder"),
        "recommend": (["recommend", "--items", "a,b", "--scenes", "feed"], "one scene per item"),
        "report": (["report", "--run", str(tmp_path)], "run.json"),
        "evaluate": (["evaluate", "--model", str(tmp_path), "--data", str(blocker)],
                     "saved_model.pb"),
    }


ALL_COMMANDS = ["demo", "train", "generate scene-world", "pipeline run", "pipeline compile",
                "benchmark quality", "serve", "recommend", "report", "evaluate"]


@pytest.mark.parametrize("command", ALL_COMMANDS)
def test_every_subcommand_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(command.split() + ["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith("usage: dspnet " + command)
    assert "--" in text and len(text.splitlines()) > 4


@pytest.mark.parametrize("command", ALL_COMMANDS)
def test_every_subcommand_reports_a_user_mistake_in_one_line(command, tmp_path, capsys):
    argv, phrase = _error_cases(tmp_path)[command]
    assert cli.main(argv) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"dspnet {command.split()[0]}: error:") and phrase in lines[0]


def test_top_level_help_lists_every_subcommand(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    text = capsys.readouterr().out
    for command in {c.split()[0] for c in ALL_COMMANDS}:
        assert command in text


def test_multi_worker_training_without_tf_config_is_a_one_line_error(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    code = cli.main(["train", "--distribution", "multi_worker", "--epochs", "1",
                     "--out", str(tmp_path / "out")])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "TF_CONFIG" in err[0]


def test_benchmark_quality_studies_are_checked_before_training(tmp_path, capsys):
    (tmp_path / "events.csv").write_text("user_id,item_id,scene,timestamp\nu1,a,feed,1\n")
    code = cli.main(["benchmark", "quality", "--data", str(tmp_path), "--studies", "misalignment",
                     "--out", str(tmp_path / "out")])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "scene-world" in err[0]


@pytest.mark.parametrize("blessed", [True, False])
def test_pipeline_run_says_whether_this_run_pushed_a_model(blessed, tmp_path, capsys, monkeypatch):
    # The pipeline itself is faked: what matters is the message when a rerun's model is not
    # blessed (the served version is unchanged, and the user has to know).
    from tfx_pipeline import pipeline

    (tmp_path / "events.csv").write_text("user_id,item_id,scene,timestamp\nu,i,feed,1\n")
    serving = tmp_path / "out" / "serving" / "dspnet"
    (serving / "100").mkdir(parents=True)
    (serving / "100" / "saved_model.pb").write_bytes(b"")

    def fake_run_locally(data, out, **kwargs):
        if blessed:
            (serving / "200").mkdir()
            (serving / "200" / "saved_model.pb").write_bytes(b"")
        return str(serving)

    monkeypatch.setattr(pipeline, "run_locally", fake_run_locally)
    assert cli.main(["pipeline", "run", "--data", str(tmp_path / "events.csv"),
                     "--out", str(tmp_path / "out")]) == 0
    text = capsys.readouterr().out
    if blessed:
        assert "pushed version 200" in text and "no new model" not in text
    else:
        assert "no new model pushed (still serving version 100" in text and "did not bless" in text


def test_train_with_the_mirrored_strategy_trains_what_the_default_strategy_trains(tmp_path,
                                                                                   monkeypatch):
    import json

    import numpy as np
    import tensorflow as tf

    from dspnet_tf import resilience

    models = {}

    def keep_model(target, write):
        # write is the trained model's bound save; saving is left out (seconds, and tested by
        # the SIGKILL resume test).
        models[target] = write.__self__
        return target

    monkeypatch.setattr(resilience, "replace_directory_atomically", keep_model)
    metrics = {}
    for distribution in ("default", "mirrored"):
        out = tmp_path / distribution
        assert cli.main(["train", "--distribution", distribution, "--users", "40", "--epochs",
                         "2", "--max-len", "6", "--seed", "3", "--out", str(out)]) == 0
        metrics[distribution] = json.loads((out / "metrics.json").read_text())
    default, mirrored = (models[str(tmp_path / d / "model")] for d in ("default", "mirrored"))
    assert isinstance(mirrored.distribute_strategy, tf.distribute.MirroredStrategy)
    assert not isinstance(default.distribute_strategy, tf.distribute.MirroredStrategy)
    steps = int(default.optimizer.iterations.numpy())
    assert int(mirrored.optimizer.iterations.numpy()) == steps > 0
    if mirrored.distribute_strategy.num_replicas_in_sync != 1:
        pytest.skip("several devices: the replicas split each batch, so the steps differ")
    # One replica (CPU): the same steps on the same data give the same model.
    for a, b in zip(default.trainable_weights, mirrored.trainable_weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-5, err_msg=a.name)
    assert metrics["mirrored"] == pytest.approx(metrics["default"], abs=1e-6)
