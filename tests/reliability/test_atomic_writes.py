"""Output files are replaced whole or not at all: a write that fails half way (a full disk,
simulated with RLIMIT_FSIZE) leaves the earlier file intact and no temporary file behind."""

from __future__ import annotations

import contextlib
import json
import os
import resource
import signal

import pytest

from dspnet_tf.data.event_log import EventLog
from dspnet_tf.data.scene_world import SceneWorld, SceneWorldConfig

pytestmark = pytest.mark.reliability


@contextlib.contextmanager
def disk_full_after(limit_bytes: int):
    """Writes past `limit_bytes` in any file fail with EFBIG, as on a full disk."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # an error, not a killed process
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)


def _listing(folder):
    return sorted(os.listdir(folder))


def test_atomic_write_keeps_the_old_file_when_the_write_fails(tmp_path):
    from dspnet_tf.resilience import atomic_write

    target = tmp_path / "metrics.json"
    target.write_text('{"old": 1}')
    with pytest.raises(OSError), disk_full_after(1000):
        with atomic_write(str(target)) as handle:
            handle.write("x" * 100_000)
    assert target.read_text() == '{"old": 1}' and _listing(tmp_path) == ["metrics.json"]
    with pytest.raises(RuntimeError):  # any error inside the block, not only OSError
        with atomic_write(str(target)) as handle:
            handle.write('{"half":')
            raise RuntimeError("interrupted")
    assert target.read_text() == '{"old": 1}' and _listing(tmp_path) == ["metrics.json"]
    with atomic_write(str(target)) as handle:
        handle.write('{"new": 2}')
    assert target.read_text() == '{"new": 2}' and _listing(tmp_path) == ["metrics.json"]


def test_scene_world_write_that_fails_keeps_the_earlier_world(tmp_path):
    small = SceneWorld(SceneWorldConfig(users=20, items=30, categories=3, seed=1)).generate()
    small.write(str(tmp_path))
    before = {name: (tmp_path / name).read_bytes() for name in ("events.csv", "world.json")}
    big = SceneWorld(SceneWorldConfig(users=300, items=30, categories=3, seed=2)).generate()
    # Enough for neither file of the bigger world: events.csv fails first.
    with pytest.raises(OSError), disk_full_after(max(len(b) for b in before.values()) + 100):
        big.write(str(tmp_path))
    assert {name: (tmp_path / name).read_bytes() for name in before} == before
    assert _listing(tmp_path) == ["events.csv", "world.json"]  # no temporary file left


def test_world_json_write_that_fails_keeps_the_earlier_one(tmp_path, monkeypatch):
    from dspnet_tf.data import scene_world

    log = SceneWorld(SceneWorldConfig(users=20, items=30, categories=3, seed=1)).generate()
    log.write(str(tmp_path))
    before = (tmp_path / "world.json").read_text()
    # The events are written, then the world's text is not a string: the write fails after
    # world.json was opened.
    monkeypatch.setattr(scene_world.SceneWorld, "to_json", lambda self, **extra: object())
    with pytest.raises(TypeError):
        log.write(str(tmp_path))
    assert (tmp_path / "world.json").read_text() == before
    assert _listing(tmp_path) == ["events.csv", "world.json"]


def test_event_log_write_csv_that_fails_keeps_the_old_file(tmp_path):
    path = tmp_path / "events.csv"
    EventLog.from_rows([("u1", "a", "feed", 1)]).write_csv(str(path))
    before = path.read_bytes()
    many = EventLog.from_rows([(f"u{i}", "a", "feed", i) for i in range(5000)])
    with pytest.raises(OSError), disk_full_after(1000):
        many.write_csv(str(path))
    assert path.read_bytes() == before and _listing(tmp_path) == ["events.csv"]


def test_train_metrics_json_write_that_fails_keeps_the_earlier_one(tmp_path, monkeypatch,
                                                                   capsys):
    from dspnet_tf import cli

    class FakeModel:
        def save(self, path):
            os.makedirs(path)

    metrics = {f"metric_{i}": i / 7 for i in range(200)}  # a few KB of JSON
    monkeypatch.setattr(cli, "_train_toy", lambda args: (FakeModel(), None, None, metrics))
    (tmp_path / "metrics.json").write_text('{"old": 1}')
    argv = ["train", "--out", str(tmp_path), "--epochs", "1"]
    with disk_full_after(500):
        assert cli.main(argv) == 2  # one error line, as every OSError
    assert (tmp_path / "metrics.json").read_text() == '{"old": 1}'
    assert not [name for name in _listing(tmp_path) if "metrics" in name and
                name != "metrics.json"]
    assert cli.main(argv) == 0
    assert json.loads((tmp_path / "metrics.json").read_text()) == metrics
