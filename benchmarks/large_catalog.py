"""Large catalogs: quality of the item losses at 1e5 items, and memory and step time up to 1e6.

`--quality DATA` (a scene world with a large catalog, e.g. `dspnet generate scene-world --items
100000 --users 40000`) trains DSPnet once per item loss with the quality benchmark's own runner
(same split, epochs, patience, seed): the default ("auto", which resolves to the sampled
softmax there), sampled BCE with K=1 and K=100 negatives, and the full softmax. It reports
test NDCG@10 in both tasks and seconds per epoch, and the default's ratios to the others.

Without `--quality` it measures peak memory and step time of training steps at 1e4, 1e5 and
1e6 items.

Training uses the default item loss ("auto": the sampled softmax at these sizes, with the repeat
pointer), so a step scores each position against its true next item and the batch's shared
sampled items: nothing of size batch x catalog is ever built, and memory grows with the
embedding table (and Adam's two moments of it), not with batch x catalog. Each catalog
size runs in a fresh process so its peak resident memory (`ru_maxrss`) is its own. Prints and
saves JSON and Markdown.

It measures two optimizers: `dspnet_tf.optimizers.LazyAdam` (updates only the embedding rows a
batch touched; the one to use for large catalogs) and Keras's Adam (decays both moment tables in
full every step, so its step time grows with the catalog).

    .venv/bin/python benchmarks/large_catalog.py --out benchmarks/results/large_catalog
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from typing import Any, Dict, List


def child(items: int, batch: int, max_len: int, steps: int, optimizer: str) -> Dict[str, float]:
    """One catalog size: time `steps` training steps after warm-up; report peak RSS."""
    import dspnet_tf  # noqa: F401  (Keras 2 before TensorFlow)  pylint: disable=import-outside-toplevel
    import numpy as np  # pylint: disable=import-outside-toplevel
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    from dspnet_tf import DSPnet, DSPnetConfig  # pylint: disable=import-outside-toplevel
    from dspnet_tf.optimizers import LazyAdam  # pylint: disable=import-outside-toplevel
    from dspnet_tf.training import EpochTimer  # pylint: disable=import-outside-toplevel

    config = DSPnetConfig(item_vocab_size=items + 2, scene_vocab_size=8, max_len=max_len)
    rng = np.random.default_rng(0)
    # Zipf-like item ids: most events on popular items, a long tail over the whole catalog.
    ranks = np.minimum(rng.zipf(1.2, size=(batch * (steps + 2), max_len)), items) + 1
    data = tf.data.Dataset.from_tensor_slices({
        "item_ids": ranks.astype(np.int32),
        "scene_ids": rng.integers(2, 8, size=ranks.shape).astype(np.int32),
    }).batch(batch, drop_remainder=True).cache()
    tf.keras.utils.set_random_seed(0)
    model = DSPnet(config)
    model.compile(optimizer=LazyAdam(1e-3) if optimizer == "lazy_adam"
                  else tf.keras.optimizers.Adam(1e-3))
    model.fit(data.take(2), epochs=1, verbose=0)
    timer = EpochTimer()  # the epoch's steps, not fit's input-pipeline shutdown after them
    model.fit(data.skip(2), epochs=1, verbose=0, callbacks=[timer])
    seconds = timer.seconds[-1] / steps
    table = int(np.prod(model.item_encoder.embeddings.shape))
    return {"items": items, "optimizer": optimizer, "item_loss": model.dspnet_config.item_loss,
            "seconds_per_step": seconds,
            "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20,
            "embedding_table_gib": table * 4 / 2 ** 30,
            "batch_x_catalog_logits_gib": batch * max_len * (items + 2) * 4 / 2 ** 30}


# The losses compared at a large catalog: name -> (results folder, DSPnetConfig overrides).
QUALITY_LOSSES = {
    "auto (default)": ("auto", {}),
    "sampled_bce K=1": ("sampled_bce_k1", {"item_loss": "sampled_bce", "num_negatives": 1}),
    "sampled_bce K=100": ("sampled_bce_k100", {"item_loss": "sampled_bce", "num_negatives": 100}),
    "softmax (full)": ("softmax", {"item_loss": "softmax"}),
}


def quality(data: str, out: str, epochs: int, max_users: int, seed: int,
            losses: List[str]) -> Dict[str, Any]:
    """Trains DSPnet once per item loss on `data`; returns and writes the comparison."""
    import dspnet_tf  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
    from dspnet_tf.evaluation.quality_benchmark import (  # pylint: disable=import-outside-toplevel
        run_quality_benchmark,
    )

    rows = []
    for name in losses:
        slug, overrides = QUALITY_LOSSES[name]
        folder = os.path.join(out, "quality", slug)
        started = time.perf_counter()
        result = run_quality_benchmark(
            data, folder, models=["dspnet"], seeds=[seed], epochs=epochs, patience=epochs,
            overrides=overrides, max_users=max_users,
            progress=lambda line: print(f"  {line}", flush=True))
        timing = result["timing"]["dspnet"][0]
        row = {"loss": name, "overrides": overrides,
               "ndcg@10": result["models"]["dspnet"]["ndcg@10"]["mean"],
               "ndcg@10_in_scene": result["tasks"]["in_scene"]["models"]["dspnet"]["ndcg@10"]["mean"],
               "seconds_per_epoch": timing["seconds_per_epoch"], "best_epoch": timing["best_epoch"],
               "repeat_pointer": timing.get("repeat_pointer"),
               "run_seconds": time.perf_counter() - started, "results": folder}
        rows.append(row)
        print(f"{name}: NDCG@10 {row['ndcg@10']:.4f} next event, {row['ndcg@10_in_scene']:.4f} "
              f"in-scene; {row['seconds_per_epoch']:.1f} s/epoch", flush=True)
    default = next((r for r in rows if r["loss"] == "auto (default)"), None)
    if default is not None:
        for row in rows:
            row["default_vs_this"] = default["ndcg@10_in_scene"] / row["ndcg@10_in_scene"]
    report = {"data": data, "epochs": epochs, "max_users": max_users, "seed": seed,
              "items_in_vocabulary": _vocabulary_items(rows), "rows": rows}
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "quality.json"), "w", encoding="utf-8") as handle:
        json.dump(report, handle, indent=2)
    write_quality_md(report, out)
    return report


def _vocabulary_items(rows: List[Dict[str, Any]]) -> int:
    """Real items in the split's vocabulary (the items the users met), from the first run."""
    with open(os.path.join(rows[0]["results"], "results.json"), encoding="utf-8") as handle:
        return int(json.load(handle)["split"]["items"])


def write_quality_md(report: Dict[str, Any], out: str) -> None:
    """quality.md from quality.json's report (`--render-quality` redraws it)."""
    lines = ["# Large catalog: item losses", "",
             f"DSPnet on `{report['data']}` (first {report['max_users']:,} users, who met "
             f"{report['items_in_vocabulary']:,} distinct items: the catalog the models rank), "
             f"{report['epochs']} epochs each (best validation epoch kept), seed "
             f"{report['seed']}, test NDCG@10 with full ranking. \"auto\" resolves to the sampled "
             "softmax there (1,024 shared negatives, logQ-corrected).", "",
             "| item loss | NDCG@10 next event | NDCG@10 in-scene | default / this (in-scene) | "
             "s/epoch | repeat pointer |", "|---|---|---|---|---|---|"]
    for row in report["rows"]:
        lines.append(f"| {row['loss']} | {row['ndcg@10']:.4f} | {row['ndcg@10_in_scene']:.4f} | "
                     f"{row.get('default_vs_this', float('nan')):.2f}x | "
                     f"{row['seconds_per_epoch']:.1f} | {row['repeat_pointer']} |")
    with open(os.path.join(out, "quality.md"), "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quality", metavar="DATA",
                        help="compare the item losses' quality on this scene-world folder")
    parser.add_argument("--epochs", type=int, default=5,
                        help="epochs per loss with --quality (default: %(default)s)")
    parser.add_argument("--max-users", type=int, default=20000,
                        help="users of --quality's world used (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed with --quality")
    parser.add_argument("--render", action="store_true",
                        help="only redraw OUT/results.md from OUT/results.json")
    parser.add_argument("--render-quality", action="store_true",
                        help="only redraw OUT/quality.md from OUT/quality.json")
    parser.add_argument("--losses", default=",".join(QUALITY_LOSSES),
                        help="comma-separated losses of --quality (default: %(default)s)")
    parser.add_argument("--sizes", default="10000,100000,1000000",
                        help="comma-separated catalog sizes (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--max-len", type=int, default=50)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per size")
    parser.add_argument("--out", default="benchmarks/results/large_catalog")
    parser.add_argument("--optimizers", default="lazy_adam,adam",
                        help="comma-separated: lazy_adam (dspnet_tf.optimizers.LazyAdam, touched "
                             "rows only) and/or adam (Keras's, whole-table moment decay) "
                             "(default: %(default)s)")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--optimizer", default="lazy_adam", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.render_quality:
        with open(os.path.join(args.out, "quality.json"), encoding="utf-8") as handle:
            write_quality_md(json.load(handle), args.out)
        return
    if args.render:
        with open(os.path.join(args.out, "results.json"), encoding="utf-8") as handle:
            write_memory_md(json.load(handle), args.out)
        return
    if args.quality:
        quality(args.quality, args.out, args.epochs, args.max_users, args.seed,
                args.losses.split(","))
        return
    if args.child:
        print(json.dumps(child(args.child, args.batch_size, args.max_len, args.steps,
                               args.optimizer)))
        return

    rows = []
    runs = [(o, int(s)) for o in args.optimizers.split(",") for s in args.sizes.split(",")]
    for optimizer, size in runs:
        out = subprocess.run(
            [sys.executable, os.path.abspath(__file__), "--child", str(size),
             "--batch-size", str(args.batch_size), "--max-len", str(args.max_len),
             "--steps", str(args.steps), "--optimizer", optimizer],
            capture_output=True, text=True, check=False,
            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
        if out.returncode != 0:
            raise SystemExit(f"catalog {size}: child failed\n{out.stderr[-3000:]}")
        row = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(f"{optimizer:9s} {size:>9} items: {row['seconds_per_step']:.3f} s/step, peak RSS "
              f"{row['peak_rss_gib']:.2f} GiB (table {row['embedding_table_gib']:.3f} GiB; "
              f"B x L x catalog logits would be {row['batch_x_catalog_logits_gib']:.1f} GiB)",
              flush=True)
    for row in rows:
        smallest = min((r for r in rows if r["optimizer"] == row["optimizer"]),
                       key=lambda r: r["items"])
        row["step_time_vs_smallest"] = row["seconds_per_step"] / smallest["seconds_per_step"]
    report = {"settings": vars(args), "rows": rows}
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "results.json"), "w", encoding="utf-8") as handle:
        json.dump(report, handle, indent=2)
    write_memory_md(report, args.out)


def write_memory_md(report: Dict[str, Any], out: str) -> None:
    """results.md from results.json's report (`--render` redraws it)."""
    settings, rows = report["settings"], report["rows"]
    lines = ["# Large catalog", "",
             f"DSPnet, default item loss (`auto`: the full softmax while its logits fit 1 GiB, "
             f"else the sampled softmax), batch {settings['batch_size']}, length "
             f"{settings['max_len']}, d=64, {settings['steps']} timed steps per size, each size "
             "in its own process.", "",
             "| optimizer | items | item loss | s/step | vs smallest | peak RSS (GiB) | "
             "embedding table (GiB) | B x L x catalog logits (GiB) |",
             "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['optimizer']} | {row['items']:,} | {row.get('item_loss', '?')} | "
                     f"{row['seconds_per_step']:.3f} | {row['step_time_vs_smallest']:.2f}x | "
                     f"{row['peak_rss_gib']:.2f} | {row['embedding_table_gib']:.3f} | "
                     f"{row['batch_x_catalog_logits_gib']:.1f} |")
    with open(os.path.join(out, "results.md"), "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
