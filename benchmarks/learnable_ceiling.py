"""The scene world's learnable ceiling: the exact oracle without each user's own parameters.

The exact oracle (`SceneWorld.oracle_joint`) knows every user's preference over intents and
scene habits. Both are drawn independently for each user, so no model trained on other users can
know them; the best any learner can do, with unlimited training users, is the oracle averaged
over them under their posterior given the user's history (`SceneWorld.population_joint`, with
every shared parameter known). This script scores that population oracle next to the exact one
on the benchmark's test targets, in both tasks and for the next scene, surface by surface, and
sets a quality benchmark's models against both.

    .venv/bin/python benchmarks/learnable_ceiling.py --data data/world \
        --results benchmarks/results/quality_in_scene/results.json \
        --out benchmarks/results/learnable_ceiling

It prints and saves `results.json` / `results.md`. Standard errors are over test users.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any, Dict, List

import numpy as np

from dspnet_tf.data.event_log import read_event_log
from dspnet_tf.data.splits import leave_one_out
from dspnet_tf.evaluation.quality_benchmark import WorldView, joint_ranks
from dspnet_tf.evaluation.ranking import ranking_metrics

TASKS = ("next_event", "in_scene")


def _ndcg_at_10(rank: np.ndarray) -> np.ndarray:
    return ranking_metrics(rank, (10,))["ndcg@10"]


def _mean_se(values: np.ndarray) -> Dict[str, float]:
    return {"mean": float(values.mean()),
            "se": float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else 0.0}


def score(data: str, draws: int, seed: int, max_users: int = 0) -> Dict[str, Any]:
    """Per-user ranks of the test targets under the exact and the population oracle, ranked as
    the quality benchmark ranks them (`joint_ranks`)."""
    split = leave_one_out(read_event_log(data))
    view = WorldView(os.path.join(data, "world.json"), split)
    world, c = view.world, view.world.config
    rng = np.random.default_rng(seed)
    preferences = rng.dirichlet(np.full(c.categories, c.preference_concentration), draws)
    habits = rng.dirichlet(np.ones(c.scenes), draws)
    users = len(split.users) if not max_users else min(max_users, len(split.users))
    out: Dict[str, List[Any]] = {"target_scene": [], "preference_ess": [], "habit_ess": []}
    for oracle in ("exact", "population"):
        for task in TASKS:
            out[f"{oracle}_{task}_rank"] = []
        out[f"{oracle}_scene_hit"] = []
    started = time.time()
    for index in range(users):
        user, items, scenes = view.raw(index)
        joints = {"exact": world.oracle_joint(user, items[:-1], scenes[:-1])}
        joints["population"], ess = world.population_joint(items[:-1], scenes[:-1],
                                                           preferences, habits)
        out["target_scene"].append(scenes[-1])
        out["preference_ess"].append(ess["preference_ess"])
        out["habit_ess"].append(ess["habit_ess"])
        for oracle, joint in joints.items():
            ranks = joint_ranks(joint, items[-1], scenes[-1], view.vocab_items)
            out[f"{oracle}_scene_hit"].append(int(ranks["scene_rank"] == 1))
            for task in TASKS:
                out[f"{oracle}_{task}_rank"].append(ranks[task])
        if (index + 1) % 2000 == 0:
            print(f"  {index + 1}/{users} users, {time.time() - started:.0f} s", flush=True)
    return {key: np.asarray(value) for key, value in out.items()} | {
        "scene_names": list(c.scene_names)}


def summarize(scored: Dict[str, Any], results: Dict[str, Any], draws: int) -> Dict[str, Any]:
    """Ceilings, their ratios, and the benchmark's models against both oracles."""
    summary: Dict[str, Any] = {"users": int(len(scored["target_scene"])), "draws": draws,
                               "ess": {k: {"median": float(np.median(scored[k])),
                                           "share_below_100": float(np.mean(scored[k] < 100))}
                                       for k in ("preference_ess", "habit_ess")}}
    for oracle in ("exact", "population"):
        entry: Dict[str, Any] = {}
        for task in TASKS:
            entry[f"{task}_ndcg@10"] = _mean_se(_ndcg_at_10(scored[f"{oracle}_{task}_rank"]))
        entry["scene_acc@1"] = _mean_se(scored[f"{oracle}_scene_hit"].astype(float))
        by_scene = {}
        for scene, name in enumerate(scored["scene_names"]):
            chosen = scored["target_scene"] == scene
            if chosen.sum() > 1:
                by_scene[name] = _mean_se(_ndcg_at_10(scored[f"{oracle}_in_scene_rank"][chosen]))
        entry["in_scene_ndcg@10_by_scene"] = by_scene
        summary[oracle] = entry
    # The population oracle's loss against the exact one, user by user.
    for task in TASKS:
        difference = (_ndcg_at_10(scored[f"population_{task}_rank"])
                      - _ndcg_at_10(scored[f"exact_{task}_rank"]))
        summary[f"{task}_population_minus_exact"] = _mean_se(difference)
    summary["ratios"] = {
        "next_event_ndcg@10": summary["population"]["next_event_ndcg@10"]["mean"]
        / summary["exact"]["next_event_ndcg@10"]["mean"],
        "in_scene_ndcg@10": summary["population"]["in_scene_ndcg@10"]["mean"]
        / summary["exact"]["in_scene_ndcg@10"]["mean"],
        "scene_acc@1": summary["population"]["scene_acc@1"]["mean"]
        / summary["exact"]["scene_acc@1"]["mean"]}
    if results:
        models = {}
        for task in TASKS:
            for name, metrics in results["tasks"][task]["models"].items():
                row = models.setdefault(name, {})
                row[f"{task}_ndcg@10"] = metrics["ndcg@10"]["mean"]
                if task == "next_event" and "scene_acc@1" in metrics:
                    row["scene_acc@1"] = metrics["scene_acc@1"]["mean"]
        for row in models.values():
            for metric, value in list(row.items()):
                row[f"{metric} / exact"] = value / summary["exact"][metric]["mean"]
                row[f"{metric} / population"] = value / summary["population"][metric]["mean"]
        summary["models"] = models
    return summary


def write(summary: Dict[str, Any], out: str, source: str) -> None:
    """results.json and results.md under `out`; prints the Markdown."""
    exact, population = summary["exact"], summary["population"]
    lines = ["# The learnable ceiling of the scene world", "",
             f"{summary['users']} test users; the population oracle averages the exact one over "
             f"{summary['draws']} prior draws of each user's preference and habit row, weighted "
             f"by the history (median effective draws: preference "
             f"{summary['ess']['preference_ess']['median']:.0f}, habits "
             f"{summary['ess']['habit_ess']['median']:.0f}). Means ± standard errors over users.",
             "", "| | exact oracle | population oracle (learnable ceiling) | ratio |",
             "|---|---|---|---|"]
    for key, label in (("next_event_ndcg@10", "next event NDCG@10"),
                       ("in_scene_ndcg@10", "in-scene NDCG@10"),
                       ("scene_acc@1", "next-scene accuracy@1")):
        lines.append(f"| {label} | {exact[key]['mean']:.4f} ± {exact[key]['se']:.4f} | "
                     f"{population[key]['mean']:.4f} ± {population[key]['se']:.4f} | "
                     f"{summary['ratios'][key]:.3f} |")
    lines += ["", "In-scene NDCG@10 surface by surface:", "",
              "| surface | exact | population | ratio |", "|---|---|---|---|"]
    for name, value in exact["in_scene_ndcg@10_by_scene"].items():
        other = population["in_scene_ndcg@10_by_scene"][name]
        lines.append(f"| {name} | {value['mean']:.4f} | {other['mean']:.4f} | "
                     f"{other['mean'] / value['mean']:.3f} |")
    if summary.get("models"):
        lines += ["", f"Models of `{source}` against both oracles:", "",
                  "| model | in-scene / exact | in-scene / population | next event / population "
                  "| next-scene acc / exact | next-scene acc / population |",
                  "|---|---|---|---|---|---|"]
        for name, row in summary["models"].items():
            # Only DSPnet's scene head is trained (the baselines are items only, alpha = 0).
            scene = (f"{row['scene_acc@1 / exact']:.3f} | {row['scene_acc@1 / population']:.3f}"
                     if "scene_acc@1" in row and name.startswith("dspnet") else " | ")
            lines.append(f"| {name} | {row['in_scene_ndcg@10 / exact']:.3f} | "
                         f"{row['in_scene_ndcg@10 / population']:.3f} | "
                         f"{row['next_event_ndcg@10 / population']:.3f} | {scene} |")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "results.json"), "w", encoding="utf-8") as handle:
        json.dump({**summary, "results_file": source}, handle, indent=2)
    with open(os.path.join(out, "results.md"), "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    """Parse the flags, score both oracles, write the results."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="data/world", help="scene-world folder (default: %(default)s)")
    parser.add_argument("--results", default="benchmarks/results/quality_in_scene/results.json",
                        help="a quality benchmark's results.json on the same data, to set its "
                             "models against both oracles ('' for none; default: %(default)s)")
    parser.add_argument("--draws", type=int, default=20000,
                        help="prior draws of each user's parameters (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the draws (default: %(default)s)")
    parser.add_argument("--max-users", type=int, default=0,
                        help="score only the first N test users (0: all; default: %(default)s)")
    parser.add_argument("--out", default="benchmarks/results/learnable_ceiling")
    args = parser.parse_args()
    if not os.path.isfile(os.path.join(args.data, "world.json")):
        raise SystemExit(f"{args.data}: no world.json (make one with dspnet generate scene-world)")
    results = {}
    if args.results:
        with open(args.results, encoding="utf-8") as handle:
            results = json.load(handle)
    scored = score(args.data, args.draws, args.seed, args.max_users)
    write(summarize(scored, results, args.draws), args.out, args.results)


if __name__ == "__main__":
    main()
