"""A killed `dspnet train` resumes from its last epoch checkpoint and ends where an uninterrupted
run ends (within tolerance); the saved model is never half-written."""

from __future__ import annotations

import glob
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import tensorflow as tf

pytestmark = pytest.mark.reliability

EPOCHS = 8
# --verbose: Keras prints "Epoch N/8" before each epoch it runs.
TRAIN = ["-m", "dspnet_tf.cli", "train", "--users", "3000", "--epochs", str(EPOCHS), "--max-len",
         "12", "--seed", "3", "--verbose"]
ITERATIONS = "optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE"


def _checkpoints(out):
    return glob.glob(str(out / ".backup" / "**" / "*.index"), recursive=True)


def _epochs_run(output):
    return [int(n) for n in re.findall(rf"^Epoch (\d+)/{EPOCHS}$", output, re.MULTILINE)]


def _saved_steps(out):
    """The optimizer step saved with the model (SavedModel variables)."""
    return int(tf.train.load_checkpoint(str(out / "model" / "variables" / "variables"))
               .get_tensor(ITERATIONS))


def _backup_state(out):
    """(last completed epoch, 0-based; optimizer step) of the newest epoch checkpoint."""
    folders = {os.path.dirname(p) for p in glob.glob(str(out / ".backup" / "**" / "checkpoint"),
                                                     recursive=True)}
    assert len(folders) == 1, folders
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(folders.pop()))
    return (int(reader.get_tensor("ckpt_saved_epoch/.ATTRIBUTES/VARIABLE_VALUE")),
            int(reader.get_tensor(f"model/{ITERATIONS}")))


def _run(out, **kwargs):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.Popen([sys.executable, *TRAIN, "--out", str(out)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs)


def test_sigkill_mid_training_then_rerun_resumes_and_matches(tmp_path):
    reference = _run(tmp_path / "reference")
    reference_output, _ = reference.communicate(timeout=600)
    assert reference.returncode == 0, reference_output
    expected = json.loads((tmp_path / "reference" / "metrics.json").read_text())
    assert not _checkpoints(tmp_path / "reference"), "deleted after a completed run"
    assert _epochs_run(reference_output) == list(range(1, EPOCHS + 1))
    total_steps = _saved_steps(tmp_path / "reference")
    assert total_steps > 0 and total_steps % EPOCHS == 0
    steps_per_epoch = total_steps // EPOCHS

    out = tmp_path / "killed"
    victim = _run(out)
    deadline = time.monotonic() + 600
    # Kill after the first epoch checkpoint exists, i.e. in a later epoch.
    while time.monotonic() < deadline and victim.poll() is None and not _checkpoints(out):
        time.sleep(0.1)
    time.sleep(1.0)
    assert victim.poll() is None, "training finished before it could be killed; make it longer"
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=60)
    assert victim.returncode == -signal.SIGKILL
    assert not (out / "model" / "saved_model.pb").exists()  # killed before saving
    # The checkpoint holds the epoch counter and the optimizer's step after that epoch.
    last_epoch, step = _backup_state(out)
    assert 0 <= last_epoch < EPOCHS - 1
    assert step == (last_epoch + 1) * steps_per_epoch

    rerun = _run(out)
    output, _ = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, output
    assert "resuming an interrupted run" in output
    # A resume, not a retrain: only the epochs after the checkpoint run, and the optimizer
    # continues from its restored step (a fresh optimizer would end short of the reference).
    assert _epochs_run(output) == list(range(last_epoch + 2, EPOCHS + 1)), output
    assert _saved_steps(out) == total_steps
    resumed = json.loads((out / "metrics.json").read_text())
    assert (out / "model" / "saved_model.pb").exists()
    assert not [p for p in os.listdir(out) if ".partial-" in p or ".old-" in p]
    print(f"uninterrupted {expected}\nkilled + resumed {resumed}")
    for metric in ("hr@10", "ndcg@10"):
        assert abs(resumed[metric] - expected[metric]) <= 0.05, (metric, resumed, expected)
