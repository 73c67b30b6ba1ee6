"""notebooks/quickstart.ipynb runs top to bottom (tiny settings) and produces its plot."""

import os
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
