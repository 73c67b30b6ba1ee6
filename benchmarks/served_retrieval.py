"""The served answer's top K by catalog size: the full-catalog scores vs TFRS BruteForce vs ScaNN.

`benchmarks/serving_topk.py` times the indexes alone on q . e. This times the serving
signature itself (`ServingModule.serve_examples`, batch 1, in process): parsing, the model's
encoders, and the top K of DSPnet's served answer (the sum over scenes, or a given target
scene, with the repeat pointer), found three ways (`export_serving_model(retrieval=...)`):

  exact        every item scored, `tf.math.top_k` (the default export)
  brute_force  TFRS BruteForce candidates + history, rescored exactly (`dspnet_tf.retrieval`)
  scann        TFRS ScaNN candidates + history, the normaliser estimated from a sample

For each catalog size N an untrained DSPnet (default widths, 5 scenes, the repeat pointer on;
serving cost does not depend on what the weights learned) gets item vectors from
serving_topk.py's clustered distribution, so the index has structure to exploit as a trained
table has, and random per-scene head parts, so the scenes' answers differ. Requests are random
histories of 20 events; half name a target scene. ScaNN's `num_leaves_to_search` is calibrated
on separate requests (from about 1 % of the leaves, doubling) until the served answers'
recall@10 against exact reaches --target-recall. Methods take turns request by request, so they
share the machine's load. Reports p50 / p99 in ms, recall@10 of the served item ids against
exact (next-event and in-scene rows apart), each method's p50 over its p50 at the smallest
size, and how often brute_force fell back to the full ranking. Prints and saves results.json
and results.md.

    .venv/bin/python benchmarks/served_retrieval.py                  # 1e4, 1e5, 1e6 items
    .venv/bin/python benchmarks/served_retrieval.py --sizes 10000 --requests 50
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from typing import Dict, List, Optional, Sequence

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import dspnet_tf  # noqa: F401,E402  (Keras 2 before TensorFlow)
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from dspnet_tf import DSPnet, DSPnetConfig  # noqa: E402
from dspnet_tf.export import (RAW_FEATURE_SPEC, ServingModule, VocabularyPreprocess,  # noqa: E402
                              make_history_example)
from dspnet_tf.retrieval import FactorizedTopK  # noqa: E402
from serving_topk import sample  # noqa: E402  (the clustered item distribution)

K = 10
SCENES = ("feed", "search", "live", "favorites", "cart")
HISTORY = 20
METHODS = ("exact", "brute_force", "scann")


def build_model(num_items: int, dim: int, seed: int):
    """An untrained DSPnet with clustered item vectors and distinct per-scene head parts."""
    item_tokens = ["", "<oov>"] + [f"i{i}" for i in range(num_items)]
    scene_tokens = ["", "<oov>"] + list(SCENES)
    config = DSPnetConfig(item_vocab_size=len(item_tokens), scene_vocab_size=len(scene_tokens),
                          item_dim=dim, repeat_pointer=True, seed=seed, dropout=0.0)
    tf.keras.utils.set_random_seed(seed)
    model = DSPnet(config)
    model({"item_ids": tf.zeros([1, config.max_len], tf.int64),
           "scene_ids": tf.zeros([1, config.max_len], tf.int64)})
    table = model.item_encoder.embeddings
    vectors = np.zeros(table.shape, np.float32)
    vectors[:len(item_tokens)] = sample(len(item_tokens), dim, seed)
    table.assign(vectors)
    rng = np.random.default_rng(seed)
    head = model.item_head
    head.scene_kernel.assign(rng.normal(size=head.scene_kernel.shape, scale=0.5))
    head.scene_bias.assign(rng.normal(size=head.scene_bias.shape, scale=0.5))
    return model, item_tokens, scene_tokens


def requests(num_items: int, count: int, seed: int) -> List[bytes]:
    """Serialized batch-1 requests: 20 random events; every other one names a target scene."""
    rng = np.random.default_rng(seed)
    out = []
    for index in range(count):
        items = [f"i{int(i)}" for i in rng.integers(0, num_items, HISTORY)]
        items[-3:] = items[:3]  # a few returns, for the pointer
        scenes = [str(s) for s in rng.choice(SCENES, HISTORY)]
        target = str(rng.choice(SCENES)) if index % 2 else None
        out.append(make_history_example(items, scenes, target))
    return out


def make_module(model, item_tokens, scene_tokens, method: str, leaves_to_search: int = 0):
    options = {"num_leaves_to_search": leaves_to_search} if leaves_to_search else None
    module = ServingModule(model, VocabularyPreprocess(item_tokens, scene_tokens,
                                                       model.dspnet_config.max_len),
                           item_tokens, scene_tokens, top_k=K, retrieval=method,
                           retrieval_options=options if method == "scann" else None)
    function = module.serve_examples.get_concrete_function()
    return module, function


def answer_ids(function, examples: Sequence[bytes]) -> np.ndarray:
    return np.concatenate([function(examples=tf.constant([e]))["item_ids"].numpy()
                           for e in examples])


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / truth.shape[1] for f, t in zip(found, truth)]))


def run_size(n: int, args) -> Dict:
    print(f"[{n:,} items] building the model", flush=True)
    model, item_tokens, scene_tokens = build_model(n, args.dim, args.seed)
    timed = requests(n, args.requests, args.seed + 1)
    calibration = requests(n, args.calibration_requests, args.seed + 2)
    functions, built = {}, {}
    _, functions["exact"] = make_module(model, item_tokens, scene_tokens, "exact")
    exact_calibration = answer_ids(functions["exact"], calibration)
    started = time.time()
    brute_module, functions["brute_force"] = make_module(model, item_tokens, scene_tokens,
                                                         "brute_force")
    built["brute_force"] = time.time() - started
    settings = None
    # From few leaves up (doubling), so the setting kept is the cheapest that reaches the target.
    leaves = max(4, int(round(np.sqrt(n))) // 100)
    while True:
        started = time.time()
        scann_module, candidate = make_module(model, item_tokens, scene_tokens, "scann", leaves)
        built["scann"] = time.time() - started
        settings = dict(scann_module.retrieval.scann_settings)
        reached = recall(answer_ids(candidate, calibration), exact_calibration)
        print(f"  scann {settings}: calibration recall@10 {reached:.4f} "
              f"(built in {built['scann']:.1f} s)", flush=True)
        functions["scann"] = candidate
        if (reached >= args.target_recall
                or settings["num_leaves_to_search"] >= settings["num_leaves"]):
            break
        leaves = min(settings["num_leaves"], 2 * settings["num_leaves_to_search"])
    settings["calibration_recall_at_10"] = reached

    for function in functions.values():  # warm-up
        for example in timed[:args.warmup]:
            function(examples=tf.constant([example]))
    latencies: Dict[str, List[float]] = {m: [] for m in METHODS}
    answers: Dict[str, List[np.ndarray]] = {m: [] for m in METHODS}
    for index, example in enumerate(timed):
        order = METHODS[index % 3:] + METHODS[:index % 3]
        batch = tf.constant([example])
        for method in order:
            started = time.perf_counter()
            out = functions[method](examples=batch)
            ids = out["item_ids"].numpy()
            latencies[method].append(time.perf_counter() - started)
            answers[method].append(ids)
    exact_ids = np.concatenate(answers["exact"])
    in_scene = np.arange(len(timed)) % 2 == 1
    # How often brute_force needed the full ranking: the same check, run on its own.
    inputs = brute_module.model_inputs(tf.io.parse_example(tf.constant(timed), RAW_FEATURE_SPEC))
    index: FactorizedTopK = brute_module.retrieval
    _, _, certain = index(model.answer_components(inputs), model.answers_are_log_probs)
    rows = []
    for method in METHODS:
        ms = np.asarray(latencies[method]) * 1e3
        found = np.concatenate(answers[method])
        rows.append({
            "items": n, "method": method,
            "p50_ms": round(float(np.percentile(ms, 50)), 3),
            "p99_ms": round(float(np.percentile(ms, 99)), 3),
            "recall_at_10": round(recall(found, exact_ids), 4),
            "recall_at_10_next_event": round(recall(found[~in_scene], exact_ids[~in_scene]), 4),
            "recall_at_10_in_scene": round(recall(found[in_scene], exact_ids[in_scene]), 4),
            "build_s": round(built.get(method, 0.0), 2),
        })
    return {"items": n, "rows": rows, "scann": settings,
            "brute_force_full_ranking_share": round(float(1 - certain.numpy().mean()), 4)}


def markdown(report: Dict) -> str:
    env = report["environment"]
    lines = [
        "# Served top K by catalog size: full-catalog scores vs TFRS BruteForce vs ScaNN",
        "",
        f"`ServingModule.serve_examples` in process, batch 1, K={K}, item_dim {report['dim']}, "
        f"5 scenes, repeat pointer on, {report['requests']} timed requests (20 events, half "
        f"with a target scene) per method and size, methods in turn. TensorFlow "
        f"{env['tensorflow']}, {env['cpus']} CPUs, load average {env['loadavg_start']} at "
        f"start, {env['loadavg_end']} at end.",
        "",
        "| items | method | p50 ms | p99 ms | recall@10 | next event | in-scene | "
        "p50 / p50 at the smallest size | build s |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    first = {row["method"]: row["p50_ms"] for row in report["sizes"][0]["rows"]}
    for size in report["sizes"]:
        for row in size["rows"]:
            lines.append(
                f"| {row['items']:,} | {row['method']} | {row['p50_ms']:.2f} | "
                f"{row['p99_ms']:.2f} | {row['recall_at_10']:.4f} | "
                f"{row['recall_at_10_next_event']:.4f} | {row['recall_at_10_in_scene']:.4f} | "
                f"{row['p50_ms'] / first[row['method']]:.2f} | {row['build_s']:.1f} |")
    lines += ["", "ScaNN settings (calibrated on separate requests) and BruteForce's fallbacks:",
              "", "| items | num_leaves | num_leaves_to_search | num_reordering_candidates | "
              "calibration recall@10 | brute_force rows needing the full ranking |",
              "|---:|---:|---:|---:|---:|---:|"]
    for size in report["sizes"]:
        s = size["scann"]
        lines.append(f"| {size['items']:,} | {s['num_leaves']} | {s['num_leaves_to_search']} | "
                     f"{s['num_reordering_candidates']} | {s['calibration_recall_at_10']:.4f} | "
                     f"{size['brute_force_full_ranking_share']:.2%} |")
    lines += ["", "Recall@10 is of the served item ids against the exact export's. BruteForce's "
              "answers equal exact ones by construction (tests/unit/test_retrieval.py); where "
              "its candidates cannot settle a next-event row it answers with the full ranking."]
    return "\n".join(lines) + "\n"


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    parser.add_argument("--sizes", default="10000,100000,1000000",
                        help="comma-separated catalog sizes (default: %(default)s)")
    parser.add_argument("--dim", type=int, default=64, help="item_dim (default: 64)")
    parser.add_argument("--requests", type=int, default=200,
                        help="timed requests per size and method (default: 200)")
    parser.add_argument("--calibration-requests", type=int, default=100,
                        help="separate requests for ScaNN's calibration (default: 100)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed calls per method")
    parser.add_argument("--target-recall", type=float, default=0.99,
                        help="ScaNN calibration target, recall@10 (default: 0.99)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="benchmarks/results/served_retrieval",
                        help="folder for results.json and results.md (default: %(default)s)")
    args = parser.parse_args(argv)
    sizes = sorted(int(s) for s in args.sizes.split(",") if s.strip())
    if not sizes or sizes[0] <= K + 50:
        parser.error("--sizes must be catalogs larger than K + max_len")
    environment = {"python": platform.python_version(), "tensorflow": tf.__version__,
                   "cpus": os.cpu_count(), "loadavg_start": [round(x, 2) for x in os.getloadavg()]}
    started = time.time()
    results = [run_size(n, args) for n in sizes]
    environment["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    report = {"environment": environment, "dim": args.dim, "requests": args.requests,
              "k": K, "sizes": results, "seconds": round(time.time() - started, 1)}
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "results.json"), "w") as handle:
        json.dump(report, handle, indent=2)
    text = markdown(report)
    with open(os.path.join(args.out, "results.md"), "w") as handle:
        handle.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
