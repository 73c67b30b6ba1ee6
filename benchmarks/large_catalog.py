"""Large catalogs: peak memory and step time of DSPnet training at 1e4, 1e5 and 1e6 items.

Training uses the sampled-negative item loss, so a step scores each position against its true
next item and K sampled items: nothing of size batch x catalog is ever built, and memory grows
with the embedding table (and Adam's two moments of it), not with batch x catalog. Each catalog
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
from typing import Dict


def child(items: int, batch: int, max_len: int, steps: int, optimizer: str) -> Dict[str, float]:
    """One catalog size: time `steps` training steps after warm-up; report peak RSS."""
    import dspnet_tf  # noqa: F401  (Keras 2 before TensorFlow)  pylint: disable=import-outside-toplevel
    import numpy as np  # pylint: disable=import-outside-toplevel
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    from dspnet_tf import DSPnet, DSPnetConfig  # pylint: disable=import-outside-toplevel
    from dspnet_tf.optimizers import LazyAdam  # pylint: disable=import-outside-toplevel
    from dspnet_tf.training import EpochTimer  # pylint: disable=import-outside-toplevel

    config = DSPnetConfig(item_vocab_size=items + 2, scene_vocab_size=8, max_len=max_len,
                          item_loss="sampled_bce")
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
    return {"items": items, "optimizer": optimizer, "seconds_per_step": seconds,
            "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20,
            "embedding_table_gib": table * 4 / 2 ** 30,
            "batch_x_catalog_logits_gib": batch * max_len * (items + 2) * 4 / 2 ** 30}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
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
    lines = ["# Large catalog", "",
             f"DSPnet, sampled-negative item loss, batch {args.batch_size}, length {args.max_len}, "
             f"d=64, {args.steps} timed steps per size, each size in its own process.", "",
             "| optimizer | items | s/step | vs smallest | peak RSS (GiB) | embedding table (GiB) | "
             "B x L x catalog logits, never built (GiB) |", "|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['optimizer']} | {row['items']:,} | {row['seconds_per_step']:.3f} | "
                     f"{row['step_time_vs_smallest']:.2f}x | {row['peak_rss_gib']:.2f} | "
                     f"{row['embedding_table_gib']:.3f} | {row['batch_x_catalog_logits_gib']:.1f} |")
    with open(os.path.join(args.out, "results.md"), "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
