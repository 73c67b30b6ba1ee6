"""`dspnet serve` in its own process (SIGTERM stops it cleanly) and `dspnet recommend`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import portpicker
import pytest

from dspnet_tf import cli
from serving.client import DSPnetClient
from serving.testing import install_version


@pytest.mark.e2e
def test_serve_recommend_and_sigterm(exported_versions, tmp_path, capsys):
    base = tmp_path / "base"
    base.mkdir()
    install_version(str(base), 1, exported_versions[1])
    port, rest_port = portpicker.pick_unused_port(), portpicker.pick_unused_port()
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    process = subprocess.Popen(
        [sys.executable, "-m", "dspnet_tf.cli", "serve", "--model-base-path", str(base),
         "--port", str(port), "--rest-port", str(rest_port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        with DSPnetClient(f"127.0.0.1:{port}") as client:
            assert client.wait_until_ready(timeout=120) == 1
        assert cli.main(["recommend", "--server", f"127.0.0.1:{port}", "--items",
                         "i00001,i00002", "--scenes", "feed,live", "--k", "3", "--json"]) == 0
        answer = json.loads(capsys.readouterr().out)
        assert answer["model_version"] == 1 and len(answer["items"]) == 3
        assert cli.main(["recommend", "--server", f"127.0.0.1:{port}", "--items", "a,b",
                         "--scenes", "feed"]) == 2
        assert "one scene per item" in capsys.readouterr().err
        assert cli.main(["recommend", "--server", f"127.0.0.1:{port}", "--model-name", "nope",
                         "--items", "a", "--scenes", "feed"]) == 2
        err = capsys.readouterr().err
        assert "NOT_FOUND" in err and len(err.strip().splitlines()) == 1
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=60)
    assert process.returncode == 0, output
    assert "received SIGTERM" in output and "server stopped" in output
    assert f"gRPC 127.0.0.1:{port}" in output


def test_serve_refuses_a_missing_base_path(tmp_path, capsys):
    assert cli.main(["serve", "--model-base-path", str(tmp_path / "missing")]) == 2
    assert "no such folder" in capsys.readouterr().err
    assert cli.main(["serve", "--model-base-path", str(tmp_path), "--version-policy",
                     "newest"]) == 2
    assert "version policy" in capsys.readouterr().err
