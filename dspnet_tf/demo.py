"""`dspnet demo`: the whole product on the default scene world, stage by stage.

1. generate the scene world (the standard event log + the world's parameters);
2. run the TFX pipeline with LocalDagRunner (ExampleGen ... Trainer, Evaluator, Pusher);
3. train the baselines on the same log with the quality benchmark's code (one seed) and score the
   pushed DSPnet on the same test events through its own `evaluate_ranking` signature;
4. start the local TF-Serving-API server on the pushed model (its own process), query it through
   `DSPnetClient` over gRPC (a few users' recommendations, next-scene predictions for the
   confusion matrix, user representations for the latent plot, latencies), then stop it (SIGTERM);
5. write the report from the numbers saved in `run.json`.

TFX lives in `tfx_pipeline` and the server in `serving`; both are imported inside the functions,
so importing `dspnet_tf` never pulls them in.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from typing import Any, Callable, Dict, List, Optional

import numpy as np


@dataclasses.dataclass
class DemoSettings:
    """What the demo runs on. The defaults are the default scene world; `tiny()` is for tests."""

    users: int = 10_000
    items: int = 2_000
    categories: int = 20
    seed: int = 0
    epochs: int = 5
    # DSPnetConfig's defaults (item_loss "auto" is the full softmax at 2,000 items).
    model_config: Dict[str, Any] = dataclasses.field(default_factory=dict)
    baselines: tuple = ("sasrec", "sasrec_scene_repeat_target", "most_popular", "scene_popular")
    baseline_epochs: int = 5
    queried_users: int = 2_000
    latency_requests: int = 300

    @classmethod
    def tiny(cls) -> "DemoSettings":
        """A demo small enough for a test: a few hundred users, one epoch, two cheap baselines."""
        return cls(users=200, items=80, categories=4, epochs=1,
                   baselines=("most_popular", "scene_popular"),
                   baseline_epochs=1, queried_users=100, latency_requests=30,
                   model_config={"max_len": 20, "item_dim": 16, "scene_dim": 8,
                                 "num_blocks": 1, "batch_size": 64, "top_k": 10})


def _quiet_pipeline_logs() -> None:
    """TFX, Beam and absl log every step at INFO; the demo prints its own stage lines."""
    from absl import logging as absl_logging  # pylint: disable=import-outside-toplevel

    absl_logging.set_verbosity(absl_logging.ERROR)
    for name in ("tfx", "apache_beam", "ml_metadata", "tensorflow", "absl", "root"):
        logging.getLogger(name).setLevel(logging.ERROR)


PIPELINE_COMPONENTS = ("SequenceExampleGen", "StatisticsGen", "SchemaGen", "ExampleValidator",
                       "AnomaliesGate", "Transform", "Trainer", "Evaluator", "Pusher")


class _ComponentProgress:
    """Prints "component k/9 started" as LocalDagRunner reaches each component.

    LocalDagRunner reports nothing we can hook into without its INFO log flood; each component
    creates its folder under the pipeline root when it starts, so a background thread watches
    for them.
    """

    def __init__(self, pipeline_root: str, say: Callable[[str], None]) -> None:
        self.pipeline_root, self.say = pipeline_root, say
        self.started = time.time()
        self.seen: List[str] = []
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        while not self.done.wait(1.0):
            self._report()

    def _report(self) -> None:
        for name in PIPELINE_COMPONENTS:
            if name not in self.seen and os.path.isdir(os.path.join(self.pipeline_root, name)):
                self.seen.append(name)
                self.say(f"      component {len(self.seen)}/{len(PIPELINE_COMPONENTS)}: {name} "
                         f"(at {time.time() - self.started:.0f} s)")

    def __enter__(self) -> "_ComponentProgress":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.done.set()
        self.thread.join()
        self._report()


def _test_files(pipeline_root: str) -> List[str]:
    """The ExampleGen's Split-test files (each user's whole history; its last event is the target)."""
    return sorted(glob.glob(os.path.join(pipeline_root, "SequenceExampleGen", "examples", "*",
                                         "Split-test", "*.gz")))


def _test_histories(files: List[str], limit: int):
    """(item history, scene history) of the first `limit` test users."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    histories = []
    for record in tf.data.TFRecordDataset(files, compression_type="GZIP").take(limit):
        feature = tf.train.Example.FromString(record.numpy()).features.feature
        histories.append(([x.decode() for x in feature["item_history"].bytes_list.value],
                          [x.decode() for x in feature["scene_history"].bytes_list.value]))
    return histories


def _trainer_history(pipeline_root: str) -> Dict[str, List[float]]:
    found = sorted(glob.glob(os.path.join(pipeline_root, "Trainer", "model_run", "*",
                                          "history.json")), key=os.path.getmtime)
    if not found:
        return {}
    with open(found[-1], encoding="utf-8") as handle:
        return json.load(handle)


RUN_MARKER = ".dspnet-demo-run"  # marks a folder as written by `dspnet demo` (and so replaceable)
SERVER_LOG = "server.log"


class OutDirError(ValueError):
    """The output folder cannot be used (not the demo's, or an earlier run without overwrite)."""


def prepare_out_dir(out_dir: str, overwrite: bool = False) -> None:
    """Makes `out_dir` ready for a run and marks it as the demo's.

    Only a folder that carries `RUN_MARKER` (written here by an earlier run) is ever emptied,
    and only with `overwrite`: a mistyped `--out .` or `--out ~` is refused, never wiped. The
    marker is written only into a new or empty folder, so a marked folder holds demo output.
    """
    marker = os.path.join(out_dir, RUN_MARKER)
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise OutDirError(f"--out {out_dir} is a file, not a folder")
    entries = os.listdir(out_dir) if os.path.isdir(out_dir) else []
    if entries and not os.path.isfile(marker):
        raise OutDirError(
            f"--out {out_dir} is not empty and has no {RUN_MARKER} file (the mark of an earlier "
            "`dspnet demo` run), so nothing there is deleted or written: pass a new or empty "
            "folder, or delete it yourself")
    if entries and not overwrite:
        raise OutDirError(f"--out {out_dir} holds an earlier run; pass --overwrite to replace "
                          "it, or another --out")
    for name in entries:
        if name == RUN_MARKER:
            continue  # removed last (rewritten below): a failed clean-up stays replaceable
        path = os.path.join(out_dir, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)  # errors propagate: a half-deleted run is reported, not hidden
        else:
            os.remove(path)
    os.makedirs(out_dir, exist_ok=True)
    with open(marker, "w", encoding="utf-8") as handle:
        json.dump({"command": "dspnet demo", "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")},
                  handle)


def _serve(base_path: str, log_path: str):
    """Starts `dspnet serve` in its own process on free loopback ports; returns (process, port).

    Its output goes to `log_path`: a pipe that nobody reads while the demo queries would fill
    (64 KB) and block the server in the middle of a log line.
    """
    import portpicker  # pylint: disable=import-outside-toplevel

    port = portpicker.pick_unused_port()
    with open(log_path, "ab") as log:  # the child keeps its own copy of the descriptor
        process = subprocess.Popen(
            [sys.executable, "-m", "dspnet_tf.cli", "serve", "--model-base-path", base_path,
             "--port", str(port), "--rest-port", "-1"],
            stdout=log, stderr=subprocess.STDOUT,
            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    return process, port


def _last_line(path: str) -> str:
    """The last non-empty line of a (log) file, read from its end."""
    try:
        with open(path, "rb") as handle:
            handle.seek(max(0, os.path.getsize(path) - 4096))
            lines = handle.read().decode("utf-8", "replace").strip().splitlines()
    except OSError:
        return ""
    return lines[-1] if lines else ""


def _project_2d(embeddings: np.ndarray) -> np.ndarray:
    centred = embeddings - embeddings.mean(axis=0)
    _, _, components = np.linalg.svd(centred, full_matrices=False)
    return centred @ components[:2].T


def run_demo(out_dir: str, settings: Optional[DemoSettings] = None,
             say: Callable[[str], None] = print) -> str:
    """Runs every stage into `out_dir`; returns the report's path."""
    from tqdm import tqdm  # pylint: disable=import-outside-toplevel

    from dspnet_tf.data.scene_world import SceneWorld, SceneWorldConfig  # pylint: disable=import-outside-toplevel
    from dspnet_tf.evaluation.quality_benchmark import (  # pylint: disable=import-outside-toplevel
        default_workers,
        run_quality_benchmark,
    )
    from dspnet_tf.evaluation.saved_model_scoring import score_example_files  # pylint: disable=import-outside-toplevel
    from dspnet_tf.report import LATENT_FILE, RUN_FILE, write_report  # pylint: disable=import-outside-toplevel
    from serving.model_manager import model_versions  # pylint: disable=import-outside-toplevel

    settings = settings or DemoSettings()
    os.makedirs(out_dir, exist_ok=True)
    timings: Dict[str, float] = {}
    started = time.time()

    say(f"[1/5] generating the scene world: {settings.users} users, {settings.items} items")
    world_dir = os.path.join(out_dir, "world")
    log = SceneWorld(SceneWorldConfig(users=settings.users, items=settings.items,
                                      categories=settings.categories,
                                      seed=settings.seed)).generate()
    paths = log.write(world_dir)
    timings["generate the scene world"] = time.time() - started

    say(f"[2/5] TFX pipeline (LocalDagRunner): ExampleGen -> StatisticsGen -> SchemaGen -> "
        f"ExampleValidator -> Transform -> Trainer ({settings.epochs} epoch(s)) -> Evaluator -> "
        "Pusher  (a few minutes; Trainer prints one line per epoch)")
    stage = time.time()
    from tfx_pipeline.pipeline import run_locally  # pylint: disable=import-outside-toplevel

    _quiet_pipeline_logs()
    pipeline_dir = os.path.join(out_dir, "pipeline")
    config = dict(settings.model_config, epochs=settings.epochs)
    with _ComponentProgress(os.path.join(pipeline_dir, "pipeline_root"), say):
        serving_dir = run_locally(paths["events"], pipeline_dir, model_config=config)
    versions = model_versions(serving_dir)
    if not versions:
        raise RuntimeError(f"the pipeline pushed no model to {serving_dir} (not blessed?)")
    version_dir = versions[max(versions)]
    timings["TFX pipeline"] = time.time() - stage
    say(f"      pushed {version_dir} in {timings['TFX pipeline']:.0f} s")

    say(f"[3/5] baselines on the same log ({', '.join(settings.baselines)}; one seed) and the "
        "pushed model scored on the same test events")
    stage = time.time()
    pipeline_root = os.path.join(pipeline_dir, "pipeline_root")
    test_files = _test_files(pipeline_root)
    pushed = score_example_files(version_dir, test_files)
    quality = run_quality_benchmark(
        world_dir, os.path.join(out_dir, "quality"), models=list(settings.baselines), seeds=[0],
        epochs=settings.baseline_epochs, patience=settings.baseline_epochs,
        overrides={k: v for k, v in settings.model_config.items()
                   if k in ("max_len", "item_dim", "scene_dim", "num_blocks", "item_loss")},
        progress=lambda line: say(f"      {line}"),
        # Side by side in worker processes (same results): most-popular trains nothing, so
        # a single trained baseline is not worth a process start.
        workers=min(default_workers(),
                    len([m for m in settings.baselines
                         if m not in ("most_popular", "scene_popular")]) or 1))
    timings["baselines and scoring"] = time.time() - stage

    say("[4/5] serving the pushed model (dspnet serve, its own process) and querying it over gRPC")
    stage = time.time()
    recommendations, scene_names, confusion, latencies = [], [], None, []
    served_scene_acc, points, labels = None, None, None
    import grpc  # pylint: disable=import-outside-toplevel
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    from dspnet_tf.export import make_history_example  # pylint: disable=import-outside-toplevel
    from serving.client import DSPnetClient  # pylint: disable=import-outside-toplevel

    server_log = os.path.join(out_dir, SERVER_LOG)
    process, port = _serve(serving_dir, server_log)
    try:

        histories = _test_histories(test_files, settings.queried_users)
        with DSPnetClient(f"127.0.0.1:{port}", timeout=60) as client:
            served_version = client.wait_until_ready(timeout=300)
            say(f"      server ready on 127.0.0.1:{port}, version {served_version}")
            for items, scenes in histories[:3]:
                answer = client.recommend(items[:-1], scenes[:-1], k=5)
                # In-scene requests: the surface asking is known. The true next event's scene
                # and the one the model thinks least likely next, so the lists differ most.
                surfaces = [scenes[-1]] + [s for s, _ in answer.next_scenes[::-1]
                                           if s != scenes[-1]][:1]
                by_target = {surface: client.recommend(items[:-1], scenes[:-1],
                                                       target_scene=surface, k=5).items
                             for surface in surfaces}
                recommendations.append({
                    "history": list(zip(items[:-1][-6:], scenes[:-1][-6:])),
                    "items": answer.items, "true_next": items[-1],
                    "true_next_scene": scenes[-1], "next_scenes": answer.next_scenes,
                    "by_target_scene": by_target, "model_version": answer.model_version})
                say("      recent: " + ", ".join(f"{i}@{s}" for i, s in
                                                 recommendations[-1]["history"]))
                say(f"        top 5: {', '.join(answer.items)}   (true next: {items[-1]}"
                    f"@{scenes[-1]})")
                say("        next scene: " + ", ".join(f"{s} {p:.2f}" for s, p in
                                                      answer.next_scenes[:3]))
                for surface, listed in by_target.items():
                    say(f"        top 5 for the {surface} surface: {', '.join(listed)}")
            metadata_scenes = None
            predicted, truth, embeddings = [], [], []
            batches = range(0, len(histories), 100)
            for start in tqdm(batches, desc="      next scene + latent (gRPC)", unit="batch"):
                chunk = histories[start:start + 100]
                answers = client.recommend_batch([h[0][:-1] for h in chunk],
                                                 [h[1][:-1] for h in chunk])
                if metadata_scenes is None:
                    metadata_scenes = sorted(answers[0].scenes)
                predicted += [a.scenes[0] for a in answers]
                truth += [h[1][-1] for h in chunk]
                response = client.predict(
                    [make_history_example(h[0][:-1], h[1][:-1]) for h in chunk],
                    signature_name="encode_users")
                embeddings.append(tf.make_ndarray(response.outputs["user_embedding"]))
            scene_names = metadata_scenes or []
            index = {name: i for i, name in enumerate(scene_names)}
            confusion = np.zeros((len(scene_names), len(scene_names)), dtype=int)
            for true_scene, guess in zip(truth, predicted):
                if true_scene in index:
                    confusion[index[true_scene], index[guess]] += 1
            served_scene_acc = float(np.mean([t == p for t, p in zip(truth, predicted)]))
            points = _project_2d(np.concatenate(embeddings))
            labels = np.array([index.get(t, -1) for t in truth])
            for i in tqdm(range(settings.latency_requests), desc="      latency (gRPC)",
                          unit="req"):
                items, scenes = histories[i % len(histories)]
                begun = time.perf_counter()
                client.recommend(items[:-1], scenes[:-1])
                latencies.append((time.perf_counter() - begun) * 1000)
    except grpc.RpcError as err:
        raise RuntimeError(f"the served model failed: {err.code().name}: {err.details()}") \
            from None
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.returncode not in (0, -signal.SIGTERM):
            say(f"      warning: the server exited with {process.returncode}: "
                f"{_last_line(server_log)} (whole log: {server_log})")
    say("      server stopped (SIGTERM)")
    timings["serving and queries"] = time.time() - stage

    say("[5/5] writing the report")
    oracle = quality.get("oracle")
    in_scene = quality["tasks"]["in_scene"]
    rows = [{"model": "dspnet (TFX pipeline, pushed)",
             "hr@10": float(pushed["hr@10"].mean()), "ndcg@10": float(pushed["ndcg@10"].mean()),
             "in_scene_hr@10": float(pushed["in_scene_hr@10"].mean()),
             "in_scene_ndcg@10": float(pushed["in_scene_ndcg@10"].mean()),
             "scene_acc@1": served_scene_acc,
             "how": f"served model: evaluate_ranking signature; next scene via gRPC on "
                    f"{len(truth)} users"}]
    for name in settings.baselines:
        metrics = quality["models"][name]
        rows.append({"model": name, **{k: metrics[k]["mean"] for k in
                                       ("hr@10", "ndcg@10", "scene_acc@1")},
                     **{f"in_scene_{k}": in_scene["models"][name][k]["mean"]
                        for k in ("hr@10", "ndcg@10")},
                     "how": f"quality benchmark, up to {settings.baseline_epochs} epoch(s), seed 0"})
    run = {
        "data": {"description": f"scene world (seed {settings.seed}, misalignment 0)",
                 "users": settings.users, "items": settings.items, "events": log.num_events},
        "quality": {"rows": rows,
                    "oracle": {**{k: oracle[k] for k in ("hr@10", "ndcg@10", "scene_acc@1")},
                               **{f"in_scene_{k}": in_scene["oracle"][k]
                                  for k in ("hr@10", "ndcg@10")}}
                    if oracle else None,
                    "baseline_curves": os.path.join("quality", "training_curves.png"),
                    "note": f"DSPnet trained {settings.epochs} epoch(s) by the pipeline's Trainer; "
                            "a demo-sized budget, not the tuned quality benchmark."},
        "trainer_history": _trainer_history(pipeline_root),
        "recommendations": recommendations,
        "scene_names": scene_names,
        "scene_confusion": confusion.tolist() if confusion is not None else None,
        "scene_confusion_users": len(truth),
        "served_scene_acc@1": served_scene_acc,
        "latency_ms": latencies,
        "timings": timings,
        "paths": {"report": os.path.join(out_dir, "report.md"),
                  "pushed models (serve with `dspnet serve --model-base-path`)": serving_dir,
                  "TensorBoard logs (`tensorboard --logdir`)":
                      os.path.join(pipeline_root, "Trainer", "model_run"),
                  "ML Metadata": os.path.join(pipeline_dir, "metadata.sqlite"),
                  "server log": server_log,
                  "event log": paths["events"]},
    }
    timings["total"] = time.time() - started
    np.savez(os.path.join(out_dir, LATENT_FILE), points=points, labels=labels)
    with open(os.path.join(out_dir, RUN_FILE), "w", encoding="utf-8") as handle:
        json.dump(run, handle, indent=2, default=float)
    report = write_report(out_dir)
    say(f"done in {timings['total'] / 60:.1f} min.")
    for name, path in run["paths"].items():
        say(f"  {name}: {path}")
    return report

