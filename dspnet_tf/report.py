"""The run report: `report.md` and its figures, generated from a run's saved numbers.

A run (e.g. `dspnet demo`) saves what it measured in `run.json` (tables, histories, latencies,
the next-scene confusion counts) and `latent.npz` (2-D projection of user representations);
`write_report(run_dir)` turns them into PNGs and a Markdown report that links them. It can be
re-run on its own (`dspnet report --run DIR`), so nothing in the report is typed by hand.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List

import numpy as np

RUN_FILE, LATENT_FILE, REPORT_FILE = "run.json", "latent.npz", "report.md"
FIGURES = {"curves": "training_curves.png", "latent": "latent_space.png",
           "confusion": "scene_confusion.png", "latency": "serving_latency.png"}


def _pyplot():
    import matplotlib  # pylint: disable=import-outside-toplevel

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

    return plt


def _plot_series(axis, history: Dict[str, List[float]], keys, ylabel: str) -> None:
    for key in keys:
        if key in history:
            axis.plot(range(1, len(history[key]) + 1), history[key], marker="o", label=key)
    axis.set_xlabel("epoch")
    axis.set_ylabel(ylabel)
    axis.legend(fontsize=8)


def plot_training_curves(history: Dict[str, List[float]], path: str) -> None:
    """Per-epoch training losses (left) and validation ranking metrics (right)."""
    plt = _pyplot()
    fig, (losses, metrics) = plt.subplots(1, 2, figsize=(10, 3.8))
    _plot_series(losses, history, ("item_loss", "scene_loss", "ccr_loss", "val_item_loss",
                                   "val_scene_loss"), "loss")
    _plot_series(metrics, history, ("val_ndcg_at_10", "val_hr_at_10", "val_scene_acc"),
                 "validation metric")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_latent_space(points: np.ndarray, labels: np.ndarray, names: List[str],
                      path: str) -> None:
    """Users' representations projected on their first two principal components."""
    plt = _pyplot()
    fig, axis = plt.subplots(figsize=(5.5, 4.5))
    for index, name in enumerate(names):
        chosen = labels == index
        if chosen.any():
            axis.scatter(points[chosen, 0], points[chosen, 1], s=6, alpha=0.6, label=name)
    axis.set_xlabel("PC 1")
    axis.set_ylabel("PC 2")
    axis.set_title("user representation z, coloured by the true next scene", fontsize=9)
    axis.legend(fontsize=7, markerscale=2)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_confusion(counts: np.ndarray, names: List[str], path: str) -> None:
    """Row-normalised next-scene confusion matrix (rows: true scene, columns: predicted)."""
    plt = _pyplot()
    counts = np.asarray(counts, dtype=float)
    rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    fig, axis = plt.subplots(figsize=(5, 4.3))
    image = axis.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    axis.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=8)
    axis.set_yticks(range(len(names)), names, fontsize=8)
    axis.set_xlabel("predicted next scene")
    axis.set_ylabel("true next scene")
    for row in range(len(names)):
        for col in range(len(names)):
            axis.text(col, row, f"{rates[row, col]:.2f}", ha="center", va="center", fontsize=7,
                      color="white" if rates[row, col] > 0.5 else "black")
    fig.colorbar(image, ax=axis, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_latency(latencies_ms: List[float], path: str) -> None:
    """Histogram of per-request gRPC latencies with the p50 and p99 marked, saved as `path`."""
    plt = _pyplot()
    values = np.asarray(latencies_ms)
    fig, axis = plt.subplots(figsize=(5.5, 3.5))
    axis.hist(values, bins=40, color="C0")
    for q, style in ((50, "-"), (99, "--")):
        axis.axvline(np.percentile(values, q), color="C3", linestyle=style,
                     label=f"p{q} {np.percentile(values, q):.2f} ms")
    axis.set_xlabel("gRPC Predict latency, one user (ms)")
    axis.set_ylabel("requests")
    axis.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _quality_table(quality: Dict[str, Any]) -> List[str]:
    """Both tasks side by side: next event (history only) and in-scene (the scene is given)."""
    columns = ("hr@10", "ndcg@10", "scene_acc@1", "in_scene_hr@10", "in_scene_ndcg@10")
    oracle = quality.get("oracle")
    lines = ["| model | next event HR@10 | next event NDCG@10 | next scene acc@1 | "
             "in-scene HR@10 | in-scene NDCG@10 | in-scene NDCG@10 / oracle | how |",
             "|---" * (len(columns) + 3) + "|"]
    rows = ([{"model": "oracle (exact posterior)", **oracle, "how": "scene world's oracle"}]
            if oracle else []) + quality["rows"]
    key = "in_scene_ndcg@10"
    for row in rows:
        cells = [f"{row[c]:.4f}" if row.get(c) is not None else "n/a" for c in columns]
        ratio = (f"{row[key] / oracle[key]:.2f}" if oracle and oracle.get(key)
                 and row.get(key) is not None else "n/a")
        lines.append(f"| {row['model']} | " + " | ".join(cells) + f" | {ratio} | "
                     f"{row.get('how', '')} |")
    return lines


def write_report(run_dir: str) -> str:
    """Draws the figures from `run.json` / `latent.npz` and writes `report.md`; returns its path."""
    with open(os.path.join(run_dir, RUN_FILE), encoding="utf-8") as handle:
        run = json.load(handle)
    figures = {}
    if run.get("trainer_history"):
        plot_training_curves(run["trainer_history"], os.path.join(run_dir, FIGURES["curves"]))
        figures["curves"] = FIGURES["curves"]
    latent_path = os.path.join(run_dir, LATENT_FILE)
    scene_names = run.get("scene_names", [])
    if os.path.exists(latent_path):
        latent = np.load(latent_path)
        plot_latent_space(latent["points"], latent["labels"], scene_names,
                          os.path.join(run_dir, FIGURES["latent"]))
        figures["latent"] = FIGURES["latent"]
    if run.get("scene_confusion"):
        plot_confusion(np.array(run["scene_confusion"]), scene_names,
                       os.path.join(run_dir, FIGURES["confusion"]))
        figures["confusion"] = FIGURES["confusion"]
    if run.get("latency_ms"):
        plot_latency(run["latency_ms"], os.path.join(run_dir, FIGURES["latency"]))
        figures["latency"] = FIGURES["latency"]

    lines = ["# DSPnet run report", "",
             f"Data: {run['data']['description']} ({run['data']['users']} users, "
             f"{run['data']['events']} events, {run['data']['items']} items).", "",
             "## Quality (test split: each user's last event, full ranking, pessimistic ties)",
             ""] + _quality_table(run["quality"]) + [""]
    if run["quality"].get("note"):
        lines += [run["quality"]["note"], ""]
    if "curves" in figures:
        lines += ["## Training (TFX Trainer)", "", f"![training curves]({figures['curves']})", ""]
    if run["quality"].get("baseline_curves"):
        lines += [f"Baselines' validation curves: ![baselines]({run['quality']['baseline_curves']})",
                  ""]
    if run.get("recommendations"):
        lines += ["## Served recommendations (gRPC, model version "
                  f"{run['recommendations'][0]['model_version']})", "", "```"]
        for user in run["recommendations"]:
            lines.append("recent: " + ", ".join(f"{i}@{s}" for i, s in user["history"]))
            lines.append(f"  top {len(user['items'])}: {', '.join(user['items'])}   "
                         f"(true next: {user['true_next']}@{user['true_next_scene']})")
            for scene, items in (user.get("by_target_scene") or {}).items():
                lines.append(f"  top {len(items)} for the {scene} surface: {', '.join(items)}")
            lines.append("  next scene: " + ", ".join(f"{s} {p:.2f}"
                                                      for s, p in user["next_scenes"][:3]))
        lines += ["```", ""]
    if "confusion" in figures:
        lines += ["## Next scene", "",
                  f"Accuracy@1 of the served model on {run['scene_confusion_users']} test users: "
                  f"{run['served_scene_acc@1']:.4f}.", "",
                  f"![next-scene confusion]({figures['confusion']})", ""]
    if "latent" in figures:
        lines += ["## Latent space", "", f"![latent space]({figures['latent']})", ""]
    if "latency" in figures:
        values = np.asarray(run["latency_ms"])
        lines += ["## Serving latency", "",
                  f"{len(values)} sequential one-user gRPC requests to the local server: "
                  f"p50 {np.percentile(values, 50):.2f} ms, p99 {np.percentile(values, 99):.2f} ms.",
                  "", f"![serving latency]({figures['latency']})", ""]
    if run.get("timings"):
        lines += ["## Stages", "", "| stage | seconds |", "|---|---|"]
        lines += [f"| {stage} | {seconds:.0f} |" for stage, seconds in run["timings"].items()]
        lines.append("")
    if run.get("paths"):
        lines += ["## Where things are", ""]
        lines += [f"- {name}: `{path}`" for name, path in run["paths"].items()]
        lines.append("")
    path = os.path.join(run_dir, REPORT_FILE)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines))
    return path
