"""DSPnet and the best fair baseline on scene worlds of growing size: how much of the gap is data.

The default scene world has 10,000 users. Its population oracle (`learnable_ceiling.py`) shows
what no learner can know; this script shows what more training users buy. It generates the
default world at each size (the same catalog and rules: only the number of users changes),
trains the chosen models with the quality benchmark's full budget (one seed), and reports the
in-scene NDCG@10 as a fraction of each world's in-scene oracle, and DSPnet against the baseline.

    .venv/bin/python benchmarks/learning_curve.py --users 2500 5000 10000 20000 \
        --out benchmarks/results/learning_curve

Each size is one `dspnet benchmark quality` command (a finished size keeps its folder; a rerun
skips it). It prints and saves `summary.json` / `summary.md`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from typing import Any, Dict, List

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # as a script or loaded by path
from quality_run import quality_run  # noqa: E402  (a sibling script)



def run_size(users: int, args: argparse.Namespace) -> Dict[str, Any]:
    """Generates the world of `users` users if missing, runs the benchmark, returns its figures."""
    world = os.path.join(args.worlds, f"world_u{users}")
    if not os.path.isfile(os.path.join(world, "world.json")):
        subprocess.run([args.dspnet, "generate", "scene-world", "--users", str(users),
                        "--seed", str(args.world_seed), "--out", world], check=True,
                       stdout=subprocess.DEVNULL)
    results = quality_run(args.dspnet, os.path.join(args.out, f"u{users}"), [
        "--data", world, "--models", ",".join(args.models), "--studies", "", "--seeds", "1",
        "--first-seed", str(args.seed), "--item-loss", "softmax", "--epochs", str(args.epochs),
        "--patience", str(args.patience), "--workers", str(args.workers)], f"{users} users")
    in_scene = results["tasks"]["in_scene"]
    oracle = in_scene["oracle"]["ndcg@10"]
    row: Dict[str, Any] = {"users": users, "in_scene_oracle_ndcg@10": oracle,
                           "training_events": results["split"]["events"], "models": {}}
    for name, metrics in in_scene["models"].items():
        value = metrics["ndcg@10"]["mean"]
        row["models"][name] = {"in_scene_ndcg@10": value, "fraction_of_oracle": value / oracle,
                               "best_epoch": results["timing"][name][0]["best_epoch"]}
    return row


def write_summary(rows: List[Dict[str, Any]], models: List[str], out: str) -> None:
    """summary.json / summary.md under `out`; prints the table."""
    first, second = models[0], models[1] if len(models) > 1 else None
    header = ["users", "events", "in-scene oracle"]
    for name in models:
        header += [f"{name}", f"{name} / oracle"]
    if second:
        header.append(f"{first} / {second}")
    lines = ["# In-scene NDCG@10 against the number of training users", "",
             "One seed per size, the quality benchmark's full budget (at most 15 epochs, "
             "patience 3); every world is the default one with only the number of users changed.",
             "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [f"{row['users']:,}", f"{row['training_events']:,}",
                 f"{row['in_scene_oracle_ndcg@10']:.4f}"]
        for name in models:
            model = row["models"][name]
            cells += [f"{model['in_scene_ndcg@10']:.4f}", f"{model['fraction_of_oracle']:.3f}"]
        if second:
            cells.append(f"{row['models'][first]['in_scene_ndcg@10'] / row['models'][second]['in_scene_ndcg@10']:.3f}")
        lines.append("| " + " | ".join(cells) + " |")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "summary.json"), "w", encoding="utf-8") as handle:
        json.dump({"models": models, "sizes": rows}, handle, indent=2)
    with open(os.path.join(out, "summary.md"), "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    """Parse the flags, run the sizes not yet run, summarize."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, nargs="+", default=[2500, 5000, 10000, 20000],
                        help="world sizes (default: %(default)s)")
    parser.add_argument("--models", default="dspnet,sasrec_scene_repeat_target",
                        help="comma-separated; the first is set against the second "
                             "(default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="training seed (default: %(default)s)")
    parser.add_argument("--world-seed", type=int, default=0, help="default: %(default)s")
    parser.add_argument("--epochs", type=int, default=15, help="default: %(default)s")
    parser.add_argument("--patience", type=int, default=3, help="default: %(default)s")
    parser.add_argument("--workers", type=int, default=2, help="default: %(default)s")
    parser.add_argument("--worlds", default="data", help="where the worlds are written (default: %(default)s)")
    parser.add_argument("--dspnet", default=os.path.join(os.path.dirname(sys.executable), "dspnet"),
                        help="the dspnet command (default: the one beside this Python)")
    parser.add_argument("--out", default="benchmarks/results/learning_curve")
    args = parser.parse_args()
    if not os.access(args.dspnet, os.X_OK):
        raise SystemExit(f"{args.dspnet}: no dspnet command there (make setup builds .venv; "
                         "or pass --dspnet)")
    args.models = args.models.split(",")
    rows = [run_size(users, args) for users in sorted(args.users)]
    write_summary(rows, args.models, args.out)


if __name__ == "__main__":
    main()
