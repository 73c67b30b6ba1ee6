"""Prints QUALITY.md's first section (the two tasks) from committed quality results.

    python3 benchmarks/in_scene_summary.py benchmarks/results/quality_in_scene \
        [--ablations benchmarks/results/quality_in_scene_ablations ...]

Reads `results.json` of a main run (`dspnet benchmark quality`, both tasks) and optionally of
an ablation run, and prints Markdown: the two main tables, DSPnet against the best baseline of
each task, the scene lift captured, the next-scene accuracy against the oracle's, the
oracle-gap diagnostic, the misalignment sweep and the ablations, each figure read from the
files (nothing typed by hand). Plain Python: no TensorFlow needed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Dict, List

TASKS = {"next_event": "Next event (history only)",
         "in_scene": "In-scene (the scene of the event to predict is given)"}


def _load(folder: str) -> Dict[str, Any]:
    path = os.path.join(folder, "results.json")
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        sys.exit(f"error: {path}: no such file (a `dspnet benchmark quality --out` folder?)")


def _cell(metrics: Dict[str, Any], key: str, spread: bool) -> str:
    value = metrics[key]
    return f"{value['mean']:.4f}" + (f" ± {value['std']:.4f}" if spread else "")


def task_table(results: Dict[str, Any], task: str, names: List[str] = None) -> List[str]:
    table = results["tasks"][task]
    oracle = table["oracle"]
    spread = len(results["seeds"]) > 1
    columns = ["hr@10", "ndcg@10", "mrr"] + (["scene_acc@1"] if task == "next_event" else [])
    lines = ["| model | " + " | ".join(columns) + " | ndcg@10 / oracle |",
             "|---" * (len(columns) + 2) + "|"]
    if oracle:
        lines.append("| oracle | " + " | ".join(f"{oracle[c]:.4f}" for c in columns) + " | 1.00 |")
    ranked = sorted(names or table["models"], key=lambda m: -table["models"][m]["ndcg@10"]["mean"])
    for name in ranked:
        metrics = table["models"][name]
        ratio = metrics["ndcg@10"]["mean"] / oracle["ndcg@10"] if oracle else float("nan")
        lines.append(f"| {name} | " + " | ".join(_cell(metrics, c, spread) for c in columns)
                     + f" | {ratio:.3f} |")
    return lines


def main(argv: List[str] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("main", help="folder of the main run's results.json")
    parser.add_argument("--ablations", action="append", default=[],
                        help="folder of an ablation (or variant) run's results.json; repeatable")
    args = parser.parse_args(argv)
    print(render(args.main, args.ablations))
    return 0


def render(main_folder: str, ablation_folders: List[str] = ()) -> str:
    """The Markdown of the current quality tables (QUALITY.md's first section, make_docs.py)."""
    results = _load(main_folder)
    out: List[str] = []
    for task, title in TASKS.items():
        table = results["tasks"][task]
        sig = table["significance"]
        out += [f"### {title}", ""] + task_table(results, task) + [""]
        if sig:
            out += [f"DSPnet / best baseline ({sig['baseline']}): **{sig['ratio']:.3f} x** "
                    f"NDCG@10, Wilcoxon signed-rank p = {sig['p_value']:.3g} (per-user NDCG@10 "
                    f"averaged over seeds {results['seeds']}).", ""]
    lift = results.get("scene_lift")
    nxt = results["tasks"]["next_event"]
    ins = results["tasks"]["in_scene"]
    dspnet_in = ins["models"]["dspnet"]["ndcg@10"]["mean"]
    out += ["| acceptance reading | value |", "|---|---|",
            f"| in-scene DSPnet / in-scene oracle | {dspnet_in / ins['oracle']['ndcg@10']:.3f} |",
            f"| in-scene DSPnet / best in-scene baseline ({ins['significance']['baseline']}) | "
            f"{ins['significance']['ratio']:.3f} (p = {ins['significance']['p_value']:.3g}) |",
            f"| scene lift captured (DSPnet in-scene - next event) / (oracle's) | "
            f"{lift['model_lift']:.4f} / {lift['oracle_lift']:.4f} = {lift['captured']:.3f} |",
            f"| next-scene accuracy@1, DSPnet / oracle | "
            f"{nxt['models']['dspnet']['scene_acc@1']['mean']:.4f} / "
            f"{nxt['oracle']['scene_acc@1']:.4f} = "
            f"{nxt['models']['dspnet']['scene_acc@1']['mean'] / nxt['oracle']['scene_acc@1']:.3f} |",
            f"| next event: DSPnet / best baseline ({nxt['significance']['baseline']}) | "
            f"{nxt['significance']['ratio']:.3f} (p = {nxt['significance']['p_value']:.3g}) |", ""]
    for name, gap in (results.get("oracle_gap") or {}).items():
        out += [f"### Where the oracle gap lives ({name}, {gap['users']:.0f} test users, mean over "
                "seeds)", "",
                "| next scene P(s \\| h) | item given scene P(item \\| h, s) | NDCG@10 |",
                "|---|---|---|",
                f"| (the served next-event answer) | | {gap['model_own_next_event_ndcg@10']:.4f} |",
                f"| model | model | {gap['model_ndcg@10']:.4f} |",
                f"| oracle | model | {gap['oracle_scene_model_item_ndcg@10']:.4f} |",
                f"| model | oracle | {gap['model_scene_oracle_item_ndcg@10']:.4f} |",
                f"| oracle | oracle | {gap['oracle_ndcg@10']:.4f} |",
                f"| given (in-scene) | model | {gap['model_in_scene_ndcg@10']:.4f} |",
                f"| given (in-scene) | oracle | {gap['oracle_in_scene_ndcg@10']:.4f} |", "",
                "| target scene | users | model | oracle | model / oracle |", "|---|---|---|---|---|"]
        surfaces = [k[len("model_in_scene_"):-len("_users")] for k in gap
                    if k.startswith("model_in_scene_") and k.endswith("_users")]
        for surface in sorted(surfaces, key=lambda s: gap[f"model_in_scene_{s}_ndcg@10"]
                              / gap[f"oracle_in_scene_{s}_ndcg@10"]):
            ours = gap[f"model_in_scene_{surface}_ndcg@10"]
            best = gap[f"oracle_in_scene_{surface}_ndcg@10"]
            out.append(f"| {surface} | {gap[f'model_in_scene_{surface}_users']:.0f} | "
                       f"{ours:.4f} | {best:.4f} | {ours / best:.2f} |")
        out.append("")
    sweep = results["studies"].get("misalignment")
    if sweep:
        out += [f"### Misalignment sweep ({sweep['users']} users per world, seeds "
                f"{results['studies']['seeds']})", "",
                "| misalignment | oracle next / in-scene | DSPnet next / in-scene | best in-scene "
                "baseline | DSPnet / it (p) | below? | scene lift DSPnet / oracle |",
                "|---" * 7 + "|"]
        for point in sweep["points"]:
            part = point["tasks"]["in_scene"]
            base = part["baseline"]
            test = part["dspnet_vs_baseline"]
            out.append(
                f"| {point['misalignment']:g} | {point['tasks']['next_event']['oracle_ndcg@10']:.4f} "
                f"/ {part['oracle_ndcg@10']:.4f} | "
                f"{point['tasks']['next_event']['models']['dspnet']['ndcg@10']['mean']:.4f} / "
                f"{part['models']['dspnet']['ndcg@10']['mean']:.4f} | {base} "
                f"{part['models'][base]['ndcg@10']['mean']:.4f} | {test['ratio']:.3f} "
                f"({test['p_value']:.2g}) | {'yes' if part['dspnet_significantly_below'] else 'no'} | "
                f"{point['scene_lift']['dspnet']:.4f} / {point['scene_lift']['oracle']:.4f} |")
        out.append("")
    for folder in ablation_folders:
        ablations = _load(folder)
        names = [n for n in ablations["tasks"]["in_scene"]["models"]]
        out += [f"### `{os.path.basename(os.path.normpath(folder))}` (seeds {ablations['seeds']}; "
                "`dspnet` is the default model)", ""]
        for task, title in TASKS.items():
            out += [f"{title}:", ""] + task_table(ablations, task, names) + [""]
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
