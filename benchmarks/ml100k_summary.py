"""Summarises the per-(model, seed) MovieLens-100K runs of `benchmarks/ml100k_seeds.sh`.

Reads OUT_DIR/<model>_seed<k>/results.json, prints a markdown table (per seed and the mean) of
test NDCG@10 and HR@10, best epoch and seconds to the best validation NDCG@10, the models'
ratio and seed-paired difference, and the comparison with RecBole's anchor; writes the same as
OUT_DIR/summary.json.

    .venv/bin/python benchmarks/ml100k_summary.py benchmarks/results/quality_ml100k_cap200
    .venv/bin/python benchmarks/ml100k_summary.py benchmarks/results/quality_ml100k_cap200 \
        --seeds 0-4 --summary /tmp/five_seeds.json   # a protocol's first seeds only
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib
import re
import statistics
import sys
from typing import Dict, List

ANCHOR = pathlib.Path(__file__).resolve().parents[1] / ".." / "shared" / "anchors" / (
    "recbole-sasrec-ml100k.json")
RUN_FOLDER = re.compile(r"^(?P<model>[a-z0-9_]+)_seed(?P<seed>\d+)$")


def load_runs(out_dir: pathlib.Path) -> Dict[str, Dict[int, dict]]:
    """{model: {seed: run}} for every finished run folder (one with a results.json)."""
    runs: Dict[str, Dict[int, dict]] = {}
    for folder in sorted(out_dir.iterdir()):
        match = RUN_FOLDER.match(folder.name)
        results_path = folder / "results.json"
        if not match or not results_path.is_file():
            continue
        model, seed = match["model"], int(match["seed"])
        try:
            results = json.loads(results_path.read_text())
            metrics = results["models"][model]
            timing = results["timing"][model][0]
        except (json.JSONDecodeError, KeyError, IndexError) as err:
            sys.exit(f"{results_path}: not a single-model, single-seed result ({err!r})")
        runs.setdefault(model, {})[seed] = {
            "ndcg@10": metrics["ndcg@10"]["mean"],
            "hr@10": metrics["hr@10"]["mean"],
            "best_epoch": timing["best_epoch"],
            "seconds_to_best": timing["seconds_to_best"],
            "seconds_per_epoch": timing["seconds_per_epoch"],
            "best_valid_ndcg@10": timing["best_valid_ndcg@10"],
            "epochs_cap": results["settings"]["epochs"],
        }
    return runs


def parse_seeds(spec: str) -> List[int]:
    """'0-4' or '0,2,5' or '0-4,7' -> the sorted seeds; ValueError naming the bad part."""
    seeds = set()
    for part in spec.split(","):
        part = part.strip()
        low, dash, high = part.partition("-")
        if not low.isdigit() or (dash and not high.isdigit()):
            raise ValueError(f"seed list {spec!r}: {part!r} is not a seed or a range a-b")
        first, last = int(low), int(high) if dash else int(low)
        if last < first:
            raise ValueError(f"seed list {spec!r}: range {part!r} runs backwards")
        seeds.update(range(first, last + 1))
    return sorted(seeds)


def keep_seeds(runs: Dict[str, Dict[int, dict]], seeds: List[int]) -> Dict[str, Dict[int, dict]]:
    """The runs of the given seeds only (models left with none are dropped)."""
    kept = {model: {s: run for s, run in by_seed.items() if s in seeds}
            for model, by_seed in runs.items()}
    return {model: by_seed for model, by_seed in kept.items() if by_seed}


def mean_std(values: List[float]) -> Dict[str, float]:
    return {"mean": statistics.fmean(values),
            "std": statistics.stdev(values) if len(values) > 1 else 0.0}


def summarise(runs: Dict[str, Dict[int, dict]], model: str, baseline: str) -> dict:
    """Per-model means over seeds and the paired comparison over the seeds both have."""
    summary: dict = {"models": {}, "runs": runs}
    for name, by_seed in runs.items():
        summary["models"][name] = {
            key: mean_std([run[key] for run in by_seed.values()])
            for key in ("ndcg@10", "hr@10", "best_epoch", "seconds_to_best",
                        "best_valid_ndcg@10")}
        summary["models"][name]["seeds"] = sorted(by_seed)
    shared = sorted(set(runs.get(model, {})) & set(runs.get(baseline, {})))
    if shared:
        differences = [runs[model][s]["ndcg@10"] - runs[baseline][s]["ndcg@10"] for s in shared]
        mean_model = statistics.fmean(runs[model][s]["ndcg@10"] for s in shared)
        mean_baseline = statistics.fmean(runs[baseline][s]["ndcg@10"] for s in shared)
        summary["paired"] = {
            "model": model, "baseline": baseline, "seeds": shared,
            "ndcg@10_ratio": mean_model / mean_baseline,
            "mean_difference": statistics.fmean(differences),
            "standard_error": (statistics.stdev(differences) / math.sqrt(len(shared))
                               if len(shared) > 1 else float("nan")),
        }
    if ANCHOR.is_file() and baseline in runs:
        anchor = json.loads(ANCHOR.read_text())["test"]
        ours = summary["models"][baseline]
        summary["vs_recbole"] = {
            "ndcg@10": ours["ndcg@10"]["mean"] / anchor["ndcg@10"] - 1.0,
            "hr@10": ours["hr@10"]["mean"] / anchor["hit@10"] - 1.0,
        }
    return summary


def markdown(summary: dict) -> str:
    runs = summary["runs"]
    models = sorted(runs)
    seeds = sorted({s for by_seed in runs.values() for s in by_seed})
    header = "| seed | " + " | ".join(
        f"{m} ndcg@10 | {m} hr@10 | {m} best epoch | {m} s to best" for m in models) + " |"
    lines = [header, "|" + "---|" * (1 + 4 * len(models))]
    for seed in seeds:
        cells = []
        for m in models:
            run = runs[m].get(seed)
            cells += ([f"{run['ndcg@10']:.4f}", f"{run['hr@10']:.4f}", str(run["best_epoch"]),
                       f"{run['seconds_to_best']:.0f}"] if run else ["-"] * 4)
        lines.append(f"| {seed} | " + " | ".join(cells) + " |")
    cells = []
    for m in models:
        s = summary["models"][m]
        cells += [f"{s['ndcg@10']['mean']:.4f} ± {s['ndcg@10']['std']:.4f}",
                  f"{s['hr@10']['mean']:.4f} ± {s['hr@10']['std']:.4f}",
                  f"{s['best_epoch']['mean']:.1f}", f"{s['seconds_to_best']['mean']:.0f}"]
    lines.append("| mean | " + " | ".join(cells) + " |")
    if "paired" in summary:
        p = summary["paired"]
        lines.append(
            f"\n{p['model']} / {p['baseline']} NDCG@10 over seeds {p['seeds']}: "
            f"{p['ndcg@10_ratio']:.3f} x; seed-paired difference {p['mean_difference']:+.4f} "
            f"(standard error {p['standard_error']:.4f})")
    if "vs_recbole" in summary:
        v = summary["vs_recbole"]
        lines.append(f"Our {summary.get('paired', {}).get('baseline', 'sasrec')} against "
                     f"RecBole's: NDCG@10 {v['ndcg@10']:+.1%}, HR@10 {v['hr@10']:+.1%}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=pathlib.Path, help="the folder ml100k_seeds.sh wrote")
    parser.add_argument("--model", default="dspnet", help="the model compared (default dspnet)")
    parser.add_argument("--baseline", default="sasrec", help="its reference (default sasrec)")
    parser.add_argument("--baseline-dir", type=pathlib.Path,
                        help="read the baseline's runs from this folder instead (runs that "
                             "stand when only the compared model changed; default: out_dir)")
    parser.add_argument("--seeds", help="only these seeds, e.g. 0-4 or 0,2,5 (default: every "
                                        "finished run)")
    parser.add_argument("--summary", type=pathlib.Path,
                        help="where to write the JSON summary (default out_dir/summary.json)")
    args = parser.parse_args()
    seeds = None
    if args.seeds is not None:
        try:
            seeds = parse_seeds(args.seeds)
        except ValueError as err:
            parser.error(f"--seeds: {err}")
    for folder in (args.out_dir, args.baseline_dir):
        if folder is not None and not folder.is_dir():
            parser.error(f"{folder}: no such folder")
    runs = load_runs(args.out_dir)
    if args.baseline_dir is not None:
        runs[args.baseline] = load_runs(args.baseline_dir).get(args.baseline, {})
    if seeds is not None:
        runs = keep_seeds(runs, seeds)
    if not runs:
        sys.exit(f"{args.out_dir}: no finished runs (no <model>_seed<k>/results.json"
                 + (f" for seeds {args.seeds}" if seeds is not None else "") + ")")
    summary = summarise(runs, args.model, args.baseline)
    print(markdown(summary))
    summary_path = args.summary or args.out_dir / "summary.json"
    summary_path.write_text(json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    main()
