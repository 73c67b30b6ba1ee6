"""The quality benchmark: every model on the same split, seeds, protocol and tuning budget.

One call runs the main table (each model x each seed), and the studies of dspnet-method.md:
the ablations, the prior-sensitivity study and the intention-misalignment sweep (fresh scene
worlds that differ from the benchmark's world only in `misalignment`). It writes
`results.json` (the shape other tools read), `results.md` (tables, each model also as a fraction
of the oracle) and PNG plots.
"""

from __future__ import annotations

import concurrent.futures
import json
import multiprocessing
import os
import pickle
import shutil
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from dspnet_tf.config import ABLATIONS, BASELINES, PRIORS, DSPnetConfig
from dspnet_tf.data.event_log import EventLog, load_movielens_100k, read_event_log
from dspnet_tf.data.splits import LeaveOneOutSplit, leave_one_out
from dspnet_tf.evaluation.tasks import IN_SCENE, NEXT_EVENT, TASKS
from dspnet_tf.evaluation.ranking import ranking_metrics

REPORTED = ("hr@5", "hr@10", "hr@20", "ndcg@5", "ndcg@10", "ndcg@20", "mrr", "scene_acc@1",
            "scene_ndcg@3")
# Scene metrics do not apply to the in-scene task: the model is told the scene.
REPORTED_BY_TASK = {NEXT_EVENT: REPORTED, IN_SCENE: REPORTED[:7]}
# The fair baselines (evaluation.md): every mechanism of ours that is not about scenes (the
# repeat pointer) offered to the single-sequence models, and in the in-scene task the target
# scene fed to their output, plus the in-scene floor `scene_popular`.
FAIR_BASELINES = ("sasrec_repeat", "gru4rec_repeat", "sasrec_repeat_target",
                  "gru4rec_repeat_target", "sasrec_scene_repeat_target",
                  "gru4rec_scene_repeat_target", "scene_popular")
MAIN_MODELS = ("dspnet", "sasrec", "sasrec_scene", "gru4rec", "bert4rec", "most_popular",
               *FAIR_BASELINES)
POPULARITY_MODELS = ("most_popular", "scene_popular")
# The five ablations of dspnet-method.md, and our repeat pointer's. The adversarial prior is
# off by default (DSPnetConfig.use_adversarial), so its ablation adds it (`dspnet_adv`, the
# method's full model) instead of removing it. config.ABLATIONS also has SFE depths 1 and 3 and
# CCR with two encoded augmented views (`dspnet_ccr_augmented`, the method's first design):
# those run when named in --models, and stay out of the default study to keep it short.
ABLATION_MODELS = ("dspnet_no_scene", "dspnet_no_sfe", "dspnet_no_ccr", "dspnet_ccr_uniform",
                   "dspnet_adv", "dspnet_no_repeat", "dspnet_no_target", "dspnet_target_concat",
                   "dspnet_conditioned", "dspnet_no_pointer_scenes", "dspnet_target_attention")
# The prior study compares priors with the prior on: the Gaussian one is `dspnet_adv`, which
# the ablation study trains too (the plan trains each model once).
PRIOR_MODELS = ("dspnet_adv", *(f"dspnet_prior_{p}" for p in PRIORS if p != "gaussian"))
KNOWN_MODELS = tuple(dict.fromkeys(("dspnet", *POPULARITY_MODELS, "bert4rec", *BASELINES,
                                     *(f"dspnet_{a}" for a in ABLATIONS), *PRIOR_MODELS)))
STUDIES = ("ablations", "prior", "misalignment")
MISALIGNMENTS = (0.0, 0.25, 0.5, 0.75, 1.0)
# The sweep's models: DSPnet, item-only SASRec (next-event rival) and the strongest in-scene
# baseline form (the scene as an attribute, the pointer and the target scene).
SWEEP_MODELS = ("dspnet", "sasrec", "sasrec_scene_repeat_target")
MOVIELENS_NAMES = ("movielens-100k", "ml-100k")
# A difference is "significant" below this p-value (Wilcoxon signed-rank, per-user NDCG@10).
SIGNIFICANCE_LEVEL = 0.01
# Default cap on runs trained at once: each worker holds its own model, split and TensorFlow
# runtime (about 1-2 GiB on the default world).
MAX_DEFAULT_WORKERS = 4


def model_config(name: str, split: LeaveOneOutSplit, overrides: Dict[str, Any]) -> DSPnetConfig:
    """The DSPnetConfig behind a benchmark model name (dspnet, a baseline, dspnet_<ablation>)."""
    facts = {"training_repeat_share": split.training_repeat_share}
    base = DSPnetConfig(item_vocab_size=len(split.item_vocab),
                        scene_vocab_size=len(split.scene_vocab), **{**facts, **overrides})
    if name == "dspnet":
        return base
    if name == "bert4rec":  # shares SASRec's widths; BERT4Rec itself has no scene network
        return base.as_baseline("sasrec")
    if name in BASELINES:
        return base.as_baseline(name)
    if name.startswith("dspnet_prior_") and name[len("dspnet_prior_"):] in PRIORS:
        return base.with_ablation("adv").replace(prior=name[len("dspnet_prior_"):])
    if name.startswith("dspnet_") and name[len("dspnet_"):] in ABLATIONS:
        return base.with_ablation(name[len("dspnet_"):])
    raise ValueError(f"unknown model {name!r}; known: {', '.join(KNOWN_MODELS)}")


def load_benchmark_data(data: str, max_users: Optional[int] = None) -> EventLog:
    """An event log file/folder, or `movielens-100k` (the copy inside the recbole wheel).

    `max_users` keeps the events of the first that many users (sorted ids): a smaller,
    deterministic benchmark for smoke runs.
    """
    log = load_movielens_100k() if data.lower() in MOVIELENS_NAMES else read_event_log(data)
    if max_users is not None:
        kept = set(sorted(set(log.user_ids))[:max_users])
        mask = np.array([user in kept for user in log.user_ids], dtype=bool)
        log = EventLog(log.user_ids[mask], log.item_ids[mask], log.scenes[mask],
                       log.timestamps[mask], log.report)
    return log


def world_json_of(data: str) -> Optional[str]:
    """The `world.json` of a scene-world folder, or None for other data."""
    world_json = os.path.join(data, "world.json") if os.path.isdir(data) else None
    return world_json if world_json and os.path.exists(world_json) else None


class WorldView:
    """A split's users seen by the scene world: raw item / scene indices, vocabulary items.

    `raw(index)` gives user `index`'s world user, items and scenes (every event of the split,
    the test target last); `vocab_items` the world's item of each real item id, the candidates
    a model ranks.
    """

    def __init__(self, world_json: str, split: LeaveOneOutSplit) -> None:
        from dspnet_tf.data.scene_world import load_world  # pylint: disable=import-outside-toplevel

        self.world = load_world(world_json)
        names = list(self.world.config.scene_names)
        self.split = split
        self.vocab_items = np.array([int(t[1:]) for t in split.item_vocab.tokens[2:]])
        # Raw scene index of each real scene id (ids 2..): the model's rows in that order.
        self.vocab_scenes = np.array([names.index(t) for t in split.scene_vocab.tokens[2:]])
        self._names = names

    def raw(self, index: int) -> Tuple[int, List[int], List[int]]:
        """User `index`'s world user and raw item / scene indices, oldest first."""
        split = self.split
        return (int(split.users[index][1:]),
                [int(split.item_vocab.tokens[i][1:]) for i in split.items[index]],
                [self._names.index(split.scene_vocab.tokens[s]) for s in split.scenes[index]])


def joint_ranks(joint: np.ndarray, item: int, scene: int, vocab_items: np.ndarray) -> Dict[str, int]:
    """Pessimistic 1-based ranks of a target (item, scene) under a joint P(scene, item) [S, N].

    `next_event`: the item under the joint summed over scenes; `in_scene`: under the joint's row
    for the target's scene, normalised; both among `vocab_items`, the candidates the models rank.
    `scene_rank`: the scene under the joint summed over items.
    """
    from dspnet_tf.data.scene_world import in_scene_rows  # pylint: disable=import-outside-toplevel

    p_scene = joint.sum(axis=1)
    ranks = {"scene_rank": int((p_scene >= p_scene[scene]).sum())}
    for task, p_item in ((NEXT_EVENT, joint.sum(axis=0)), (IN_SCENE, in_scene_rows(joint)[scene])):
        ranks[task] = int((p_item[vocab_items] >= p_item[item]).sum())
    return ranks


def oracle_ranks(data_dir: str, split: LeaveOneOutSplit) -> Optional[Dict[str, Dict[str, np.ndarray]]]:
    """Ranks of the test targets under the scene world's exact oracle, by task; None for other data.

    Next event: P(item | history), the joint summed over the next scene. In-scene: P(item |
    history, the target's scene), the joint's row for that scene. The oracle ranks among the
    same candidates as the models: the items of the vocabulary.
    """
    world_json = world_json_of(data_dir)
    if world_json is None:
        return None
    view = WorldView(world_json, split)
    ranks: Dict[str, Dict[str, List[int]]] = {t: {"item_rank": [], "scene_rank": []} for t in TASKS}
    for index in range(len(split.users)):
        user, raw_items, raw_scenes = view.raw(index)
        joint = view.world.oracle_joint(user, raw_items[:-1], raw_scenes[:-1])
        target = joint_ranks(joint, raw_items[-1], raw_scenes[-1], view.vocab_items)
        for task in TASKS:
            ranks[task]["item_rank"].append(target[task])
            ranks[task]["scene_rank"].append(target["scene_rank"])
    return {t: {k: np.array(v) for k, v in r.items()} for t, r in ranks.items()}


def oracle_gap(model: Any, split: LeaveOneOutSplit, world_json: str, max_len: int,
               users: int = 1000, seed: int = 0) -> Dict[str, float]:
    """Where the model's gap to the oracle lives: its parts swapped with the oracle's.

    The next-event answer factors as P(item | h) = sum_s P(s | h) P(item | h, s). On a fixed
    sample of test users, NDCG@10 of the test item under:
      * `oracle`: both parts the oracle's; `model`: both the model's (its joint factorisation);
      * `oracle_scene_model_item`: the oracle's next-scene distribution with the model's
        in-scene answers (what perfect scene prediction would give the model);
      * `model_scene_oracle_item`: the model's next-scene distribution with the oracle's
        in-scene answers (what perfect item ranking given the scene would give it);
      * `model_in_scene` / `oracle_in_scene`: the in-scene task, where the scene is given and
        the whole gap is item ranking.
    Also the next-scene accuracy@1 of both.
    """
    from dspnet_tf.data.sequences import left_pad  # pylint: disable=import-outside-toplevel
    from dspnet_tf.evaluation.ranking import ranking_metrics as _metrics  # pylint: disable=import-outside-toplevel

    view = WorldView(world_json, split)
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(len(split.users), min(users, len(split.users)), replace=False))
    scores: Dict[str, List[float]] = {}
    scene_hits = {"model": [], "oracle": []}
    for start in range(0, len(sample), 256):
        rows = sample[start:start + 256]
        histories = [split.items[i][:-1][-max_len:] for i in rows]
        scenes = [split.scenes[i][:-1][-max_len:] for i in rows]
        width = max(len(h) for h in histories)
        inputs = {"item_ids": left_pad(histories, width), "scene_ids": left_pad(scenes, width)}
        in_scene = np.exp(model.in_scene_log_probs(inputs).numpy())[:, :, 2:]  # [B, S, items]
        outputs = model(inputs, training=False)
        own = outputs["item_logits"].numpy()[:, 2:]  # the model's own next-event answer
        p_scene = outputs["scene_logits"].numpy()[:, 2:]
        p_scene = np.exp(p_scene - p_scene.max(axis=1, keepdims=True))
        p_scene /= p_scene.sum(axis=1, keepdims=True)
        for b, index in enumerate(rows):
            user, raw_items, raw_scenes = view.raw(index)
            joint = view.world.oracle_joint(user, raw_items[:-1], raw_scenes[:-1])
            joint = joint[view.vocab_scenes][:, view.vocab_items]  # model's scene / item order
            o_scene = joint.sum(axis=1)
            o_scene = o_scene / o_scene.sum()
            o_item = joint / np.maximum(joint.sum(axis=1, keepdims=True), 1e-300)
            m_item = in_scene[b]
            target_item = split.items[index][-1] - 2
            target_scene = split.scenes[index][-1] - 2
            answers = {
                "oracle": o_scene @ o_item, "model": p_scene[b] @ m_item,
                "model_own_next_event": own[b],
                "oracle_scene_model_item": o_scene @ m_item,
                "model_scene_oracle_item": p_scene[b] @ o_item,
            }
            if target_scene >= 0:
                answers["oracle_in_scene"] = o_item[target_scene]
                answers["model_in_scene"] = m_item[target_scene]
                # The in-scene gap surface by surface.
                name = split.scene_vocab.tokens[target_scene + 2]
                answers[f"oracle_in_scene_{name}"] = o_item[target_scene]
                answers[f"model_in_scene_{name}"] = m_item[target_scene]
            for name, p in answers.items():
                rank = int((p >= p[target_item]).sum()) if target_item >= 0 else len(p)
                scores.setdefault(name, []).append(float(_metrics(np.array([rank]))["ndcg@10"][0]))
            scene_hits["model"].append(float(np.argmax(p_scene[b]) == target_scene))
            scene_hits["oracle"].append(float(np.argmax(o_scene) == target_scene))
    out = {f"{name}_ndcg@10": float(np.mean(v)) for name, v in scores.items()}
    out.update({f"{name}_users": float(len(v)) for name, v in scores.items()
                if name.startswith("model_in_scene_")})
    out.update({f"{name}_scene_acc@1": float(np.mean(v)) for name, v in scene_hits.items()})
    out["users"] = int(len(sample))
    return out


def _per_user(ranks: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    metrics = ranking_metrics(ranks["item_rank"])
    scene = ranking_metrics(ranks["scene_rank"], (1, 3))
    metrics["scene_acc@1"], metrics["scene_ndcg@3"] = scene["hr@1"], scene["ndcg@3"]
    return metrics


def paired_test(ours: np.ndarray, theirs: np.ndarray) -> Dict[str, float]:
    """Wilcoxon signed-rank test on paired per-user values; p = 1 when they never differ."""
    from scipy.stats import wilcoxon  # pylint: disable=import-outside-toplevel

    # Normal approximation: thousands of users, and many tied (zero) differences.
    p_value = (float(wilcoxon(ours, theirs, method="approx").pvalue)
               if np.any(ours != theirs) else 1.0)
    return {"p_value": p_value, "mean_difference": float(np.mean(ours) - np.mean(theirs)),
            "ratio": float(np.mean(ours) / np.mean(theirs)) if np.mean(theirs) > 0 else float("nan")}


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not every OS has affinity masks
        return os.cpu_count() or 1


def default_workers() -> int:
    """Runs trained at once by default: one per usable core, at most `MAX_DEFAULT_WORKERS`."""
    return max(1, min(usable_cores(), MAX_DEFAULT_WORKERS))


def train_and_score(name: str, seed: int, split: LeaveOneOutSplit, settings: Dict[str, Any],
                    on_epoch: Optional[Callable[[Dict[str, Any]], None]] = None) -> Dict[str, Any]:
    """One run of the benchmark: trains `name` with `seed` and ranks the test targets.

    The one implementation behind every run, in this process or in a worker process. Returns
    plain data (picklable): per-user test metrics, the validation curve and the run's timing.
    """
    from dspnet_tf.evaluation.leave_one_out import rank_last_events  # pylint: disable=import-outside-toplevel
    from dspnet_tf.models import BERT4Rec  # pylint: disable=import-outside-toplevel
    from dspnet_tf.models.dspnet import DSPnet  # pylint: disable=import-outside-toplevel
    from dspnet_tf.models.most_popular import MostPopular  # pylint: disable=import-outside-toplevel
    from dspnet_tf.training import fit_with_early_stopping  # pylint: disable=import-outside-toplevel

    started = time.time()
    if name in POPULARITY_MODELS:
        model = MostPopular(*split.train, len(split.item_vocab), len(split.scene_vocab),
                            by_target_scene=name == "scene_popular")
        max_len = int(settings["overrides"].get("max_len", 50))
        per_user = {task: _per_user(rank_last_events(model, *split.test, max_len=max_len,
                                                     task=task)) for task in TASKS}
        return {"per_user": per_user, "curve": [], "wall_seconds": time.time() - started,
                "timing": {"seconds_to_best": 0.0, "best_epoch": 0, "seconds_per_epoch": 0.0}}
    config = model_config(name, split, settings["overrides"])
    result = fit_with_early_stopping(
        config, split, epochs=settings["epochs"],
        patience=settings["patience"], batch_size=settings["batch_size"],
        learning_rate=settings["learning_rate"], seed=seed,
        model_factory=BERT4Rec if name == "bert4rec" else DSPnet,
        window_stride=settings.get("window_stride"), on_epoch=on_epoch)
    history = result["history"]
    diagnostic = None
    world_json = settings.get("world_json")
    if (world_json and name in settings.get("diagnose", ()) and config.target_scene_conditioning
            and config.alpha > 0):
        diagnostic = oracle_gap(result["model"], split, world_json, config.max_len,
                                users=settings.get("diagnostic_users", 1000))
    return {
        "per_user": {task: _per_user(result["test_ranks_by_task"][task]) for task in TASKS},
        "diagnostic": diagnostic,
        "curve": [h["valid_ndcg@10"] for h in history],
        "wall_seconds": time.time() - started,
        "timing": {"seconds_to_best": result["seconds_to_best"],
                   "best_epoch": result["best_epoch"],
                   "seconds_per_epoch": history[-1]["seconds"] / len(history),
                   "best_valid_ndcg@10": result["valid"]["valid_ndcg@10"],
                   "selection_task": result["selection_task"],
                   # Whether the one-real-scene reduction (`reduce_single_scene`) applies to the run.
                   "single_scene_reduced": (config.reduce_single_scene
                                            and config.resolved()
                                            != config.with_resolved_item_loss()),
                   # Whether the model has the repeat pointer (it depends on the log's repeats).
                   "repeat_pointer": config.uses_repeat_pointer},
    }


# A worker's splits, loaded once per file: a run's task names its split's file instead of
# carrying the split, so the task queue only ever holds a few short messages.
_WORKER_SPLITS: Dict[str, LeaveOneOutSplit] = {}


def _train_and_score_in_worker(name: str, seed: int, split_file: str,
                               settings: Dict[str, Any]) -> Dict[str, Any]:
    split = _WORKER_SPLITS.get(split_file)
    if split is None:
        with open(split_file, "rb") as handle:
            split = _WORKER_SPLITS[split_file] = pickle.load(handle)
    return train_and_score(name, seed, split, settings)


def _start_worker(threads: int) -> None:
    """Worker process set-up: TensorFlow's thread pools sized to the worker's share of cores."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    # Before the first op, or TensorFlow ignores them.
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)


class _Runs:
    """The (model, seed) runs of one split, submitted together and collected in their order."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.runs: List[Tuple[str, int, "concurrent.futures.Future[Dict[str, Any]]"]] = []


class _Runner:
    """Trains and scores (model, seed) runs, one shared progress bar.

    With `workers` > 1 the runs go to a pool of worker processes (each with its share of the
    cores as TensorFlow threads) and train side by side. A run of these small models keeps
    about 1.2 of 2 cores busy: much of a step is small ops and per-op overhead that a second
    thread does not speed up (one run with 1 thread took 1.2 x as long as with 2), so two
    single-threaded runs at once finish sooner than the same two runs one after the other.
    Every run seeds itself (`fit_with_early_stopping`), so which worker trains it, and next to
    what, does not change its result; its seconds do (it shares the machine).
    """

    def __init__(self, settings: Dict[str, Any], bar: Any,
                 progress: Optional[Callable[[str], None]], workers: int = 1) -> None:
        self.settings = settings
        self.bar = bar
        self.progress = progress
        self.workers = int(workers)
        self._pool: Optional[concurrent.futures.ProcessPoolExecutor] = None
        self._split_dir: Optional[str] = None
        # id(split) -> (split, file); holding the split keeps its id from being reused.
        self._split_files: Dict[int, Tuple[LeaveOneOutSplit, str]] = {}
        if self.workers > 1:
            self._split_dir = tempfile.mkdtemp(prefix="dspnet-quality-splits-")
            # "spawn": a forked child would inherit this process's TensorFlow runtime.
            self._pool = concurrent.futures.ProcessPoolExecutor(
                self.workers, mp_context=multiprocessing.get_context("spawn"),
                initializer=_start_worker,
                initargs=(max(1, usable_cores() // self.workers),))

    def close(self, cancel: bool = False) -> None:
        """Shuts the pool down; with `cancel` (an error or Ctrl-C) its running runs are stopped."""
        if self._pool is None:
            return
        if cancel:
            # shutdown() would wait for the running runs (minutes each), and Python 3.10's
            # executor has no public way to stop them, so the workers are terminated.
            for process in list((getattr(self._pool, "_processes", None) or {}).values()):
                process.terminate()
        self._pool.shutdown(wait=True, cancel_futures=cancel)
        self._pool = None
        if self._split_dir is not None:
            shutil.rmtree(self._split_dir, ignore_errors=True)
            self._split_dir = None

    def _split_file(self, split: LeaveOneOutSplit) -> str:
        """The split pickled once into the run's temporary folder, for the workers to load."""
        if id(split) not in self._split_files:
            assert self._split_dir is not None
            path = os.path.join(self._split_dir, f"split_{len(self._split_files)}.pkl")
            with open(path, "wb") as handle:
                pickle.dump(split, handle, protocol=pickle.HIGHEST_PROTOCOL)
            self._split_files[id(split)] = (split, path)
        return self._split_files[id(split)][1]

    def submit(self, label: str, split: LeaveOneOutSplit, models: Sequence[str],
               seeds: Sequence[int], settings: Optional[Dict[str, Any]] = None) -> _Runs:
        """Starts the runs (in this process they run now; in the pool they are queued).

        `settings` replaces the runner's for these runs (e.g. a sweep world's runs, which get
        no oracle-gap diagnostic of the main world)."""
        settings = settings if settings is not None else self.settings
        runs = _Runs(label)
        for name, seed in [(name, seed) for name in models for seed in seeds]:
            if self._pool is None:
                self.bar.set_description(f"{label}: {name} seed {seed}")
                future: "concurrent.futures.Future[Dict[str, Any]]" = concurrent.futures.Future()
                future.set_result(train_and_score(
                    name, seed, split, settings,
                    on_epoch=lambda record: self.bar.set_postfix(
                        epoch=record["epoch"], valid_ndcg10=f"{record['valid_ndcg@10']:.4f}")))
                self._finished(label, name, seed, future)
            else:
                # A split is megabytes: queued tasks carrying it could fill the queue's pipe,
                # and a feeder thread blocked on it hangs shutdown after a Ctrl-C.
                future = self._pool.submit(_train_and_score_in_worker, name, seed,
                                           self._split_file(split), settings)
                future.add_done_callback(
                    lambda done, name=name, seed=seed: self._finished(label, name, seed, done))
            runs.runs.append((name, seed, future))
        return runs

    def _finished(self, label: str, name: str, seed: int,
                  future: "concurrent.futures.Future[Dict[str, Any]]") -> None:
        if future.cancelled() or future.exception() is not None:
            return
        out = future.result()
        self.bar.update(1)
        if self.progress:
            self.progress(f"{label}: {name} seed {seed}: test ndcg@10 next event "
                          f"{out['per_user'][NEXT_EVENT]['ndcg@10'].mean():.4f}, in-scene "
                          f"{out['per_user'][IN_SCENE]['ndcg@10'].mean():.4f} "
                          f"({out['wall_seconds']:.0f} s)")

    def collect(self, runs: _Runs) -> Dict[str, Any]:
        """Waits for the runs; their per-user metrics (by task, then model), curves, timing and
        oracle-gap diagnostics, by model, in seed order."""
        per_user: Dict[str, Dict[str, List[Dict[str, np.ndarray]]]] = {t: {} for t in TASKS}
        diagnostics: Dict[str, List[Dict[str, float]]] = {}
        curves: Dict[str, List[List[float]]] = {}
        timing: Dict[str, List[Dict[str, float]]] = {}
        for name, seed, future in runs.runs:
            try:
                out = future.result()
            except concurrent.futures.process.BrokenProcessPool as err:
                raise RuntimeError(
                    f"{runs.label}: {name} seed {seed}: a benchmark worker process died (out of "
                    "memory?); --workers 1 trains one run at a time in this process") from err
            for task in TASKS:
                per_user[task].setdefault(name, []).append(out["per_user"][task])
            if out.get("diagnostic"):
                diagnostics.setdefault(name, []).append(out["diagnostic"])
            curves.setdefault(name, [])
            if out["curve"]:  # most-popular trains no epochs
                curves[name].append(out["curve"])
            timing.setdefault(name, []).append(out["timing"])
        return {"per_user": per_user, "curves": curves, "timing": timing,
                "diagnostics": diagnostics}


def _summary(per_user: Dict[str, List[Dict[str, np.ndarray]]],
             reported: Sequence[str] = REPORTED) -> Dict[str, Any]:
    return {
        m: {k: {"mean": float(np.mean([run[k].mean() for run in runs])),
                "std": float(np.std([run[k].mean() for run in runs]))}
            for k in reported}
        for m, runs in per_user.items()
    }


def _task_table(task: str, per_user: Dict[str, List[Dict[str, np.ndarray]]],
                oracle: Optional[Dict[str, np.ndarray]], models: Sequence[str]) -> Dict[str, Any]:
    """One task's table: every model's summary, the oracle's, and DSPnet's paired tests."""
    reported = REPORTED_BY_TASK[task]
    summary = _summary(per_user, reported)
    oracle_summary = ({k: float(v.mean()) for k, v in _per_user(oracle).items() if k in reported}
                      if oracle is not None else None)
    significance, comparisons = None, {}
    baselines = [m for m in models if m != "dspnet" and not m.startswith("dspnet_")
                 and m in per_user]
    if "dspnet" in per_user and baselines:
        ours = _seed_mean(per_user["dspnet"])
        for name in baselines:
            comparisons[name] = paired_test(ours, _seed_mean(per_user[name]))
        best = max(baselines, key=lambda m: summary[m]["ndcg@10"]["mean"])
        significance = {"model": "dspnet", "baseline": best, "metric": "ndcg@10",
                        "p_value": comparisons[best]["p_value"],
                        "ratio": comparisons[best]["ratio"]}
    return {"models": summary, "oracle": oracle_summary, "significance": significance,
            "comparisons": comparisons}


def scene_lift(tasks: Dict[str, Dict[str, Any]], model: str = "dspnet") -> Optional[Dict[str, float]]:
    """How much of the oracle's in-scene lift the model captures: (model in-scene - model next
    event) / (oracle in-scene - oracle next event), on NDCG@10."""
    nxt, ins = tasks.get(NEXT_EVENT), tasks.get(IN_SCENE)
    if not nxt or not ins or not nxt["oracle"] or model not in nxt["models"]:
        return None
    model_lift = ins["models"][model]["ndcg@10"]["mean"] - nxt["models"][model]["ndcg@10"]["mean"]
    oracle_lift = ins["oracle"]["ndcg@10"] - nxt["oracle"]["ndcg@10"]
    return {"model_lift": model_lift, "oracle_lift": oracle_lift,
            "captured": model_lift / oracle_lift if oracle_lift > 0 else float("nan")}


def _seed_mean(runs: List[Dict[str, np.ndarray]], metric: str = "ndcg@10") -> np.ndarray:
    """Per-user metric averaged over seeds (the paired unit of the significance tests)."""
    return np.mean([run[metric] for run in runs], axis=0)


def _world_config(data: str) -> Optional[Dict[str, Any]]:
    path = os.path.join(data, "world.json") if os.path.isdir(data) else None
    if not path or not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)["scene_world"]


def run_quality_benchmark(
    data: str,
    out_dir: str,
    models: Sequence[str] = MAIN_MODELS,
    seeds: Sequence[int] = (0, 1, 2),
    epochs: int = 30,
    patience: int = 5,
    batch_size: int = 256,
    learning_rate: float = 1e-3,
    overrides: Optional[Dict[str, Any]] = None,
    window_stride: Optional[int] = None,
    studies: Sequence[str] = (),
    study_seeds: Optional[Sequence[int]] = None,
    misalignments: Sequence[float] = MISALIGNMENTS,
    sweep_users: Optional[int] = None,
    max_users: Optional[int] = None,
    progress: Optional[Callable[[str], None]] = None,
    workers: int = 1,
    tasks: Sequence[str] = TASKS,
) -> Dict[str, Any]:
    """Trains and scores every model for every seed, runs the studies, writes the results.

    Args:
      data: event log file/folder (a scene-world folder also gets the oracle row), or
        `movielens-100k`.
      out_dir: where results.json, results.md and the plots go (created).
      models: the main table's models.
      seeds: seeds of the main table.
      epochs, patience, batch_size, learning_rate: the tuning budget, the same for every model.
      overrides: DSPnetConfig fields applied to every model (e.g. max_len, item_dim).
      window_stride: stride of the training windows over long histories (default: every
        event a target once per epoch).
      studies: any of "ablations", "prior", "misalignment".
      study_seeds: seeds of the studies (default: the first main seed).
      misalignments: the sweep's misalignment values (needs a scene-world `data` folder).
      sweep_users: users per sweep world (default: as many as the benchmark's world).
      max_users: benchmark only the first that many users of `data` (smoke runs).
      progress: called with one line per finished run.
      workers: runs trained at once, each in its own process with its share of the cores
        (1: one after the other, in this process). Results do not depend on it; the runs'
        seconds do, since they share the machine.
      tasks: the tables to report, any of "next_event" (history only) and "in_scene" (the
        scene of the event to predict is given). The top level of results.json is always the
        next-event task; "tasks" holds the chosen ones.
    """
    from tqdm import tqdm  # pylint: disable=import-outside-toplevel

    unknown = [m for m in models if m not in KNOWN_MODELS]
    if unknown:
        raise ValueError(f"unknown model(s) {', '.join(unknown)}; known: {', '.join(KNOWN_MODELS)}")
    bad_tasks = [t for t in tasks if t not in TASKS]
    if bad_tasks or not tasks:
        raise ValueError(f"unknown task(s) {', '.join(bad_tasks) or '(none given)'}; known: "
                         f"{', '.join(TASKS)}")
    bad_studies = [s for s in studies if s not in STUDIES]
    if bad_studies:
        raise ValueError(f"unknown study {', '.join(bad_studies)}; known: {', '.join(STUDIES)}")
    world = _world_config(data)
    if "misalignment" in studies and world is None:
        raise ValueError(f"the misalignment sweep needs a scene-world folder (with world.json); "
                         f"{data!r} is not one")
    study_seeds = list(study_seeds) if study_seeds is not None else list(seeds[:1])
    os.makedirs(out_dir, exist_ok=True)
    settings = {"epochs": epochs, "patience": patience, "batch_size": batch_size,
                "learning_rate": learning_rate, "overrides": dict(overrides or {}),
                "window_stride": window_stride, "max_users": max_users, "workers": int(workers),
                "world_json": world_json_of(data), "diagnose": ["dspnet"],
                "diagnostic_users": 1000}
    started = time.time()
    split = leave_one_out(load_benchmark_data(data, max_users))

    plan: List[Tuple[str, Sequence[str], Sequence[int]]] = [("main", list(models), list(seeds))]
    for study, study_models in (("ablations", ABLATION_MODELS), ("prior", PRIOR_MODELS)):
        if study in studies:
            # Each study compares against the full model: it trains `dspnet` itself unless the
            # main table does (then it reuses the main table's dspnet runs of the same seeds).
            planned = {name for _, plan_models, _ in plan for name in plan_models}
            plan.append((study, [m for m in ("dspnet", *study_models) if m not in planned],
                         study_seeds))
    sweep_models = SWEEP_MODELS
    # A bad override (e.g. dropout=2) fails here, naming the field, not in a worker run later.
    for name in {name for _, plan_models, _ in plan for name in plan_models} - set(POPULARITY_MODELS):
        model_config(name, split, settings["overrides"])
    total = sum(len(m) * len(s) for _, m, s in plan)
    if "misalignment" in studies:
        total += len(misalignments) * len(sweep_models) * len(study_seeds)

    with tqdm(total=total, desc="quality runs", unit="run") as bar:
        runner = _Runner(settings, bar, progress, workers)
        try:
            # Every run is queued before any is collected, so the workers never wait on a
            # study's or the sweep's set-up (worlds are generated while earlier runs train).
            submitted = [runner.submit(label, split, plan_models, plan_seeds)
                         for label, plan_models, plan_seeds in plan]
            sweep_runs = (_submit_sweep(world, misalignments, sweep_users, sweep_models,
                                        study_seeds, runner, out_dir)
                          if "misalignment" in studies else None)
            oracle = oracle_ranks(data, split)
            per_user: Dict[str, Dict[str, List[Dict[str, np.ndarray]]]] = {t: {} for t in TASKS}
            curves: Dict[str, List[List[float]]] = {}
            timing: Dict[str, List[Dict[str, float]]] = {}
            diagnostics: Dict[str, List[Dict[str, float]]] = {}
            for runs in submitted:
                out = runner.collect(runs)
                for task in TASKS:
                    per_user[task].update(out["per_user"][task])
                curves.update(out["curves"])
                timing.update(out["timing"])
                diagnostics.update(out["diagnostics"])
            sweep = (_collect_sweep(sweep_runs, sweep_users or world["users"], runner)
                     if sweep_runs is not None else None)
        except BaseException:
            runner.close(cancel=True)
            raise
        runner.close()

    tables = {task: _task_table(task, per_user[task],
                                oracle[task] if oracle is not None else None, models)
              for task in TASKS}
    summary = tables[NEXT_EVENT]["models"]
    results = {
        "dataset": data if data.lower() in MOVIELENS_NAMES else os.path.abspath(data),
        # The top level is the next-event task (the shape earlier results have); "tasks" has
        # both, each in that shape.
        "seeds": list(seeds), "models": summary, "oracle": tables[NEXT_EVENT]["oracle"],
        "significance": tables[NEXT_EVENT]["significance"],
        "comparisons": tables[NEXT_EVENT]["comparisons"],
        "tasks": {task: tables[task] for task in TASKS if task in tasks},
        "scene_lift": scene_lift(tables) if set(TASKS) <= set(tasks) else None,
        "oracle_gap": {name: _mean_dicts(runs) for name, runs in diagnostics.items()},
        "studies": {"seeds": study_seeds, "ablations": [m for m in ABLATION_MODELS if m in summary],
                    "prior": ["dspnet", *[m for m in PRIOR_MODELS if m in summary]]
                    if "prior" in studies else [],
                    "misalignment": sweep},
        "split": split.summary(), "timing": timing, "settings": settings,
        "wall_seconds": time.time() - started,
    }
    from dspnet_tf.resilience import atomic_write  # pylint: disable=import-outside-toplevel

    with atomic_write(os.path.join(out_dir, "results.json")) as handle:  # never half a file
        json.dump(results, handle, indent=2)
    _write_markdown(results, os.path.join(out_dir, "results.md"))
    _plot_curves(curves, os.path.join(out_dir, "training_curves.png"))
    _plot_main(results, os.path.join(out_dir, "main_table.png"))
    if sweep:
        _plot_sweep(sweep, os.path.join(out_dir, "misalignment_sweep.png"))
    return results


def _mean_dicts(runs: List[Dict[str, float]]) -> Dict[str, float]:
    """Key-wise mean of the runs' diagnostics (seeds)."""
    return {key: float(np.mean([run[key] for run in runs])) for key in runs[0]}


def _submit_sweep(world: Dict[str, Any], misalignments: Sequence[float],
                  users: Optional[int], sweep_models: Sequence[str], seeds: Sequence[int],
                  runner: _Runner, out_dir: str) -> List[Tuple[float, str, LeaveOneOutSplit, _Runs]]:
    """Generates the sweep's worlds (identical to --data's world but for misalignment) and
    submits the sweep models' runs on each (SWEEP_MODELS)."""
    from dspnet_tf.data.scene_world import SceneWorld, SceneWorldConfig  # pylint: disable=import-outside-toplevel

    points = []
    for value in misalignments:
        config = SceneWorldConfig(**{**world, "misalignment": float(value),
                                     "users": users or world["users"]})
        folder = os.path.join(out_dir, "worlds", f"misalignment_{value:g}")
        SceneWorld(config).generate().write(folder)
        split = leave_one_out(read_event_log(folder))
        points.append((float(value), folder, split,
                       runner.submit(f"misalignment {value:g}", split, sweep_models, seeds,
                                     settings={**runner.settings, "world_json": None})))
    return points


def _collect_sweep(points: List[Tuple[float, str, LeaveOneOutSplit, _Runs]], users: int,
                   runner: _Runner) -> Dict[str, Any]:
    """At each misalignment, both tasks: DSPnet vs item-only SASRec in the next-event task and
    vs the best in-scene baseline in the in-scene task (paired tests), the oracle's scores and
    the scene lift (in-scene minus next-event NDCG@10) of DSPnet and of the oracle."""
    sweep: Dict[str, Any] = {"users": users, "points": []}
    for value, folder, split, runs in points:
        out = runner.collect(runs)
        oracle = oracle_ranks(folder, split)
        point: Dict[str, Any] = {"misalignment": value, "tasks": {}}
        for task in TASKS:
            per_user = out["per_user"][task]
            summary = _summary(per_user, REPORTED_BY_TASK[task])
            keys = ("ndcg@10", "hr@10") + (("scene_acc@1",) if task == NEXT_EVENT else ())
            baselines = [m for m in per_user if m != "dspnet"]
            rival = ("sasrec" if task == NEXT_EVENT or "sasrec" not in per_user or len(baselines) == 1
                     else max((m for m in baselines if m != "sasrec"),
                              key=lambda m: summary[m]["ndcg@10"]["mean"]))
            test = paired_test(_seed_mean(per_user["dspnet"]), _seed_mean(per_user[rival]))
            point["tasks"][task] = {
                "models": {m: {k: summary[m][k] for k in keys} for m in per_user},
                "oracle_ndcg@10": float(_per_user(oracle[task])["ndcg@10"].mean()),
                "baseline": rival, "dspnet_vs_baseline": test,
                "dspnet_significantly_below": bool(test["mean_difference"] < 0
                                                   and test["p_value"] < SIGNIFICANCE_LEVEL),
            }
        nxt, ins = point["tasks"][NEXT_EVENT], point["tasks"][IN_SCENE]
        point["scene_lift"] = {
            "dspnet": ins["models"]["dspnet"]["ndcg@10"]["mean"]
            - nxt["models"]["dspnet"]["ndcg@10"]["mean"],
            "oracle": ins["oracle_ndcg@10"] - nxt["oracle_ndcg@10"]}
        # The shape earlier sweeps had: the next-event task against SASRec.
        point.update({"models": nxt["models"], "oracle_ndcg@10": nxt["oracle_ndcg@10"],
                      "dspnet_vs_sasrec": nxt["dspnet_vs_baseline"],
                      "dspnet_significantly_below": nxt["dspnet_significantly_below"]})
        sweep["points"].append(point)
    return sweep


TASK_TITLES = {NEXT_EVENT: "Next event (history only)",
               IN_SCENE: "In-scene (the scene of the event to predict is given)"}


def _write_markdown(results: Dict[str, Any], path: str) -> None:
    minutes = results["wall_seconds"] / 60
    tasks = results.get("tasks") or {NEXT_EVENT: results}

    def table(names: Sequence[str], task: str = NEXT_EVENT) -> List[str]:
        cols = ("hr@10", "ndcg@10", "mrr") + (("scene_acc@1",) if task == NEXT_EVENT else ())
        oracle = tasks[task]["oracle"]
        lines = ["| model | " + " | ".join(cols) + (" | ndcg@10 / oracle |" if oracle else " |"),
                 "|---" * (len(cols) + 1 + (1 if oracle else 0)) + "|"]
        if oracle:
            lines.append("| oracle | " + " | ".join(f"{oracle[c]:.4f}" for c in cols) + " | 1.00 |")
        for name in names:
            metrics = tasks[task]["models"][name]
            several = len(results["timing"].get(name, [])) > 1  # a spread needs 2+ seeds
            cells = [f"{metrics[c]['mean']:.4f}" + (f" ± {metrics[c]['std']:.4f}" if several else "")
                     for c in cols]
            if oracle:
                cells.append(f"{metrics['ndcg@10']['mean'] / oracle['ndcg@10']:.2f}")
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        return lines

    studies = results["studies"]
    in_studies = set(studies["ablations"]) | set(studies["prior"]) - {"dspnet"}
    main = [m for m in results["models"] if m not in in_studies]
    lines = [f"# Quality: {results['dataset']}", "",
             f"Seeds {results['seeds']}; split {results['split']}; settings "
             f"{results['settings']}; {minutes:.1f} min in all.", ""]
    for task in TASKS:
        if task not in tasks:
            continue
        lines += [f"## Main table: {TASK_TITLES[task]}", ""]
        lines += table(main, task)
        sig = tasks[task]["significance"]
        if sig:
            best = tasks[task]["models"][sig["baseline"]]["ndcg@10"]["mean"]
            ratio = tasks[task]["models"]["dspnet"]["ndcg@10"]["mean"] / best
            lines += ["", f"DSPnet / best baseline ({sig['baseline']}) NDCG@10: **{ratio:.3f}x**; "
                          f"Wilcoxon signed-rank on per-user NDCG@10 (averaged over seeds): "
                          f"p = {sig['p_value']:.3g}.", "",
                      "| dspnet vs | ndcg@10 ratio | p-value |", "|---|---|---|"]
            lines += [f"| {name} | {c['ratio']:.3f} | {c['p_value']:.3g} |"
                      for name, c in tasks[task]["comparisons"].items()]
        lines.append("")
    lift = results.get("scene_lift")
    if lift:
        lines += [f"Scene lift captured by DSPnet (in-scene minus next-event NDCG@10, over the "
                  f"oracle's): {lift['model_lift']:.4f} / {lift['oracle_lift']:.4f} = "
                  f"**{lift['captured']:.2f}**.", ""]
    for name, gap in (results.get("oracle_gap") or {}).items():
        lines += [f"## Where the oracle gap lives ({name}, {gap['users']:.0f} test users)", "",
                  "NDCG@10 of the next-event answer sum_s P(s|h) P(item|h,s) with each part from "
                  "the model or the oracle, and of the in-scene answer:", "",
                  "| next scene P(s\\|h) | item given scene P(item\\|h,s) | ndcg@10 |",
                  "|---|---|---|"]
        for scene_part, item_part, key in (("(the model's served next-event answer)", "", "model_own_next_event"),
                                           ("model", "model", "model"),
                                           ("oracle", "model", "oracle_scene_model_item"),
                                           ("model", "oracle", "model_scene_oracle_item"),
                                           ("oracle", "oracle", "oracle"),
                                           ("given", "model", "model_in_scene"),
                                           ("given", "oracle", "oracle_in_scene")):
            if f"{key}_ndcg@10" in gap:
                lines.append(f"| {scene_part} | {item_part} | {gap[f'{key}_ndcg@10']:.4f} |")
        lines += ["", f"Next-scene accuracy@1: model {gap['model_scene_acc@1']:.4f}, oracle "
                      f"{gap['oracle_scene_acc@1']:.4f}.", ""]
        surfaces = [k[len("model_in_scene_"):-len("_users")] for k in gap
                    if k.startswith("model_in_scene_") and k.endswith("_users")]
        if surfaces:
            lines += ["In-scene NDCG@10 by target scene:", "",
                      "| target scene | users | model | oracle | model / oracle |",
                      "|---|---|---|---|---|"]
            for name in surfaces:
                ours, best = gap[f"model_in_scene_{name}_ndcg@10"], gap[f"oracle_in_scene_{name}_ndcg@10"]
                lines.append(f"| {name} | {gap[f'model_in_scene_{name}_users']:.0f} | {ours:.4f} | "
                             f"{best:.4f} | {ours / best if best else float('nan'):.2f} |")
            lines.append("")
    for title, names in (("Ablations", studies["ablations"]), ("Prior sensitivity", studies["prior"])):
        if names:
            lines += ["", f"## {title} (seeds {studies['seeds']})", ""]
            # The reference row only when dspnet ran (an ablation named alone in --models
            # has no study around it).
            for task in tasks:
                lines += [f"{TASK_TITLES[task]}:", ""]
                lines += table([n for n in dict.fromkeys(["dspnet", *names])
                                if n in tasks[task]["models"]], task)
                lines.append("")
    sweep = studies["misalignment"]
    if sweep:
        lines += ["", f"## Misalignment sweep ({sweep['users']} users per world, seeds "
                      f"{studies['seeds']})", ""]
        for task in TASKS:
            if not all("tasks" in p for p in sweep["points"]):
                break
            lines += [f"{TASK_TITLES[task]}:", "",
                      "| misalignment | oracle ndcg@10 | dspnet ndcg@10 | baseline | baseline "
                      "ndcg@10 | ratio | p-value | dspnet significantly below? |",
                      "|---" * 8 + "|"]
            for point in sweep["points"]:
                part = point["tasks"][task]
                test = part["dspnet_vs_baseline"]
                lines.append(
                    f"| {point['misalignment']:g} | {part['oracle_ndcg@10']:.4f} | "
                    f"{part['models']['dspnet']['ndcg@10']['mean']:.4f} | {part['baseline']} | "
                    f"{part['models'][part['baseline']]['ndcg@10']['mean']:.4f} | "
                    f"{test['ratio']:.3f} | {test['p_value']:.3g} | "
                    f"{'yes' if part['dspnet_significantly_below'] else 'no'} |")
            lines.append("")
        if all("scene_lift" in p for p in sweep["points"]):
            lines += ["Scene lift (in-scene minus next-event NDCG@10):", "",
                      "| misalignment | dspnet | oracle |", "|---|---|---|"]
            lines += [f"| {p['misalignment']:g} | {p['scene_lift']['dspnet']:.4f} | "
                      f"{p['scene_lift']['oracle']:.4f} |" for p in sweep["points"]]
    timing = results["timing"]
    lines += ["", "## Training time (seconds, mean over runs)", ""]
    workers = results["settings"].get("workers", 1)
    if workers > 1:
        lines += [f"{workers} runs trained at once (`--workers`), sharing the machine: "
                  "the seconds are longer than those of a run alone, and runs compare only "
                  "roughly. `--workers 1` times models against each other.", ""]
    lines += ["| model | best epoch | seconds to best | seconds per epoch |", "|---|---|---|---|"]
    for name, runs in timing.items():
        if runs and name not in POPULARITY_MODELS:
            lines.append(f"| {name} | {np.mean([r['best_epoch'] for r in runs]):.1f} | "
                         f"{np.mean([r['seconds_to_best'] for r in runs]):.0f} | "
                         f"{np.mean([r['seconds_per_epoch'] for r in runs]):.1f} |")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")


def _pyplot():
    import matplotlib  # pylint: disable=import-outside-toplevel

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

    return plt


def _plot_curves(curves: Dict[str, List[List[float]]], path: str) -> None:
    plt = _pyplot()
    fig, axis = plt.subplots(figsize=(7, 4.5))
    for index, (name, runs) in enumerate(curves.items()):
        for i, run in enumerate(runs):
            axis.plot(range(1, len(run) + 1), run, label=name if i == 0 else None,
                      color=f"C{index % 10}", linestyle="-" if index < 10 else "--", alpha=0.8)
    axis.set_xlabel("epoch")
    axis.set_ylabel("validation NDCG@10")
    if any(curves.values()):
        axis.legend(fontsize=7, ncol=2)
    else:
        axis.text(0.5, 0.5, "no trained models (most-popular only)", ha="center",
                  transform=axis.transAxes)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _plot_main(results: Dict[str, Any], path: str) -> None:
    """Test NDCG@10 per model (mean and std over seeds), the oracle as a line."""
    plt = _pyplot()
    names = list(results["models"])
    means = [results["models"][n]["ndcg@10"]["mean"] for n in names]
    stds = [results["models"][n]["ndcg@10"]["std"] for n in names]
    fig, axis = plt.subplots(figsize=(max(6, 0.7 * len(names)), 4))
    axis.bar(range(len(names)), means, yerr=stds, color="C0", capsize=3)
    if results["oracle"]:
        axis.axhline(results["oracle"]["ndcg@10"], color="C3", linestyle="--", label="oracle")
        axis.legend()
    axis.set_xticks(range(len(names)))
    axis.set_xticklabels(names, rotation=45, ha="right", fontsize=8)
    axis.set_ylabel("test NDCG@10")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _plot_sweep(sweep: Dict[str, Any], path: str) -> None:
    """Per task, NDCG@10 against misalignment (models and oracle); then the scene lifts."""
    plt = _pyplot()
    points = sweep["points"]
    xs = [p["misalignment"] for p in points]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for axis, task in zip(axes, TASKS):
        for name in points[0]["tasks"][task]["models"]:
            axis.plot(xs, [p["tasks"][task]["models"][name]["ndcg@10"]["mean"] for p in points],
                      marker="o", label=name)
        axis.plot(xs, [p["tasks"][task]["oracle_ndcg@10"] for p in points], linestyle="--",
                  color="k", label="oracle")
        axis.set_title(TASK_TITLES[task], fontsize=9)
        axis.set_xlabel("misalignment")
        axis.set_ylabel("test NDCG@10")
        axis.legend(fontsize=7)
    for name in ("dspnet", "oracle"):
        axes[2].plot(xs, [p["scene_lift"][name] for p in points], marker="o", label=name)
    axes[2].axhline(0.0, color="grey", linewidth=0.5)
    axes[2].set_title("scene lift: in-scene minus next-event NDCG@10", fontsize=9)
    axes[2].set_xlabel("misalignment")
    axes[2].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
