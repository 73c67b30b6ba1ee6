"""Wall time to the best validation NDCG@10 on MovieLens-100K, against RecBole and our SASRec.

RecBole's SASRec reaches its best validation NDCG@10 on MovieLens-100K in 2,580 s on this machine
kind (`../shared/anchors/recbole-sasrec-ml100k.json`: epoch 19 at 135 s per epoch). This script
trains DSPnet under each precision asked for (float32, and "auto": bfloat16 where the CPU has
bfloat16 matrix products) and SASRec in float32 for scale, one run at a time with nothing else
running (each run gets both cores), and reports the seconds from the start of training to the epoch
whose weights early stopping keeps.

Protocol: RecBole's (leave-one-out, full ranking, length 50, width 64, two blocks, full-softmax
item loss, batch 256, early stopping on validation NDCG@10 with patience 10, at most 200
epochs), with our training windows (cut every 10 events) and the learning rate given here.
Every run is one `dspnet benchmark quality` command in its own process, so a finished run keeps
its folder if the script is stopped, and a rerun skips it.

    .venv/bin/python benchmarks/time_to_best.py --learning-rate 2e-3 \
        --out benchmarks/results/time_to_best_ml100k

It prints and saves `summary.json` / `summary.md`: per configuration the mean and standard
deviation over seeds of the seconds to best, epochs to best, seconds per epoch and test NDCG@10;
DSPnet's time against RecBole's 2,580 s and against SASRec's time measured in the same run; and
whether the 16-bit runs' test NDCG@10 lies within the seed noise of float32 (|difference| <= 2
combined standard errors of the seed means).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Dict, List

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # as a script or loaded by path
from quality_run import quality_run  # noqa: E402  (a sibling script)

# RecBole 1.2.1's SASRec on MovieLens-100K (the project's anchor, same machine kind): wall
# seconds to its best validation epoch and its test NDCG@10.
RECBOLE_SECONDS_TO_BEST = 2580.0
RECBOLE_NDCG_AT_10 = 0.0640


def run_one(model: str, precision: str, seed: int, args: argparse.Namespace) -> Dict[str, Any]:
    """Trains one (model, precision, seed) run with the quality benchmark; returns its figures."""
    data = quality_run(args.dspnet, os.path.join(args.out, f"{model}_{precision}_seed{seed}"), [
        "--data", "movielens-100k", "--models", model, "--studies", "", "--seeds", "1",
        "--first-seed", str(seed), "--item-loss", "softmax", "--precision", precision,
        "--window-stride", str(args.window_stride), "--epochs", str(args.epochs),
        "--patience", str(args.patience), "--learning-rate", str(args.learning_rate),
        "--workers", "1"], f"{model} {precision} seed {seed}")
    timing = data["timing"][model][0]
    return {"model": model, "precision": precision, "seed": seed,
            "resolved_precision": data["settings"]["overrides"].get("precision", precision),
            "seconds_to_best": timing["seconds_to_best"], "best_epoch": timing["best_epoch"],
            "seconds_per_epoch": timing["seconds_per_epoch"],
            "valid_ndcg@10": timing["best_valid_ndcg@10"],
            "test_ndcg@10": data["models"][model]["ndcg@10"]["mean"]}


def _mean_std(values: List[float]) -> Dict[str, float]:
    array = np.asarray(values, dtype=float)
    return {"mean": float(array.mean()),
            "std": float(array.std(ddof=1)) if len(array) > 1 else 0.0, "n": int(len(array))}


def two_standard_errors(first: Dict[str, float], second: Dict[str, float]) -> float:
    """Twice the standard error of the difference of two seed means ({mean, std, n} each):
    the seed-noise bound a difference must stay within."""
    return 2.0 * float(np.hypot(first["std"] / np.sqrt(first["n"]),
                                second["std"] / np.sqrt(second["n"])))


def summarize(runs: List[Dict[str, Any]], args: argparse.Namespace) -> Dict[str, Any]:
    """Per-configuration means, the ratios against RecBole and SASRec, the precision check."""
    configs: Dict[str, Dict[str, Any]] = {}
    for run in runs:
        key = f"{run['model']} {run['precision']}"
        entry = configs.setdefault(key, {"model": run["model"], "precision": run["precision"],
                                         "resolved_precision": run["resolved_precision"],
                                         "runs": []})
        entry["runs"].append(run)
    for entry in configs.values():
        for field in ("seconds_to_best", "best_epoch", "seconds_per_epoch", "valid_ndcg@10",
                      "test_ndcg@10"):
            entry[field] = _mean_std([r[field] for r in entry["runs"]])
    summary: Dict[str, Any] = {
        "learning_rate": args.learning_rate, "window_stride": args.window_stride,
        "patience": args.patience, "epochs": args.epochs,
        "recbole_seconds_to_best": RECBOLE_SECONDS_TO_BEST,
        "recbole_ndcg@10": RECBOLE_NDCG_AT_10, "configs": configs}
    sasrec = next((c for c in configs.values() if c["model"] == "sasrec"), None)
    for entry in configs.values():
        seconds = entry["seconds_to_best"]["mean"]
        entry["recbole_over_this"] = RECBOLE_SECONDS_TO_BEST / seconds if seconds else None
        if sasrec is not None:
            entry["this_over_sasrec"] = seconds / sasrec["seconds_to_best"]["mean"]
    float32 = configs.get("dspnet float32")
    for entry in configs.values():
        if entry["model"] != "dspnet" or entry is float32 or float32 is None:
            continue
        ours, theirs = entry["test_ndcg@10"], float32["test_ndcg@10"]
        bound = two_standard_errors(ours, theirs)
        entry["vs_float32"] = {"difference": ours["mean"] - theirs["mean"], "bound": bound,
                               "within_noise": abs(ours["mean"] - theirs["mean"]) <= bound}
    return summary


def write_summary(summary: Dict[str, Any], out: str) -> None:
    """summary.json and summary.md under `out`; prints the table."""
    lines = ["# Time to the best validation NDCG@10 on MovieLens-100K", "",
             f"Adam {summary['learning_rate']:g}, windows every {summary['window_stride']} events, "
             f"patience {summary['patience']}, at most {summary['epochs']} epochs; each run alone "
             f"on the machine. RecBole's SASRec: {summary['recbole_seconds_to_best']:.0f} s to "
             f"best, test NDCG@10 {summary['recbole_ndcg@10']:.4f}.", "",
             "| model | precision | seeds | seconds to best | epochs to best | s / epoch | "
             "test NDCG@10 | RecBole / this | this / SASRec |",
             "|---|---|---|---|---|---|---|---|---|"]
    for entry in summary["configs"].values():
        s, e, p = entry["seconds_to_best"], entry["best_epoch"], entry["seconds_per_epoch"]
        n = entry["test_ndcg@10"]
        ratio = entry.get("this_over_sasrec")
        lines.append(
            f"| {entry['model']} | {entry['precision']} ({entry['resolved_precision']}) | "
            f"{s['n']} | {s['mean']:.0f} ± {s['std']:.0f} | {e['mean']:.1f} | {p['mean']:.1f} | "
            f"{n['mean']:.4f} ± {n['std']:.4f} | {entry['recbole_over_this']:.1f} x | "
            f"{'' if ratio is None else f'{ratio:.2f} x'} |")
    for entry in summary["configs"].values():
        check = entry.get("vs_float32")
        if check:
            lines += ["", f"{entry['model']} {entry['precision']} against float32, test NDCG@10: "
                      f"difference {check['difference']:+.4f}, bound {check['bound']:.4f} -> "
                      f"{'within' if check['within_noise'] else 'outside'} the seed noise."]
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "summary.json"), "w", encoding="utf-8") as handle:
        json.dump(summary, handle, indent=2)
    with open(os.path.join(out, "summary.md"), "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    """Parse the flags, run what is missing, summarize."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--learning-rate", type=float, default=2e-3, help="default: %(default)s")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                        help="DSPnet's seeds (default: %(default)s)")
    parser.add_argument("--precisions", nargs="+", default=["float32", "auto"],
                        help="DSPnet's precisions (default: %(default)s)")
    parser.add_argument("--sasrec-seeds", type=int, nargs="*", default=[0, 1, 2],
                        help="SASRec's seeds, float32, for scale (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=200, help="default: %(default)s")
    parser.add_argument("--patience", type=int, default=10, help="default: %(default)s")
    parser.add_argument("--window-stride", type=int, default=10, help="default: %(default)s")
    parser.add_argument("--dspnet", default=os.path.join(os.path.dirname(sys.executable), "dspnet"),
                        help="the dspnet command (default: the one beside this Python)")
    parser.add_argument("--out", default="benchmarks/results/time_to_best_ml100k")
    parser.add_argument("--summarize", action="store_true",
                        help="only summarize the runs already under --out")
    args = parser.parse_args()
    if not args.summarize and not os.access(args.dspnet, os.X_OK):
        raise SystemExit(f"{args.dspnet}: no dspnet command there (make setup builds .venv; "
                         "or pass --dspnet)")
    plan = [("sasrec", "float32", seed) for seed in args.sasrec_seeds]
    plan += [("dspnet", precision, seed) for precision in args.precisions for seed in args.seeds]
    runs = []
    for model, precision, seed in plan:
        results = os.path.join(args.out, f"{model}_{precision}_seed{seed}", "results.json")
        if args.summarize and not os.path.isfile(results):
            continue
        runs.append(run_one(model, precision, seed, args))
    if not runs:
        raise SystemExit(f"{args.out}: no finished runs to summarize")
    write_summary(summarize(runs, args), args.out)


if __name__ == "__main__":
    main()
