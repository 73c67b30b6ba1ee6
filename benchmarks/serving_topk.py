"""Top-K retrieval at serving time: exact scoring vs TFRS BruteForce vs TFRS ScaNN, by catalog size.

For each catalog size N it makes N random item embeddings (float32, seeded) from a clustered,
low-rank-ish distribution (a mixture of Gaussians whose centres lie in a 16-d subspace, plus a
little full-rank noise), so that approximate search has structure to exploit and its recall
means something; queries come from the same distribution. All sizes sample the same mixture.
It then times, in-process at batch 1 (one query of shape [1, dim] per call, each method wrapped
in a `tf.function` with a fixed input signature as a SavedModel signature would be):

  exact       tf.math.top_k(tf.matmul(q, E, transpose_b=True), 10)
  bruteforce  tfrs.layers.factorized_top_k.BruteForce(k=10), indexed with int64 item ids
  scann       tfrs.layers.factorized_top_k.ScaNN(k=10), indexed with int64 item ids, if the
              `scann` package loads; num_leaves ~ sqrt(N), and num_leaves_to_search /
              num_reordering_candidates calibrated on separate queries to reach
              --target-recall (unless given); ScaNN's k-means is not seeded, so the
              calibrated settings (and build times) can differ a little between runs

Warm-up calls come first; then the methods take turns query by query (the order rotates), so
all of them see the same load on a shared machine. Reports p50 / p99 / mean latency, recall@10
against the exact top 10 (computed in numpy), index build time, and each method's p50 at every
size divided by its p50 at the smallest size. Prints and saves results.json and results.md.

    .venv/bin/python benchmarks/serving_topk.py                       # 1e4, 1e5, 1e6 items
    .venv/bin/python benchmarks/serving_topk.py --sizes 10000,100000 --queries 50

ScaNN comes from `scann==1.3.2` (requirements.lock): 1.3.1 and 1.3.2 are the releases built for
TensorFlow 2.16 (they declare tensorflow~=2.16.0 and nothing else but numpy). Its index is two
custom TensorFlow ops (`Scann>TensorsToScann`, `Scann>ScannSearchBatched`): a SavedModel holding
one loads only where `scann` is imported first, so a stock TF Serving binary cannot serve it.

A scann whose TensorFlow ops do not load (e.g. 1.2.x or 1.3.0 with TF 2.16) raises NotFoundError
on import, which TFRS does not catch (it only catches ImportError); this script catches it,
reports it, hides scann from TFRS and measures the other methods. Catalog embeddings at 1e6 x 64
take 256 MB per copy; the script holds about five copies.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import warnings
from typing import Callable, Dict, List, Optional, Sequence, Tuple

# Keras 2 (tf-keras) as tf.keras, as `import dspnet_tf` would do; set here rather than by
# importing dspnet_tf because this benchmark needs none of the model code.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
warnings.filterwarnings("ignore", message=".*non-supported Python version.*",
                        category=FutureWarning)

import numpy as np  # noqa: E402

K = 10
METHODS = ("exact", "bruteforce", "scann")
# The mixture every catalog size samples from (fixed, so sizes are comparable).
MIXTURE_SEED = 1234
MIXTURE_COMPONENTS = 256
MIXTURE_RANK = 16


def import_scann() -> Tuple[Optional[object], Optional[str], Optional[str]]:
    """(scann_ops module or None, scann version or None, error message or None).

    Must run before tensorflow_recommenders is imported: TFRS imports scann itself and only
    catches ImportError, so a scann whose TF ops fail to load (tf.errors.NotFoundError) would
    break `import tensorflow_recommenders`. On failure scann is hidden from TFRS.
    """
    version = None
    try:
        from importlib import metadata  # pylint: disable=import-outside-toplevel

        version = metadata.version("scann")
    except Exception:  # pylint: disable=broad-except
        pass
    try:
        from scann import scann_ops  # pylint: disable=import-outside-toplevel

        return scann_ops, version, None
    except Exception as error:  # pylint: disable=broad-except
        for name in [m for m in sys.modules if m == "scann" or m.startswith("scann.")]:
            del sys.modules[name]
        sys.modules["scann"] = None  # type: ignore[assignment]  # `import scann` -> ImportError
        return None, version, f"{type(error).__name__}: {error}"


def mixture(dim: int) -> Tuple[np.ndarray, np.ndarray]:
    """Component centres [C, dim] and the low-rank basis [rank, dim] of the item distribution."""
    rng = np.random.default_rng(MIXTURE_SEED)
    rank = min(MIXTURE_RANK, dim)
    basis = np.linalg.qr(rng.normal(size=(dim, rank)))[0].T  # orthonormal rows
    centres = rng.normal(size=(MIXTURE_COMPONENTS, rank)) @ basis
    return centres.astype(np.float32), basis.astype(np.float32)


def sample(n: int, dim: int, seed: int) -> np.ndarray:
    """n float32 points: a random centre + within-cluster noise in the subspace + small noise."""
    centres, basis = mixture(dim)
    rng = np.random.default_rng(seed)
    component = rng.integers(0, len(centres), size=n)
    out = centres[component]
    out += (0.35 * rng.normal(size=(n, basis.shape[0])).astype(np.float32)) @ basis
    out += 0.05 * rng.normal(size=(n, dim)).astype(np.float32)
    return np.ascontiguousarray(out, dtype=np.float32)


def exact_top_k(queries: np.ndarray, items: np.ndarray, k: int = K, chunk: int = 16) -> np.ndarray:
    """Indices [Q, k] of the k largest dot products, by numpy, in chunks of queries."""
    out = np.empty((len(queries), k), dtype=np.int64)
    for start in range(0, len(queries), chunk):
        scores = queries[start:start + chunk] @ items.T
        top = np.argpartition(-scores, k, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1)
        out[start:start + chunk] = np.take_along_axis(top, order, axis=1)
    return out


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean over queries of |found ∩ truth| / k."""
    return float(np.mean([len(set(f.tolist()) & set(t.tolist())) / truth.shape[1]
                          for f, t in zip(found, truth)]))


def percentile_ms(latencies: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(latencies) * 1e3, q))


def calibrate_scann(scann_ops, layer, cal_queries: np.ndarray, cal_truth: np.ndarray,
                    num_leaves: int, reorder_grid: Sequence[int], target: float
                    ) -> Tuple[int, int, List[Dict], bool]:
    """Cheapest (leaves_to_search, reorder) reaching `target` recall@10 on calibration queries.

    Uses the search-time overrides of the searcher inside an already built layer (built with
    the largest reorder count), so the index is trained once for the sweep.
    """
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    serialized = layer._serialized_searcher  # pylint: disable=protected-access
    searcher = scann_ops.searcher_from_module(serialized)
    fractions = (0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0)
    leaves_grid = sorted({max(1, min(num_leaves, int(round(f * num_leaves)))) for f in fractions})
    queries = tf.constant(cal_queries)
    table = []
    for leaves in leaves_grid:
        for reorder in sorted(reorder_grid):
            result = searcher.search_batched(queries, final_num_neighbors=K,
                                             pre_reorder_num_neighbors=reorder,
                                             leaves_to_search=leaves)
            value = recall(result.indices.numpy(), cal_truth)
            table.append({"num_leaves_to_search": leaves, "num_reordering_candidates": reorder,
                          "calibration_recall_at_10": round(value, 4)})
            if value >= target:
                return leaves, reorder, table, True
    return leaves_grid[-1], max(reorder_grid), table, False


def build_methods(items: np.ndarray, args, scann_ops, cal_queries: np.ndarray,
                  cal_truth: np.ndarray) -> Tuple[Dict[str, Callable], Dict[str, Dict]]:
    """tf.functions taking a [1, dim] query and returning (scores, ids) per method, with notes."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    from tensorflow_recommenders.layers import (  # pylint: disable=import-outside-toplevel
        factorized_top_k)

    n, dim = items.shape
    signature = [tf.TensorSpec([1, dim], tf.float32)]
    ids = tf.constant(np.arange(n, dtype=np.int64))
    fns: Dict[str, Callable] = {}
    info: Dict[str, Dict] = {}

    catalog = tf.constant(items)

    @tf.function(input_signature=signature)
    def exact(q):
        top = tf.math.top_k(tf.matmul(q, catalog, transpose_b=True), K)
        return top.values, tf.cast(top.indices, tf.int64)

    fns["exact"] = exact
    info["exact"] = {"build_s": 0.0}

    started = time.perf_counter()
    brute = factorized_top_k.BruteForce(k=K)
    brute.index(tf.constant(items), ids)
    info["bruteforce"] = {"build_s": round(time.perf_counter() - started, 3)}

    @tf.function(input_signature=signature)
    def bruteforce(q):
        return brute(q, k=K)

    fns["bruteforce"] = bruteforce

    if scann_ops is not None:
        num_leaves = args.scann_leaves or max(1, int(round(np.sqrt(n))))
        reorder_grid = [int(r) for r in args.scann_reorder.split(",")]

        def make(leaves_to_search: int, reorder: int):
            began = time.perf_counter()
            layer = factorized_top_k.ScaNN(
                k=K, num_leaves=num_leaves, num_leaves_to_search=leaves_to_search,
                num_reordering_candidates=reorder)
            layer.index(tf.constant(items), ids)
            return layer, time.perf_counter() - began

        calibration: List[Dict] = []
        reached = None
        if args.scann_leaves_to_search:
            leaves_to_search, reorder = args.scann_leaves_to_search, max(reorder_grid)
            layer, build_s = make(leaves_to_search, reorder)
        else:
            first_guess = max(1, num_leaves // 10)
            layer, build_s = make(first_guess, max(reorder_grid))
            leaves_to_search, reorder, calibration, reached = calibrate_scann(
                scann_ops, layer, cal_queries, cal_truth, num_leaves, reorder_grid,
                args.target_recall)
            if (leaves_to_search, reorder) != (first_guess, max(reorder_grid)):
                # Rebuild so the served layer's own defaults are the chosen ones.
                layer, build_s = make(leaves_to_search, reorder)
        scann_layer = layer

        @tf.function(input_signature=signature)
        def scann(q):
            return scann_layer(q, k=K)

        fns["scann"] = scann
        info["scann"] = {
            "build_s": round(build_s, 3),
            "num_leaves": num_leaves,
            "num_leaves_to_search": leaves_to_search,
            "num_reordering_candidates": reorder,
            "dimensions_per_block": 2,
            "training_iterations": 12,
            "calibrated": not args.scann_leaves_to_search,
            "calibration_target_reached": reached,
            "calibration": calibration,
        }
    return fns, info


def run_size(n: int, args, scann_ops) -> Dict:
    """Build the catalog of size n, the methods, and time them at batch 1."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    items = sample(n, args.dim, seed=args.seed + n)
    queries = sample(args.queries, args.dim, seed=args.seed + 1)
    cal_queries = sample(args.calibration_queries, args.dim, seed=args.seed + 2)
    started = time.perf_counter()
    truth = exact_top_k(queries, items)
    cal_truth = exact_top_k(cal_queries, items)
    truth_s = time.perf_counter() - started

    fns, info = build_methods(items, args, scann_ops, cal_queries, cal_truth)
    names = list(fns)
    query_tensors = [tf.constant(queries[i:i + 1]) for i in range(len(queries))]
    warm = [tf.constant(cal_queries[i % len(cal_queries):i % len(cal_queries) + 1])
            for i in range(args.warmup)]
    for name in names:
        for q in warm:
            fns[name](q)[1].numpy()

    latencies: Dict[str, List[float]] = {name: [] for name in names}
    found: Dict[str, np.ndarray] = {name: np.zeros((len(queries), K), np.int64) for name in names}
    for _ in range(args.rounds):
        for i, q in enumerate(query_tensors):
            shift = i % len(names)
            for name in names[shift:] + names[:shift]:
                began = time.perf_counter()
                _, got = fns[name](q)
                got = got.numpy()
                latencies[name].append(time.perf_counter() - began)
                found[name][i] = got[0]

    methods = {}
    for name in names:
        methods[name] = {
            "p50_ms": round(percentile_ms(latencies[name], 50), 4),
            "p99_ms": round(percentile_ms(latencies[name], 99), 4),
            "mean_ms": round(float(np.mean(latencies[name])) * 1e3, 4),
            "recall_at_10": round(recall(found[name], truth), 4),
            "calls": len(latencies[name]),
            **info[name],
        }
    return {"items": n, "ground_truth_s": round(truth_s, 3), "methods": methods}


def markdown(report: Dict) -> str:
    env, cfg = report["environment"], report["config"]
    lines = [
        "# Serving top-K: exact vs TFRS BruteForce vs TFRS ScaNN",
        "",
        f"Batch 1, k={K}, dim={cfg['dim']}, {cfg['queries']} timed queries x {cfg['rounds']} "
        f"round(s) per method, {cfg['warmup']} warm-up calls; in-process `tf.function` calls.",
        f"TensorFlow {env['tensorflow']}, TFRS {env['tensorflow_recommenders']}, "
        f"{env['cpus']} CPUs, load average {env['loadavg_start']} at start, "
        f"{env['loadavg_end']} at end.",
        "",
    ]
    if env["scann_error"]:
        lines += [f"**ScaNN not measured**: scann {env['scann'] or '(not installed)'} could not be "
                  f"imported: `{env['scann_error'][:400]}`", ""]
    else:
        lines += [f"ScaNN: scann {env['scann']}.", ""]
    lines += ["| items | method | p50 ms | p99 ms | mean ms | recall@10 | p50 / p50 at "
              f"{report['results'][0]['items']:,} | build s |",
              "|---:|---|---:|---:|---:|---:|---:|---:|"]
    for size in report["results"]:
        for name, m in size["methods"].items():
            ratio = report["p50_ratio_vs_smallest"][name].get(str(size["items"]))
            lines.append(f"| {size['items']:,} | {name} | {m['p50_ms']:.3f} | {m['p99_ms']:.3f} | "
                         f"{m['mean_ms']:.3f} | {m['recall_at_10']:.4f} | "
                         f"{'' if ratio is None else f'{ratio:.2f}'} | {m['build_s']:.2f} |")
    scann_rows = [(s["items"], s["methods"]["scann"]) for s in report["results"]
                  if "scann" in s["methods"]]
    if scann_rows:
        lines += ["", "ScaNN parameters (dot product, AH scoring with 2 dims per block, 12 k-means "
                  "iterations; leaves to search and reordering candidates calibrated on "
                  f"{cfg['calibration_queries']} separate queries for recall@10 >= "
                  f"{cfg['target_recall']}):", "",
                  "| items | num_leaves | num_leaves_to_search | num_reordering_candidates | "
                  "target reached on calibration |", "|---:|---:|---:|---:|---|"]
        for n, m in scann_rows:
            reached = m["calibration_target_reached"] if m["calibrated"] else "n/a (fixed)"
            lines.append(f"| {n:,} | {m['num_leaves']} | {m['num_leaves_to_search']} | "
                         f"{m['num_reordering_candidates']} | {reached} |")
    lines += ["", "Recall@10 is against the exact top 10 computed in numpy; `exact` can fall "
              "short of 1.0 only through float ties. Latency on a shared machine moves with "
              "its load (see load averages); methods take turns query by query so they share it.",
              ""]
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    parser.add_argument("--sizes", default="10000,100000,1000000",
                        help="comma-separated catalog sizes (default: %(default)s)")
    parser.add_argument("--dim", type=int, default=64, help="embedding dimension (default: 64)")
    parser.add_argument("--queries", type=int, default=200,
                        help="timed queries per size and method (default: 200)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="passes over the timed queries (default: 1)")
    parser.add_argument("--warmup", type=int, default=20,
                        help="untimed warm-up calls per method and size (default: 20)")
    parser.add_argument("--calibration-queries", type=int, default=200,
                        help="separate queries for ScaNN calibration (default: 200)")
    parser.add_argument("--target-recall", type=float, default=0.99,
                        help="ScaNN calibration target for recall@10 (default: 0.99)")
    parser.add_argument("--scann-leaves", type=int, default=0,
                        help="ScaNN num_leaves (default: round(sqrt(N)))")
    parser.add_argument("--scann-leaves-to-search", type=int, default=0,
                        help="fix ScaNN num_leaves_to_search and skip calibration "
                             "(uses the largest --scann-reorder)")
    parser.add_argument("--scann-reorder", default="100,200",
                        help="ScaNN num_reordering_candidates to try, comma-separated "
                             "(default: %(default)s)")
    parser.add_argument("--no-scann", action="store_true", help="do not try to import scann")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--out", default="benchmarks/results/serving_topk",
                        help="output directory for results.json and results.md "
                             "(default: %(default)s)")
    args = parser.parse_args(argv)
    sizes = sorted(int(s) for s in args.sizes.split(",") if s.strip())
    if not sizes or min(sizes) <= K:
        parser.error(f"--sizes must be catalog sizes larger than k={K}")

    if args.no_scann:
        scann_ops, scann_version, scann_error = None, None, "disabled by --no-scann"
        sys.modules["scann"] = None  # type: ignore[assignment]
    else:
        scann_ops, scann_version, scann_error = import_scann()
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    import tensorflow_recommenders as tfrs  # pylint: disable=import-outside-toplevel

    if scann_error:
        print(f"ScaNN unavailable, measuring exact and BruteForce only: {scann_error}", flush=True)
    else:
        print(f"scann {scann_version} loaded", flush=True)

    environment = {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "tensorflow_recommenders": tfrs.__version__,
        "scann": scann_version,
        "scann_error": scann_error,
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
    }
    results = []
    for n in sizes:
        print(f"-- {n:,} items", flush=True)
        size = run_size(n, args, scann_ops)
        for name, m in size["methods"].items():
            extra = ""
            if name == "scann":
                extra = (f"  leaves {m['num_leaves']}, search {m['num_leaves_to_search']}, "
                         f"reorder {m['num_reordering_candidates']}")
            print(f"   {name:<10} p50 {m['p50_ms']:8.3f} ms  p99 {m['p99_ms']:8.3f} ms  "
                  f"recall@10 {m['recall_at_10']:.4f}  build {m['build_s']:.2f} s{extra}",
                  flush=True)
        results.append(size)
    environment["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]

    smallest = results[0]
    ratios: Dict[str, Dict[str, float]] = {}
    for name in METHODS:
        if name not in smallest["methods"]:
            continue
        base = smallest["methods"][name]["p50_ms"]
        ratios[name] = {str(s["items"]): round(s["methods"][name]["p50_ms"] / base, 3)
                        for s in results if name in s["methods"]}
    config = {key: getattr(args, key) for key in
              ("dim", "queries", "rounds", "warmup", "calibration_queries", "target_recall",
               "scann_leaves", "scann_leaves_to_search", "scann_reorder", "seed")}
    config.update({"sizes": sizes, "k": K, "batch": 1,
                   "distribution": f"mixture of {MIXTURE_COMPONENTS} Gaussians, centres in a "
                                   f"{MIXTURE_RANK}-d subspace, within-cluster sd 0.35 in the "
                                   "subspace + 0.05 isotropic"})
    report = {"config": config, "environment": environment, "results": results,
              "p50_ratio_vs_smallest": ratios}

    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "results.json"), "w", encoding="utf-8") as handle:
        json.dump(report, handle, indent=2)
    text = markdown(report)
    with open(os.path.join(args.out, "results.md"), "w", encoding="utf-8") as handle:
        handle.write(text)
    print()
    print(text)
    print(f"wrote {os.path.join(args.out, 'results.json')} and results.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
