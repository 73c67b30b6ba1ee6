"""`dspnet demo --tiny`: the whole flow, its printed answers from the served model, its report."""

import json
import os
import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.e2e


def test_tiny_demo_serves_answers_and_writes_a_report_from_its_numbers(tmp_path):
    out = tmp_path / "demo"
    result = subprocess.run([sys.executable, "-m", "dspnet_tf.cli", "demo", "--tiny", "--out",
                             str(out)], capture_output=True, text=True, timeout=900,
                            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    printed = result.stdout
    # Stage by stage; the recommendations are printed between the server start and its stop.
    for stage in range(1, 6):
        assert f"[{stage}/5]" in printed
    ready, stopped = printed.index("server ready on 127.0.0.1"), printed.index("server stopped")
    assert ready < printed.index("top 5:") < stopped
    assert "Traceback" not in result.stderr

    report = (out / "report.md").read_text()
    assert "| oracle (exact posterior) |" in report and "| dspnet (TFX pipeline, pushed) |" in report
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report)
    assert {"training_curves.png", "scene_confusion.png", "latent_space.png",
            "serving_latency.png"} <= set(images)
    for image in images:
        assert (out / image).stat().st_size > 2_000, image

    # The table is the run's numbers: the served model's scene accuracy is in run.json.
    run = json.loads((out / "run.json").read_text())
    dspnet_row = run["quality"]["rows"][0]
    assert f"{dspnet_row['ndcg@10']:.4f}" in report
    assert len(run["latency_ms"]) == 30 and run["scene_confusion_users"] == 100

    # `dspnet report` redraws everything from run.json.
    for image in images:
        if "/" not in image:
            (out / image).unlink()
    redo = subprocess.run([sys.executable, "-m", "dspnet_tf.cli", "report", "--run", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert redo.returncode == 0, redo.stderr
    assert all((out / image).exists() for image in images)
