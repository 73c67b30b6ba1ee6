"""One version, everywhere: dspnet_tf/_version.py, setup.py, `dspnet --version`, the exports."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import dspnet_tf
from dspnet_tf import _version, cli
from dspnet_tf.export import METADATA_FILE, read_export_metadata

REPO = Path(__file__).resolve().parents[2]


def test_the_package_and_setup_py_read_the_one_version_file():
    assert dspnet_tf.__version__ == _version.__version__
    assert re.fullmatch(r"\d+\.\d+\.\d+", dspnet_tf.__version__)
    result = subprocess.run([sys.executable, "setup.py", "--version"], cwd=REPO,
                            capture_output=True, text=True, check=True)
    assert result.stdout.strip().splitlines()[-1] == dspnet_tf.__version__


def test_cli_version_prints_the_program_and_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out == f"dspnet {dspnet_tf.__version__}\n"


def test_an_exported_model_carries_the_version(tmp_path):
    from serving.testing import export_untrained_model  # pylint: disable=import-outside-toplevel

    export_dir = export_untrained_model(str(tmp_path / "1"))
    with open(os.path.join(export_dir, METADATA_FILE), encoding="utf-8") as handle:
        on_disk = json.load(handle)  # plain JSON: readable without TensorFlow
    assert on_disk == read_export_metadata(export_dir)
    assert on_disk["dspnet_tf_version"] == dspnet_tf.__version__
    assert "serving_default" in on_disk["signatures"]
    # Next to the SavedModel, not in it: the version folder still loads as before.
    assert os.path.isfile(os.path.join(export_dir, "saved_model.pb"))


def test_an_export_without_metadata_reads_as_empty(tmp_path):
    assert read_export_metadata(str(tmp_path)) == {}
