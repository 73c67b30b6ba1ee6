"""Writes the current-results tables of the README and the two results documents from the
committed results files (run by `make docs`).

Each table sits between two markers in its document:

    <!-- begin generated: NAME (benchmarks/make_docs.py; change the results, not this text) -->
    ...
    <!-- end generated: NAME -->

and is rewritten from the results files NAME's renderer reads, so a figure in those tables is
never typed by hand. `--check` rewrites nothing and exits 1 naming every table that differs
from what this script would write (the test suite runs it).

    .venv/bin/python benchmarks/make_docs.py            # rewrite the tables
    .venv/bin/python benchmarks/make_docs.py --check    # fail if a committed table is stale
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import pathlib
import re
import statistics
import sys
from typing import Callable, Dict, List, Tuple

ROOT = pathlib.Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT / "benchmarks"))

import in_scene_summary  # noqa: E402  (a sibling script)
from time_to_best import two_standard_errors  # noqa: E402

QUALITY_MAIN = RESULTS / "quality_in_scene"
QUALITY_EXTRA = [RESULTS / "quality_in_scene_ablations"]
# MovieLens-100K, one protocol (time_to_best.py's): DSPnet's default of before the recency bias
# and the scene attribute (float32 and bfloat16) and SASRec, each run alone ...
TIME_TO_BEST = RESULTS / "time_to_best_ml100k"
# ... and today's default (its ablation name then), three seeds one after another, alone.
DEFAULT_ML100K = RESULTS / "recency_bias_ml100k"
DEFAULT_ML100K_MODEL = "dspnet_recency_bias_scene_attribute"

BEGIN = "<!-- begin generated: {name} (benchmarks/make_docs.py; change the results, not this text) -->"
END = "<!-- end generated: {name} -->"


def _json(path: pathlib.Path) -> dict:
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def _link(path: pathlib.Path, doc: pathlib.Path) -> str:
    relative = os.path.relpath(path, doc.parent)
    return f"[{path.relative_to(RESULTS)}]({relative})"


def _ml100k() -> dict:
    """Today's default DSPnet on MovieLens-100K (float32) against SASRec and against the
    default of before, all under one protocol: test NDCG@10 {mean, std, n} of each, and the
    default's seconds to its best validation epoch."""
    default = _json(DEFAULT_ML100K / "results.json")
    configs = _json(TIME_TO_BEST / "summary.json")["configs"]
    timing = default["timing"][DEFAULT_ML100K_MODEL]
    return {"dspnet": dict(default["models"][DEFAULT_ML100K_MODEL]["ndcg@10"],
                           n=len(default["seeds"])),
            "sasrec": configs["sasrec float32"]["test_ndcg@10"],
            "before": configs["dspnet float32"]["test_ndcg@10"],
            "seconds_to_best": statistics.fmean(run["seconds_to_best"] for run in timing)}


def quality_targets(results: dict) -> List[Tuple[str, float, float]]:
    """(target, reading, bar or None) of the in-scene issue's acceptance, from one results.json
    (None: a reading the issue asks to report, with no bar)."""
    ins, nxt, lift = results["tasks"]["in_scene"], results["tasks"]["next_event"], \
        results["scene_lift"]
    dspnet_in = ins["models"]["dspnet"]["ndcg@10"]["mean"]
    scene = nxt["models"]["dspnet"]["scene_acc@1"]["mean"] / nxt["oracle"]["scene_acc@1"]
    return [
        ("in-scene NDCG@10, DSPnet / oracle", dspnet_in / ins["oracle"]["ndcg@10"], 0.90),
        (f"in-scene NDCG@10, DSPnet / best fair baseline ({ins['significance']['baseline']}; "
         f"p = {ins['significance']['p_value']:.2g}, needs < 0.01)",
         ins["significance"]["ratio"], 1.10),
        ("scene lift captured (DSPnet's / the oracle's)", lift["captured"], 0.80),
        ("next-scene accuracy@1, DSPnet / oracle", scene, 0.95),
        (f"next event NDCG@10, DSPnet / best baseline ({nxt['significance']['baseline']}; "
         f"p = {nxt['significance']['p_value']:.2g})", nxt["significance"]["ratio"], None),
    ]


def render_quality(doc: pathlib.Path) -> str:
    results = _json(QUALITY_MAIN / "results.json")
    lines = [f"Results files: {_link(QUALITY_MAIN / 'results.json', doc)}, "
             + ", ".join(_link(folder / "results.json", doc) for folder in QUALITY_EXTRA) + ".",
             "", in_scene_summary.render(str(QUALITY_MAIN), [str(f) for f in QUALITY_EXTRA]),
             "### Against the in-scene issue's targets (main run, mean over seeds "
             f"{results['seeds']})", "", "| target | reading | bar | met |", "|---|---|---|---|"]
    for name, reading, bar in quality_targets(results):
        if bar is None:
            lines.append(f"| {name} | {reading:.3f} | (reported) | |")
        else:
            lines.append(f"| {name} | {reading:.3f} | >= {bar:.2f} | "
                         f"{'yes' if reading >= bar else '**no**'} |")
    ceiling_results = _json(RESULTS / "learnable_ceiling" / "results.json")
    ceiling = ceiling_results["ratios"]
    ins = results["tasks"]["in_scene"]
    best = ins["significance"]["baseline"]
    needed = 1.10 * ins["models"][best]["ndcg@10"]["mean"]
    in_scene_ceiling = ceiling_results["population"]["in_scene_ndcg@10"]["mean"]
    lines += ["", "What a learner can reach (the learnable ceiling, below) is "
              f"{ceiling['scene_acc@1']:.3f} x the exact oracle for the next scene and "
              f"{ceiling['in_scene_ndcg@10']:.3f} x in-scene: a bar above it cannot be met by "
              f"any model. 1.10 x the best fair baseline in-scene is {needed:.4f}, "
              f"{needed / in_scene_ceiling:.3f} x the learnable ceiling ({in_scene_ceiling:.4f})."]
    ml = _ml100k()
    now, before = ml["dspnet"], ml["before"]
    bound = two_standard_errors(now, before)
    moved = now["mean"] - before["mean"]
    lines += ["", "The sweep (never significantly below the best in-scene baseline; the lift "
              "falls toward 0 with the oracle's): the sweep table above. MovieLens-100K (one "
              f"real scene), test NDCG@10 over {now['n']} seeds: {now['mean']:.4f} against the "
              f"default of before the recency bias and the scene attribute, {before['mean']:.4f} "
              f"(difference {moved:+.4f}, two standard errors {bound:.4f}: "
              f"{'within' if abs(moved) <= bound else '**outside**'} the seed noise; "
              f"{_link(DEFAULT_ML100K / 'results.json', doc)}, "
              f"{_link(TIME_TO_BEST / 'summary.json', doc)})."]
    return "\n".join(lines)


def _results_md(folder: pathlib.Path, name: str = "results.md") -> Callable:
    def render(doc: pathlib.Path) -> str:
        text = (folder / name).read_text(encoding="utf-8").strip().splitlines()
        body = [line for line in text if not line.startswith("# ")]  # the file's own title
        body = [re.sub(r"Model: `/tmp/[^`]*`; ", "", line) for line in body]  # a temp path
        return f"Results file: {_link(folder / name.replace('.md', '.json'), doc)}.\n\n" + \
            "\n".join(body).strip()
    return render


def _main_tables(folder: pathlib.Path) -> Callable:
    """A quality run's results.md up to its oracle-gap study: settings, both main tables and
    the scene lift (its headings one level down, to sit under a section of the doc)."""
    def render(doc: pathlib.Path) -> str:
        text = (folder / "results.md").read_text(encoding="utf-8").splitlines()
        stop = next((i for i, line in enumerate(text) if line.startswith("## Where the")),
                    len(text))
        body = [("###" + line[2:]) if line.startswith("## ") else line
                for line in text[:stop] if not line.startswith("# ")]
        return f"Results file: {_link(folder / 'results.json', doc)}.\n\n" + \
            "\n".join(body).strip()
    return render


def render_at_a_glance(doc: pathlib.Path) -> str:
    quality = _json(QUALITY_MAIN / "results.json")
    ins, nxt = quality["tasks"]["in_scene"], quality["tasks"]["next_event"]
    dspnet_in, dspnet_next = ins["models"]["dspnet"]["ndcg@10"], nxt["models"]["dspnet"]["ndcg@10"]
    best_in, best_next = ins["significance"]["baseline"], nxt["significance"]["baseline"]
    lift = quality["scene_lift"]
    ml = _ml100k()
    parity = _json(RESULTS / "pipeline_parity.json")
    throughput = _json(RESULTS / "train_throughput" / "results.json")
    serving = _json(RESULTS / "serving" / "serving.json")
    ceiling = _json(RESULTS / "learnable_ceiling" / "results.json")
    time_to_best = _json(TIME_TO_BEST / "summary.json")
    seeds = len(quality["seeds"])
    quality_link = _link(QUALITY_MAIN / "results.json", doc)

    def rate(name: str) -> float:
        return throughput["runs"][f"{name} xla=off"]["sequences_per_s"]

    def p50(path: str, clients: int = 1) -> float:
        return [r for r in serving["results"][path] if r["clients"] == clients][0]["p50_ms"]

    rows = [
        ("default world, in-scene NDCG@10 (the served task)",
         f"{dspnet_in['mean']:.4f} ± {dspnet_in['std']:.4f}",
         f"oracle {ins['oracle']['ndcg@10']:.4f}",
         f"{dspnet_in['mean'] / ins['oracle']['ndcg@10']:.3f} x", quality_link),
        ("(same)", "", f"best fair baseline `{best_in}` "
                 f"{ins['models'][best_in]['ndcg@10']['mean']:.4f}",
         f"{ins['significance']['ratio']:.3f} x (p = {ins['significance']['p_value']:.2g})",
         quality_link),
        ("(same)", "",
         f"learnable ceiling {ceiling['population']['in_scene_ndcg@10']['mean']:.4f}",
         f"{dspnet_in['mean'] / ceiling['population']['in_scene_ndcg@10']['mean']:.3f} x",
         _link(RESULTS / "learnable_ceiling" / "results.json", doc)),
        ("default world, next-event NDCG@10",
         f"{dspnet_next['mean']:.4f} ± {dspnet_next['std']:.4f}",
         f"best baseline `{best_next}` {nxt['models'][best_next]['ndcg@10']['mean']:.4f}",
         f"{nxt['significance']['ratio']:.3f} x (p = {nxt['significance']['p_value']:.2g})",
         quality_link),
        ("scene lift (in-scene minus next event)", f"{lift['model_lift']:.4f}",
         f"oracle {lift['oracle_lift']:.4f}", f"{lift['captured']:.2f} captured", quality_link),
        (f"MovieLens-100K test NDCG@10 ({ml['dspnet']['n']} seeds)",
         f"{ml['dspnet']['mean']:.4f}",
         f"our SASRec {ml['sasrec']['mean']:.4f}",
         f"{ml['dspnet']['mean'] / ml['sasrec']['mean']:.3f} x (difference "
         f"{ml['dspnet']['mean'] - ml['sasrec']['mean']:+.4f} ± "
         f"{two_standard_errors(ml['dspnet'], ml['sasrec']) / 2:.4f} s.e.)",
         _link(DEFAULT_ML100K / "results.json", doc) + ", "
         + _link(TIME_TO_BEST / "summary.json", doc)),
        (f"TFX pipeline's pushed model, NDCG@10 ({parity['epochs']} epochs; former default)",
         f"{parity['pipeline_test_ndcg@10']:.4f}",
         f"same model, benchmark code path {parity['benchmark_test_ndcg@10']:.4f}",
         f"{parity['pipeline_test_ndcg@10'] / parity['benchmark_test_ndcg@10']:.3f} x",
         _link(RESULTS / "pipeline_parity.json", doc)),
        ("MovieLens-100K, seconds to the best validation epoch",
         f"{ml['seconds_to_best']:.0f}",
         f"RecBole's SASRec {time_to_best['recbole_seconds_to_best']:.0f}",
         f"{ml['seconds_to_best'] / time_to_best['recbole_seconds_to_best']:.3f} x",
         _link(DEFAULT_ML100K / "results.json", doc)),
        ("training, sequences/s (2 cores, float32)", f"{rate('dspnet'):.0f}",
         f"SASRec {rate('sasrec'):.0f}", f"{rate('dspnet') / rate('sasrec'):.2f} x",
         _link(RESULTS / "train_throughput" / "results.json", doc)),
        ("serving p50 at batch 1, gRPC (ms)", f"{p50('grpc'):.2f}",
         f"the model in process {p50('in_process'):.2f}",
         f"{p50('grpc') / p50('in_process'):.2f} x",
         _link(RESULTS / "serving" / "serving.json", doc)),
    ]
    lines = [f"Default world: 10,000 users, mean ± std over {seeds} seeds, full ranking. Former "
             "default: before 2026-12-04's recency bias and scene attribute.", "",
             "| result | DSPnet | compared with | ratio | results file |", "|---|---|---|---|---|"]
    previous = None
    for *cells, link in rows:
        lines.append("| " + " | ".join(cells + ["(same)" if link == previous else link]) + " |")
        previous = link
    return "\n".join(lines)


# document -> block name -> renderer
BLOCKS: Dict[str, Dict[str, Callable[[pathlib.Path], str]]] = {
    "README.md": {"at-a-glance": render_at_a_glance},
    "benchmarks/QUALITY.md": {
        "quality-current": render_quality,
        "new-user-movielens": _results_md(RESULTS / "new_user_movielens", "summary.md"),
        "bf16-default-world": _main_tables(RESULTS / "quality_bf16_default_world"),
        "learnable-ceiling": _results_md(RESULTS / "learnable_ceiling"),
        "learning-curve": _results_md(RESULTS / "learning_curve", "summary.md"),
    },
    "benchmarks/SPEED_AND_SCALE.md": {
        "train-throughput": _results_md(RESULTS / "train_throughput"),
        "time-to-best": _results_md(TIME_TO_BEST, "summary.md"),
        "large-catalog": _results_md(RESULTS / "large_catalog"),
        "large-catalog-quality": _results_md(RESULTS / "large_catalog", "quality.md"),
        "serving-topk": _results_md(RESULTS / "serving_topk"),
        "served-retrieval": _results_md(RESULTS / "served_retrieval"),
        "warm-start": _results_md(RESULTS / "warm_start"),
        "pipeline-scaling": _results_md(RESULTS / "pipeline_scaling"),
        "serving-latency": _results_md(RESULTS / "serving", "serving.md"),
        "serving-load": _results_md(RESULTS / "serving_load", "serving_load.md"),
    },
}


def block_span(text: str, name: str, doc: str) -> Tuple[int, int]:
    """(start, end) of the text between NAME's markers; ValueError if they are missing."""
    begin, end = BEGIN.format(name=name), END.format(name=name)
    start = text.find(begin)
    stop = text.find(end)
    if start < 0 or stop < start:
        raise ValueError(f"{doc}: the markers of generated table {name!r} are missing "
                         f"(expected {begin!r} ... {end!r})")
    return start + len(begin), stop


def generate(doc: str, text: str) -> str:
    """`text` with every generated table of `doc` rewritten."""
    for name, render in BLOCKS[doc].items():
        start, stop = block_span(text, name, doc)
        text = text[:start] + "\n" + render(ROOT / doc).strip() + "\n" + text[stop:]
    return text


def main(argv: List[str] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 if a committed table differs")
    args = parser.parse_args(argv)
    stale = []
    for doc in BLOCKS:
        path = ROOT / doc
        text = path.read_text(encoding="utf-8")
        new = generate(doc, text)
        if new == text:
            print(f"{doc}: up to date")
            continue
        if args.check:
            stale.append(doc)
            sys.stdout.writelines(difflib.unified_diff(
                text.splitlines(True), new.splitlines(True), f"{doc} (committed)",
                f"{doc} (from the results files)", n=1))
        else:
            tmp = path.with_suffix(path.suffix + ".tmp")
            tmp.write_text(new, encoding="utf-8")
            os.replace(tmp, path)
            print(f"{doc}: tables rewritten")
    if stale:
        print(f"stale generated tables in {', '.join(stale)}: run `make docs`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
