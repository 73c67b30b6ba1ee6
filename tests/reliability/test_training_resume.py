"""A killed `dspnet train` resumes from its last epoch checkpoint and ends where an uninterrupted
run ends (within tolerance); the saved model is never half-written."""

from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.reliability

TRAIN = ["-m", "dspnet_tf.cli", "train", "--users", "3000", "--epochs", "8", "--max-len", "12",
         "--seed", "3"]


def _checkpoints(out):
    return glob.glob(str(out / ".backup" / "**" / "*.index"), recursive=True)


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

    rerun = _run(out)
    output, _ = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, output
    assert "resuming an interrupted run" in output
    resumed = json.loads((out / "metrics.json").read_text())
    assert (out / "model" / "saved_model.pb").exists()
    assert not [p for p in os.listdir(out) if ".partial-" in p or ".old-" in p]
    print(f"uninterrupted {expected}\nkilled + resumed {resumed}")
    for metric in ("hr@10", "ndcg@10"):
        assert abs(resumed[metric] - expected[metric]) <= 0.05, (metric, resumed, expected)
