"""A pipeline run SIGKILLed while Transform, Trainer or Pusher runs, then started again, completes
with one pushed version, and a server polling the serving directory never sees a partial one.

What happens on a rerun (tfx 1.16, LocalDagRunner, SQLite ML Metadata), as these tests check:

* The killed component's execution stays RUNNING in ML Metadata for good; nothing marks it
  failed. The rerun is a new pipeline run: its launcher registers a new execution for every
  node, and a node whose inputs and properties match a COMPLETE execution (the cache context)
  is published as CACHED with that execution's outputs. Components that finished before the
  kill therefore come from the cache; the killed one, having no successful execution, runs
  again with new output folders (the killed run's half-written ones stay, unreferenced).
* TFX's Pusher executor copies the model in place into `<serving dir>/<unix time>/` with
  `saved_model.pb` last, so a poller can see a version folder fill, a kill mid-copy leaves a
  partial numeric folder, and a kill after the copy but before ML Metadata's publish makes the
  rerun push the same model again under a new timestamp. `tfx_pipeline.pusher.AtomicPusher`
  (what the pipeline uses) stages the copy in a hidden folder, renames it into place and, on a
  rerun, records the newest version as the push when it already holds the model's exact files.
* The Evaluator's baseline and the warm-started Trainer's `base_model` come from a resolver.
  TFX's `LatestBlessedModelStrategy` sees the killed run's own blessing (the Evaluator publishes
  it before the Pusher runs), so after a kill during the Pusher the rerun's Evaluator missed the
  cache (it compared the model with itself) and a warm-started Trainer would train again from
  the killed run's model and push a second, different version. The pipeline's resolver is
  `tfx_pipeline.pusher.LatestPushedModelStrategy` (the latest blessed model whose push ML
  Metadata recorded), with which the third test sees every component before the Pusher cached.
* The server (`serving.model_manager`) takes `<base>/<number>/saved_model.pb` as a complete
  version, skips hidden and non-numeric folders, and refuses (DATA_LOSS in its status, older
  versions keep serving) a version that fails to load; with the atomic push it never has to.

The server runs in the test process for the whole test, polling every 0.1 s, with a client
sending a request every 50 ms. "Never fails a request" means: before the server first answered,
a request may get NOT_FOUND (no version loaded yet; the server is up from the start, so
UNAVAILABLE is a failure too); from the first answer on, every request succeeds from the one
pushed version. A watcher lists the serving directory every 10 ms: every numeric folder it ever
sees must hold exactly the files of the version finally pushed.

The Transform and Trainer kills are timed by their output folders (Transform's
`transform_graph/<id>/`, made when its executor starts and written about 8 s later; the
Trainer's TensorBoard event file, written when `fit` starts); ML Metadata then shows whether
the kill landed in that component. The Pusher copies a small model in milliseconds, so its
executor's test hook `DSPNET_TEST_PUSHER_PAUSE` holds it after the staged copy or after the
rename until it is killed.
"""

from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Dict, List, Optional

import grpc
import pytest

pytestmark = pytest.mark.e2e

MODEL = {"max_len": 20, "item_dim": 16, "scene_dim": 8, "num_blocks": 1, "epochs": 1,
         "batch_size": 64, "top_k": 5}
COMPONENTS = ("SequenceExampleGen", "StatisticsGen", "SchemaGen", "ExampleValidator",
              "AnomaliesGate", "Transform", "Trainer", "Evaluator", "Pusher")
PIPELINE = "dspnet"
TIMEOUT = 600


@pytest.fixture(scope="module")
def event_log(tmp_path_factory):
    from dspnet_tf.data.scene_world import SceneWorld, SceneWorldConfig

    folder = tmp_path_factory.mktemp("data")
    SceneWorld(SceneWorldConfig(users=150, items=80, categories=4, seed=1)).generate() \
        .write(str(folder))
    config = folder / "config.json"
    config.write_text(json.dumps(MODEL))
    return str(folder / "events.csv"), str(config)


class Run:
    """`dspnet pipeline run` in a subprocess, its output in a log file."""

    def __init__(self, event_log, out, name: str, pause: Optional[str] = None) -> None:
        data, config = event_log
        self.log = out / f"{name}.log"
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
        env.pop("DSPNET_TEST_PUSHER_PAUSE", None)
        if pause:
            env["DSPNET_TEST_PUSHER_PAUSE"] = pause
        with open(self.log, "w") as handle:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "dspnet_tf.cli", "pipeline", "run", "--data", data,
                 "--out", str(out), "--config", config],
                env=env, stdout=handle, stderr=subprocess.STDOUT)

    def output(self) -> str:
        return self.log.read_text()

    def wait_for(self, condition, what: str) -> None:
        """Polls `condition()` every 20 ms while the run is alive."""
        deadline = time.monotonic() + TIMEOUT
        while not condition():
            assert self.process.poll() is None, \
                f"the run ended before {what}:\n{self.output()[-3000:]}"
            assert time.monotonic() < deadline, f"no {what} after {TIMEOUT} s"
            time.sleep(0.02)

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        assert self.process.wait(timeout=60) == -signal.SIGKILL

    def finish(self) -> str:
        assert self.process.wait(timeout=TIMEOUT) == 0, self.output()[-3000:]
        return self.output()


def execution_states(out) -> Dict[str, List[str]]:
    """Node id -> the state of each of its executions in ML Metadata, oldest first."""
    from ml_metadata.metadata_store import metadata_store
    from ml_metadata.proto import metadata_store_pb2
    from tfx.orchestration import metadata

    store = metadata_store.MetadataStore(
        metadata.sqlite_metadata_connection_config(str(out / "metadata.sqlite")))
    states = {}
    for node in COMPONENTS:
        context = store.get_context_by_type_and_name("node", f"{PIPELINE}.{node}")
        executions = store.get_executions_by_context(context.id) if context else []
        states[node] = [metadata_store_pb2.Execution.State.Name(e.last_known_state)
                        for e in sorted(executions, key=lambda e: e.id)]
    return states


def pushed_versions(out) -> List[str]:
    """`pushed_version` of every Pusher output artifact that says it pushed."""
    from ml_metadata.metadata_store import metadata_store
    from tfx.orchestration import metadata

    store = metadata_store.MetadataStore(
        metadata.sqlite_metadata_connection_config(str(out / "metadata.sqlite")))
    return [a.custom_properties["pushed_version"].string_value
            for a in store.get_artifacts_by_type("PushedModel")
            if a.custom_properties["pushed"].int_value == 1]


def file_sizes(folder: str) -> Dict[str, int]:
    sizes = {}
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            try:
                sizes[os.path.relpath(path, folder)] = os.path.getsize(path)
            except FileNotFoundError:
                pass
    return sizes


class Observer:
    """A server polling the serving directory, a client asking it every 50 ms and a watcher
    listing the directory every 10 ms, for the whole test."""

    def __init__(self, serving_dir: str) -> None:
        from serving.client import DSPnetClient
        from serving.server import ModelServer, ServerOptions

        self.serving_dir = serving_dir
        self.server = ModelServer(ServerOptions(model_base_path=serving_dir, port=0,
                                                rest_port=None, poll_seconds=0.1)).start()
        self.client = DSPnetClient(f"127.0.0.1:{self.server.port}", retries=0, timeout=30)
        self.answers: List[tuple] = []  # (OK, version) or (status code name, details)
        self.seen: Dict[str, set] = {}  # numeric folder -> every file listing seen of it
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._ask, daemon=True),
                         threading.Thread(target=self._watch, daemon=True)]
        for thread in self._threads:
            thread.start()

    def _ask(self) -> None:
        while not self._stop.wait(0.05):
            try:
                answer = self.client.recommend(["i00003", "i00010"], ["feed", "search"])
                self.answers.append(("OK", answer.model_version, len(answer.items)))
            except grpc.RpcError as err:
                self.answers.append((err.code().name, err.details()))

    def _watch(self) -> None:
        while not self._stop.wait(0.01):
            try:
                entries = os.listdir(self.serving_dir)
            except FileNotFoundError:
                continue
            for entry in entries:
                if entry.isdigit():
                    listing = tuple(sorted(file_sizes(os.path.join(self.serving_dir, entry))
                                           .items()))
                    self.seen.setdefault(entry, set()).add(listing)

    def wait_for_version(self, version: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not any(a[0] == "OK" and a[1] == version for a in self.answers):
            assert time.monotonic() < deadline, f"version {version} not served: {self.answers[-3:]}"
            time.sleep(0.05)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)
        self.client.close()
        self.server.stop(grace=1)

    def check(self, version: str, top_k: int = MODEL["top_k"]) -> None:
        """Every request answered as the module docstring says, every folder seen whole."""
        oks = [i for i, a in enumerate(self.answers) if a[0] == "OK"]
        assert oks, f"no request answered: {self.answers[-3:]}"
        before, after = self.answers[:oks[0]], self.answers[oks[0]:]
        assert {a[0] for a in before} <= {"NOT_FOUND"}, before
        assert all(a == ("OK", int(version), top_k) for a in after), \
            [a for a in after if a != ("OK", int(version), top_k)][:5]
        assert len(after) >= 10, f"only {len(after)} answers after the push"
        final = tuple(sorted(file_sizes(os.path.join(self.serving_dir, version)).items()))
        assert {"saved_model.pb", "variables/variables.index"} <= dict(final).keys()
        assert self.seen == {version: {final}}, (
            f"partial or extra version folders seen: "
            f"{ {v: [len(s) for s in listings] for v, listings in self.seen.items()} } "
            f"(complete: {len(final)} files)")
        statuses = [(s.version, s.state, s.error_code.name)
                    for s in self.server.manager.statuses("dspnet")]
        assert statuses == [(int(version), "AVAILABLE", "OK")], statuses


@pytest.fixture
def observed(tmp_path):
    """(out folder, Observer) with the server started before any run."""
    out = tmp_path / "out"
    out.mkdir()
    observer = Observer(os.path.join(str(out), "serving", "dspnet"))
    try:
        yield out, observer
    finally:
        observer.stop()


def the_one_version(out) -> str:
    """The serving directory holds one version folder and nothing else; its name."""
    serving_dir = out / "serving" / "dspnet"
    entries = sorted(os.listdir(serving_dir))
    assert len(entries) == 1 and entries[0].isdigit(), entries
    return entries[0]


def check_pushed(out, output: str, version: str, said: str = "pushed version {} to") -> None:
    """The version is the model the Trainer's last execution wrote, the Pusher recorded it
    once, and the rerun said `said` of it (the CLI compares the versions before and after)."""
    from tfx_pipeline.pusher import same_files

    models = sorted(glob.glob(str(out / "pipeline_root" / "Trainer" / "model" / "*"
                                  / "Format-Serving" / "saved_model.pb")),
                    key=lambda p: int(p.split(os.sep)[-3]))
    assert same_files(os.path.dirname(models[-1]),
                      str(out / "serving" / "dspnet" / version))
    assert pushed_versions(out) == [version]
    assert said.format(version) in output, output[-2000:]


def test_kill_during_transform_then_rerun(event_log, observed):
    out, observer = observed
    first = Run(event_log, out, "killed")
    first.wait_for(lambda: glob.glob(str(out / "pipeline_root" / "Transform" / "transform_graph"
                                         / "*")), "Transform started")
    time.sleep(1.0)  # inside its analysis (about 8 s here)
    first.kill()
    states = execution_states(out)
    assert states["Transform"] == ["RUNNING"], states  # the kill landed in Transform
    assert states["Trainer"] == [] and states["Pusher"] == []
    assert not os.path.exists(out / "serving" / "dspnet")

    output = Run(event_log, out, "rerun").finish()
    states = execution_states(out)
    before = COMPONENTS[:COMPONENTS.index("Transform")]
    assert {c: states[c] for c in before} == {c: ["COMPLETE", "CACHED"] for c in before}, states
    assert states["Transform"] == ["RUNNING", "COMPLETE"], states
    assert [states[c] for c in ("Trainer", "Evaluator", "Pusher")] == [["COMPLETE"]] * 3, states
    version = the_one_version(out)
    check_pushed(out, output, version)
    observer.wait_for_version(int(version))
    time.sleep(1.0)
    observer.check(version)


def test_kill_during_trainer_then_rerun(event_log, observed):
    out, observer = observed
    first = Run(event_log, out, "killed")
    # Keras' TensorBoard callback writes its event file when fit starts.
    first.wait_for(lambda: glob.glob(str(out / "pipeline_root" / "Trainer" / "model_run" / "*"
                                         / "**" / "events.out.*"), recursive=True),
                   "Trainer's fit started")
    first.kill()
    states = execution_states(out)
    assert states["Trainer"] == ["RUNNING"], states
    assert states["Evaluator"] == [] and states["Pusher"] == []
    assert not glob.glob(str(out / "pipeline_root" / "Trainer" / "model" / "*" / "Format-Serving"
                             / "saved_model.pb"))

    output = Run(event_log, out, "rerun").finish()
    states = execution_states(out)
    before = COMPONENTS[:COMPONENTS.index("Trainer")]
    assert {c: states[c] for c in before} == {c: ["COMPLETE", "CACHED"] for c in before}, states
    assert states["Trainer"] == ["RUNNING", "COMPLETE"], states
    assert [states[c] for c in ("Evaluator", "Pusher")] == [["COMPLETE"]] * 2, states
    version = the_one_version(out)
    check_pushed(out, output, version)
    observer.wait_for_version(int(version))
    time.sleep(1.0)
    observer.check(version)


def test_kill_during_pusher_copy_and_after_its_rename_then_rerun(event_log, observed):
    """Killed with the model staged (not yet renamed), rerun and killed again right after the
    rename (before ML Metadata heard of it), rerun to the end: one version, pushed once."""
    out, observer = observed
    serving_dir = out / "serving" / "dspnet"
    staged = Run(event_log, out, "killed-staged", pause="staged")
    staged.wait_for(lambda: "paused after staged" in staged.output(), "the staged copy")
    staged.kill()
    leftovers = os.listdir(serving_dir)
    assert len(leftovers) == 1 and leftovers[0].startswith(".push-"), leftovers
    assert execution_states(out)["Pusher"] == ["RUNNING"]

    renamed = Run(event_log, out, "killed-renamed", pause="renamed")
    renamed.wait_for(lambda: "paused after renamed" in renamed.output(), "the rename")
    renamed.kill()
    version = the_one_version(out)  # the killed push's staging folder is gone
    observer.wait_for_version(int(version))
    states = execution_states(out)
    assert states["Pusher"] == ["RUNNING", "RUNNING"], states
    assert pushed_versions(out) == []  # ML Metadata does not know of the push yet

    output = Run(event_log, out, "rerun").finish()
    states = execution_states(out)
    before = COMPONENTS[:COMPONENTS.index("Pusher")]
    assert {c: states[c] for c in before} == \
        {c: ["COMPLETE", "CACHED", "CACHED"] for c in before}, states
    assert states["Pusher"] == ["RUNNING", "RUNNING", "COMPLETE"], states
    assert the_one_version(out) == version  # recorded, not pushed a second time
    # The version was there before this run, so the CLI reports no new version.
    check_pushed(out, output, version, said="still serving version {} in")
    time.sleep(1.0)
    observer.check(version)


def test_the_observer_sees_a_version_copied_in_place(tmp_path, monkeypatch):
    """The check has teeth: TFX's stock Pusher executor (an in-place copy, saved_model.pb last;
    slowed here to 20 ms a file, as a large model or a slow disk would) fails it."""
    from tfx.components.pusher import executor as tfx_pusher_executor
    from tfx.dsl.io import fileio
    from tfx.proto import pusher_pb2
    from tfx.types import standard_artifacts
    from tfx.utils import proto_utils

    from serving.testing import export_untrained_model

    model = standard_artifacts.Model()
    model.uri = str(tmp_path / "model")
    export_untrained_model(str(tmp_path / "model" / "Format-Serving"))
    blessing = standard_artifacts.ModelBlessing()
    blessing.set_int_custom_property("blessed", 1)
    pushed = standard_artifacts.PushedModel()
    pushed.uri = str(tmp_path / "pushed")
    serving_dir = tmp_path / "serving"
    destination = pusher_pb2.PushDestination(
        filesystem=pusher_pb2.PushDestination.Filesystem(base_directory=str(serving_dir)))
    copy = fileio.copy

    def slow_copy(*args, **kwargs):
        time.sleep(0.02)
        return copy(*args, **kwargs)

    monkeypatch.setattr(fileio, "copy", slow_copy)
    observer = Observer(str(serving_dir))
    try:
        tfx_pusher_executor.Executor().Do(
            {"model": [model], "model_blessing": [blessing]}, {"pushed_model": [pushed]},
            {"push_destination": proto_utils.proto_to_json(destination)})
        version = pushed.get_string_custom_property("pushed_version")
        observer.wait_for_version(int(version))
        time.sleep(1.0)
        with pytest.raises(AssertionError, match="partial or extra version folders seen"):
            observer.check(version, top_k=10)
    finally:
        observer.stop()
