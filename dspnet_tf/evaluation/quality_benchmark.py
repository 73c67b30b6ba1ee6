"""The quality benchmark: every model on the same split, seeds, protocol and tuning budget.

Writes `results.json` (the shape other tools read), `results.md` (tables, each model also as a
fraction of the oracle) and `training_curves.png`.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

from dspnet_tf.config import ABLATIONS, BASELINES, DSPnetConfig
from dspnet_tf.data.event_log import read_event_log
from dspnet_tf.data.splits import LeaveOneOutSplit, leave_one_out
from dspnet_tf.evaluation.ranking import ranking_metrics

REPORTED = ("hr@5", "hr@10", "hr@20", "ndcg@5", "ndcg@10", "ndcg@20", "mrr", "scene_acc@1",
            "scene_ndcg@3")
KNOWN_MODELS = ("dspnet", "most_popular", *BASELINES, *(f"dspnet_{a}" for a in ABLATIONS))


def model_config(name: str, split: LeaveOneOutSplit, overrides: Dict[str, Any]) -> DSPnetConfig:
    """The DSPnetConfig behind a benchmark model name (dspnet, a baseline, dspnet_<ablation>)."""
    base = DSPnetConfig(item_vocab_size=len(split.item_vocab),
                        scene_vocab_size=len(split.scene_vocab), **overrides)
    if name == "dspnet":
        return base
    if name in BASELINES:
        return base.as_baseline(name)
    if name.startswith("dspnet_") and name[len("dspnet_"):] in ABLATIONS:
        return base.with_ablation(name[len("dspnet_"):])
    raise ValueError(f"unknown model {name!r}; known: {', '.join(KNOWN_MODELS)}")


def oracle_ranks(data_dir: str, split: LeaveOneOutSplit) -> Optional[Dict[str, np.ndarray]]:
    """Ranks of the test targets under the scene world's exact oracle, or None for other data.

    The oracle ranks among the same candidates as the models: the items of the vocabulary.
    """
    world_json = os.path.join(data_dir, "world.json") if os.path.isdir(data_dir) else None
    if not world_json or not os.path.exists(world_json):
        return None
    from dspnet_tf.data.scene_world import load_world  # pylint: disable=import-outside-toplevel

    world = load_world(world_json)
    names = list(world.config.scene_names)
    vocab_items = np.array([int(t[1:]) for t in split.item_vocab.tokens[2:]])
    item_ranks, scene_ranks = [], []
    for user, items, scenes in zip(split.users, split.items, split.scenes):
        raw_items = [int(split.item_vocab.tokens[i][1:]) for i in items]
        raw_scenes = [names.index(split.scene_vocab.tokens[s]) for s in scenes]
        p_item, p_scene = world.oracle(int(user[1:]), raw_items[:-1], raw_scenes[:-1])
        candidates = p_item[vocab_items]
        item_ranks.append((candidates >= p_item[raw_items[-1]]).sum())
        scene_ranks.append((p_scene >= p_scene[raw_scenes[-1]]).sum())
    return {"item_rank": np.array(item_ranks), "scene_rank": np.array(scene_ranks)}


def _per_user(ranks: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    metrics = ranking_metrics(ranks["item_rank"])
    scene = ranking_metrics(ranks["scene_rank"], (1, 3))
    metrics["scene_acc@1"], metrics["scene_ndcg@3"] = scene["hr@1"], scene["ndcg@3"]
    return metrics


def run_quality_benchmark(
    data: str,
    out_dir: str,
    models: Sequence[str] = ("dspnet", "sasrec", "sasrec_scene", "gru4rec", "most_popular"),
    seeds: Sequence[int] = (0, 1, 2),
    epochs: int = 30,
    patience: int = 5,
    batch_size: int = 256,
    learning_rate: float = 1e-3,
    overrides: Optional[Dict[str, Any]] = None,
    progress: Optional[Callable[[str], None]] = None,
) -> Dict[str, Any]:
    """Trains and scores every model for every seed; writes results.json / .md / curves."""
    from scipy.stats import wilcoxon  # pylint: disable=import-outside-toplevel
    from tqdm import tqdm  # pylint: disable=import-outside-toplevel

    from dspnet_tf.models.most_popular import MostPopular  # pylint: disable=import-outside-toplevel
    from dspnet_tf.evaluation.leave_one_out import rank_last_events  # pylint: disable=import-outside-toplevel
    from dspnet_tf.training import fit_with_early_stopping  # pylint: disable=import-outside-toplevel

    unknown = [m for m in models if m not in KNOWN_MODELS]
    if unknown:
        raise ValueError(f"unknown model(s) {', '.join(unknown)}; known: {', '.join(KNOWN_MODELS)}")
    os.makedirs(out_dir, exist_ok=True)
    overrides = dict(overrides or {})
    log = read_event_log(data)
    split = leave_one_out(log)
    per_user: Dict[str, List[Dict[str, np.ndarray]]] = {m: [] for m in models}
    curves: Dict[str, List[List[float]]] = {m: [] for m in models}
    timing: Dict[str, List[Dict[str, float]]] = {m: [] for m in models}
    runs = [(m, s) for m in models for s in seeds]
    for name, seed in tqdm(runs, desc="quality runs", unit="run"):
        started = time.time()
        if name == "most_popular":
            model = MostPopular(*split.train, len(split.item_vocab), len(split.scene_vocab))
            max_len = int(overrides.get("max_len", 50))
            ranks = rank_last_events(model, *split.test, max_len=max_len)
            timing[name].append({"seconds_to_best": 0.0, "best_epoch": 0})
        else:
            result = fit_with_early_stopping(model_config(name, split, overrides), split,
                                             epochs=epochs, patience=patience,
                                             batch_size=batch_size, learning_rate=learning_rate,
                                             seed=seed)
            ranks = result["test_ranks"]
            curves[name].append([h["valid_ndcg@10"] for h in result["history"]])
            timing[name].append({"seconds_to_best": result["seconds_to_best"],
                                 "best_epoch": result["best_epoch"]})
        per_user[name].append(_per_user(ranks))
        if progress:
            progress(f"{name} seed {seed}: test ndcg@10 "
                     f"{per_user[name][-1]['ndcg@10'].mean():.4f} ({time.time() - started:.0f} s)")

    summary = {
        m: {k: {"mean": float(np.mean([run[k].mean() for run in per_user[m]])),
                "std": float(np.std([run[k].mean() for run in per_user[m]]))}
            for k in REPORTED}
        for m in models
    }
    oracle = oracle_ranks(data, split)
    oracle_summary = ({k: float(v.mean()) for k, v in _per_user(oracle).items() if k in REPORTED}
                      if oracle is not None else None)
    significance = None
    baselines = [m for m in models if m != "dspnet" and not m.startswith("dspnet_")]
    if "dspnet" in models and baselines:
        best = max(baselines, key=lambda m: summary[m]["ndcg@10"]["mean"])
        ours = np.mean([run["ndcg@10"] for run in per_user["dspnet"]], axis=0)
        theirs = np.mean([run["ndcg@10"] for run in per_user[best]], axis=0)
        p_value = float(wilcoxon(ours, theirs).pvalue) if np.any(ours != theirs) else 1.0
        significance = {"model": "dspnet", "baseline": best, "metric": "ndcg@10",
                        "p_value": p_value}
    results = {"dataset": os.path.abspath(data), "seeds": list(seeds), "models": summary,
               "oracle": oracle_summary, "significance": significance,
               "split": split.summary(), "timing": timing,
               "settings": {"epochs": epochs, "patience": patience, "batch_size": batch_size,
                            "learning_rate": learning_rate, "overrides": overrides}}
    with open(os.path.join(out_dir, "results.json"), "w", encoding="utf-8") as handle:
        json.dump(results, handle, indent=2)
    _write_markdown(results, os.path.join(out_dir, "results.md"))
    _plot_curves(curves, os.path.join(out_dir, "training_curves.png"))
    return results


def _write_markdown(results: Dict[str, Any], path: str) -> None:
    oracle = results["oracle"]
    cols = ("hr@10", "ndcg@10", "mrr", "scene_acc@1")
    lines = [f"# Quality: {results['dataset']}", "",
             f"Seeds {results['seeds']}; split {results['split']}; settings {results['settings']}.",
             "", "| model | " + " | ".join(cols) + (" | ndcg@10 / oracle |" if oracle else " |"),
             "|---" * (len(cols) + 1 + (1 if oracle else 0)) + "|"]
    if oracle:
        lines.append("| oracle | " + " | ".join(f"{oracle[c]:.4f}" for c in cols) + " | 1.00 |")
    for name, metrics in results["models"].items():
        cells = [f"{metrics[c]['mean']:.4f} ± {metrics[c]['std']:.4f}" for c in cols]
        if oracle:
            cells.append(f"{metrics['ndcg@10']['mean'] / oracle['ndcg@10']:.2f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    sig = results["significance"]
    if sig:
        lines += ["", f"Wilcoxon signed-rank on per-user NDCG@10, dspnet vs {sig['baseline']}: "
                      f"p = {sig['p_value']:.3g}."]
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")


def _plot_curves(curves: Dict[str, List[List[float]]], path: str) -> None:
    import matplotlib  # pylint: disable=import-outside-toplevel

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

    fig, axis = plt.subplots(figsize=(6, 4))
    for name, runs in curves.items():
        for i, run in enumerate(runs):
            axis.plot(range(1, len(run) + 1), run, label=name if i == 0 else None,
                      color=f"C{list(curves).index(name)}", alpha=0.8)
    axis.set_xlabel("epoch")
    axis.set_ylabel("validation NDCG@10")
    if any(curves.values()):
        axis.legend(fontsize=8)
    else:
        axis.text(0.5, 0.5, "no trained models (most-popular only)", ha="center",
                  transform=axis.transAxes)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
