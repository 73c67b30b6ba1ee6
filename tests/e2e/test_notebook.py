"""The notebooks run top to bottom with small settings: quickstart.ipynb produces its plot;
bring_your_own_log.ipynb trains, serves and answers in-scene requests."""

import json
import os
import re
import signal
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

pytestmark = pytest.mark.e2e

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "quickstart.ipynb"


def test_quickstart_notebook_executes_and_plots(tmp_path, monkeypatch):
    monkeypatch.setenv("DSPNET_QUICKSTART_TINY", "1")
    monkeypatch.setenv("DSPNET_QUICKSTART_DIR", str(tmp_path))
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "3")
    notebook = nbformat.read(str(NOTEBOOK), as_version=4)
    NotebookClient(notebook, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    plot = tmp_path / "quickstart_training.png"
    assert plot.exists() and plot.stat().st_size > 5_000
    assert (tmp_path / "model" / "1" / "saved_model.pb").exists()
    # The last cell shows the served model's top 5 raw item ids.
    last = notebook.cells[-1].outputs[-1]["data"]["text/plain"]
    assert last.count("'i") == 5, last
    assert os.path.exists(tmp_path / "world" / "events.csv")


BYOL_NOTEBOOK = NOTEBOOK.parent / "bring_your_own_log.ipynb"


def test_bring_your_own_log_notebook_pipeline_serve_and_in_scene_requests(tmp_path):
    """The notebook on a small log: CSV -> `dspnet pipeline run` -> `dspnet serve` -> requests.

    Small parameters go in a cell right after the one tagged "parameters" (papermill's way);
    a last cell, added here only, prints the served lists so they can be checked."""
    out = tmp_path / "out"
    notebook = nbformat.read(str(BYOL_NOTEBOOK), as_version=4)
    tagged = [i for i, cell in enumerate(notebook.cells)
              if "parameters" in cell.metadata.get("tags", [])]
    assert len(tagged) == 1, tagged
    notebook.cells.insert(tagged[0] + 1, nbformat.v4.new_code_cell(
        f"NUM_USERS, NUM_ITEMS, EPOCHS, MAX_LEN = 150, 100, 1, 20\n"
        f"ITEM_DIM, SCENE_DIM, BATCH_SIZE = 16, 8, 64\n"
        f"OUT_DIR = {str(out)!r}"))
    notebook.cells.append(nbformat.v4.new_code_cell(
        "print('SERVED ' + json.dumps({s: a.items for s, a in lists.items()}))"))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    try:
        NotebookClient(notebook, timeout=300, kernel_name="python3",
                       resources={"metadata": {"path": str(tmp_path)}}).execute(env=env)
    finally:
        # Should a cell fail before the notebook's own SIGTERM, stop the server it started.
        pid_file = out / "server.pid"
        if pid_file.exists():
            try:
                os.kill(int(pid_file.read_text()), signal.SIGKILL)
            except ProcessLookupError:
                pass
    text = "\n".join(o.get("text", "") for cell in notebook.cells if cell.cell_type == "code"
                     for o in cell.outputs if o.get("output_type") == "stream")
    assert not [o for cell in notebook.cells if cell.cell_type == "code"
                for o in cell.outputs if o.get("output_type") == "error"]

    assert (out / "my_events.csv").exists()
    assert "==> pushed version" in text, text
    versions = [d for d in os.listdir(out / "pipeline" / "serving" / "dspnet") if d.isdigit()]
    assert len(versions) == 1, versions
    # The Evaluator's numbers, both tasks, as the notebook prints them.
    ndcg = {task: float(value) for task, value in
            re.findall(r"^(next-event|in-scene)\s+NDCG@10 (\d\.\d{4})", text, re.M)}
    assert set(ndcg) == {"next-event", "in-scene"}, text
    assert all(0.0 <= value <= 1.0 for value in ndcg.values()), ndcg
    assert re.search(r"eval users: 150 +blessed: True", text), text

    # Served over gRPC: a non-empty list per target scene, from the log's own catalog.
    served = json.loads(re.search(r"^SERVED (.*)$", text, re.M)[1])
    assert set(served) == {"feed", "search", "cart", "(no target)"}, served
    catalog = {f"sku-{i:04d}" for i in range(100)}
    for scene, listed in served.items():
        assert len(listed) == 10 and set(listed) <= catalog, (scene, listed)
    assert re.search(r"gRPC 127\.0\.0\.1:\d+, REST http://127\.0\.0\.1:\d+: serving version "
                     + versions[0], text), text
    # Next-scene probabilities, the REST answer and a clean SIGTERM stop.
    assert len(re.findall(r"^  (feed|search|cart) +0\.\d{3}$", text, re.M)) == 3, text
    assert "REST top items: ['sku-" in text and "same as the gRPC answer without a target: True" \
        in text, text
    assert "server exit code: 0" in text, text
