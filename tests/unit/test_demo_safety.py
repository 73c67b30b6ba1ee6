"""`dspnet demo` deletes only its own earlier runs, and its server cannot block on its log."""

from __future__ import annotations

import sys
import time

import pytest

from dspnet_tf import cli, demo

MARKER = ".dspnet-demo-run"


@pytest.fixture
def fake_run(monkeypatch):
    """Replaces the (minutes long) demo by one that writes a report; records its calls."""
    calls = []

    def run_demo(out_dir, settings=None, say=print):
        calls.append(out_dir)
        (__import__("pathlib").Path(out_dir) / "report.md").write_text("new run\n")
        return out_dir

    monkeypatch.setattr(demo, "run_demo", run_demo)
    return calls


def _tree(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.mark.parametrize("overwrite", [True, False])
def test_folder_with_unrelated_files_is_refused_and_untouched(tmp_path, fake_run, capsys,
                                                              overwrite):
    # e.g. `--out .` or `--out ~` by mistake: a folder the demo did not write.
    (tmp_path / "thesis.tex").write_text("years of work")
    (tmp_path / "pipeline").mkdir()  # even one with a name the demo uses
    (tmp_path / "pipeline" / "notes.txt").write_text("mine")
    before = _tree(tmp_path)
    argv = ["demo", "--tiny", "--out", str(tmp_path)] + (["--overwrite"] if overwrite else [])
    assert cli.main(argv) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("dspnet demo: error:"), lines
    assert str(tmp_path) in lines[0] and MARKER in lines[0]
    assert _tree(tmp_path) == before and (tmp_path / "thesis.tex").read_text() == "years of work"
    assert not fake_run


def test_earlier_run_is_replaced_with_overwrite_and_kept_without(tmp_path, fake_run, capsys):
    out = tmp_path / "demo-out"
    assert cli.main(["demo", "--tiny", "--out", str(out)]) == 0  # a new folder: no flag needed
    assert (out / MARKER).is_file() and (out / "report.md").read_text() == "new run\n"
    (out / "pipeline").mkdir()
    (out / "pipeline" / "old.txt").write_text("an earlier run's file")
    assert cli.main(["demo", "--tiny", "--out", str(out)]) == 2  # no --overwrite: kept
    assert "earlier run" in capsys.readouterr().err and (out / "pipeline" / "old.txt").exists()
    assert cli.main(["demo", "--tiny", "--out", str(out), "--overwrite"]) == 0
    assert _tree(out) == [MARKER, "report.md"]  # the earlier run's files are gone
    assert fake_run == [str(out), str(out)]


def test_empty_existing_folder_is_used(tmp_path, fake_run):
    assert cli.main(["demo", "--tiny", "--out", str(tmp_path)]) == 0
    assert _tree(tmp_path) == [MARKER, "report.md"]


def test_the_demo_server_writes_its_output_to_a_log_file_not_a_pipe(tmp_path, monkeypatch):
    """A pipe nobody reads fills at 64 KB and blocks the server mid-write; a file does not."""
    done = tmp_path / "done"
    fake = tmp_path / "fake_python"  # stands in for `python -m dspnet_tf.cli serve ...`
    fake.write_text(f"#!{sys.executable}\nimport os, sys, time\n"
                    "sys.stderr.write('server log line\\n' * 100_000)\nsys.stderr.flush()\n"
                    "open(os.environ['FAKE_SERVER_DONE'], 'w').write('done')\ntime.sleep(60)\n")
    fake.chmod(0o755)
    monkeypatch.setattr(demo.sys, "executable", str(fake))
    monkeypatch.setenv("FAKE_SERVER_DONE", str(done))
    log = tmp_path / "server.log"
    process, _ = demo._serve(str(tmp_path), str(log))
    try:
        deadline = time.time() + 30
        while not done.exists() and time.time() < deadline:
            time.sleep(0.2)
        assert done.exists(), "the server blocked writing its output"
        assert log.read_text().count("server log line") == 100_000
    finally:
        process.kill()
        process.wait()
