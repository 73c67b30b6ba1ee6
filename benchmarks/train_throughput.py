"""Training throughput: DSPnet vs SASRec sequences/s at equal length, width and batch, XLA on/off.

One run measures, side by side on the same machine and random full-length sequences:
  * sequences/s of `model.fit` steps for DSPnet (both networks, CCR, adversarial prior) and for
    SASRec (the item-only baseline built from the same layers), each with `jit_compile` off and
    on;
  * a dense float32 matmul peak (the best of a few square sizes), and each model's achieved
    FLOP/s as a fraction of it.

FLOPs are counted analytically from the matmuls of the architecture (QKV, attention, output and
feed-forward projections, SFE, heads), x3 for forward + backward: TensorFlow's graph profiler has
no FLOP statistics for `Einsum`, which Keras's MultiHeadAttention uses, so it would undercount.
Prints and saves JSON and Markdown.

    .venv/bin/python benchmarks/train_throughput.py --out benchmarks/results/train_throughput
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from typing import Dict

sys.path[:] = [p for p in sys.path
               if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]

import dspnet_tf  # noqa: F401,E402  (Keras 2 before TensorFlow)
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from dspnet_tf import DSPnet, DSPnetConfig  # noqa: E402


def encoder_flops(batch: int, length: int, dim: int, blocks: int, ffn_multiplier: int) -> float:
    """Forward matmul FLOPs of one Transformer encoder pass over [batch, length]."""
    tokens = batch * length
    per_block = (2 * tokens * dim * 3 * dim            # Q, K, V projections
                 + 2 * 2 * batch * length * length * dim  # scores and weighted values
                 + 2 * tokens * dim * dim             # attention output projection
                 + 2 * 2 * tokens * dim * ffn_multiplier * dim)  # feed-forward in and out
    return float(blocks * per_block)


def training_flops(config: DSPnetConfig, batch: int) -> float:
    """Matmul FLOPs of one training step (forward x 3 for forward + backward)."""
    c, length = config, config.max_len
    passes = 3 if c.use_ccr else 1  # the sequences plus two augmented views
    forward = passes * encoder_flops(batch, length, c.item_dim, c.num_blocks, c.ffn_multiplier)
    positions = batch * (length - 1)
    head_in = c.item_dim
    if c.use_scene_network:
        forward += passes * encoder_flops(batch, length, c.scene_dim, c.num_blocks,
                                          c.ffn_multiplier)
        widths = [c.item_dim + c.scene_dim] + [c.sfe_hidden] * (c.sfe_depth - 1) + [c.item_dim]
        forward += passes * sum(2 * batch * length * a * b for a, b in zip(widths, widths[1:]))
    forward += 2 * positions * head_in * head_in  # item head projection
    candidates = c.item_vocab_size if c.item_loss == "softmax" else 1 + c.num_negatives
    forward += 2 * positions * head_in * candidates
    forward += 2 * positions * head_in * c.scene_dim + 2 * positions * c.scene_dim * c.scene_vocab_size
    if c.use_adversarial:  # discriminator on every position, twice (generator and D steps)
        forward += 2 * 2 * positions * (c.item_dim * c.discriminator_hidden
                                        + c.discriminator_hidden * c.discriminator_hidden
                                        + c.discriminator_hidden)
    return 3.0 * forward


def matmul_peak(seconds: float = 3.0) -> Dict[str, float]:
    """Best float32 dense-matmul FLOP/s over a few square sizes (a tf.function, no XLA)."""
    best = {"flops_per_s": 0.0, "size": 0}
    for size in (512, 1024, 2048):
        a = tf.random.normal([size, size])
        b = tf.random.normal([size, size])
        step = tf.function(lambda x, y: tf.reduce_sum(tf.linalg.matmul(x, y)))
        step(a, b).numpy()
        runs, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds / 3:
            step(a, b).numpy()
            runs += 1
        rate = 2.0 * size ** 3 * runs / (time.perf_counter() - started)
        if rate > best["flops_per_s"]:
            best = {"flops_per_s": rate, "size": size}
    return best


def measure(config: DSPnetConfig, batch: int, jit: bool, steps: int) -> Dict[str, float]:
    """Sequences/s of model.fit steps on full-length random sequences."""
    rng = np.random.default_rng(0)
    items = rng.integers(2, config.item_vocab_size, size=(batch * steps, config.max_len))
    scenes = rng.integers(2, config.scene_vocab_size, size=(batch * steps, config.max_len))
    data = tf.data.Dataset.from_tensor_slices({"item_ids": items, "scene_ids": scenes})
    data = data.batch(batch, drop_remainder=True).cache()
    tf.keras.utils.set_random_seed(0)
    model = DSPnet(config)
    model.compile(optimizer=tf.keras.optimizers.Adam(1e-3), jit_compile=jit)
    started = time.perf_counter()
    model.fit(data.take(2), epochs=1, verbose=0)  # trace / compile and warm up
    warmup = time.perf_counter() - started
    started = time.perf_counter()
    model.fit(data, epochs=1, verbose=0)
    elapsed = time.perf_counter() - started
    return {"sequences_per_s": batch * steps / elapsed, "seconds_per_step": elapsed / steps,
            "warmup_s": warmup}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=256, help="sequences per step")
    parser.add_argument("--max-len", type=int, default=50, help="sequence length")
    parser.add_argument("--item-dim", type=int, default=64, help="item width d")
    parser.add_argument("--items", type=int, default=2000, help="catalog size")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per measurement")
    parser.add_argument("--out", default="benchmarks/results/train_throughput",
                        help="folder for results.json and results.md")
    args = parser.parse_args()

    base = DSPnetConfig(item_vocab_size=args.items + 2, scene_vocab_size=8, max_len=args.max_len,
                        item_dim=args.item_dim)
    configs = {"dspnet": base, "sasrec": base.as_baseline("sasrec")}
    peak = matmul_peak()
    print(f"dense matmul peak: {peak['flops_per_s'] / 1e9:.1f} GFLOP/s (n={peak['size']})",
          flush=True)
    rows = {}
    for name, config in configs.items():
        flops = training_flops(config, args.batch_size)
        for jit in (False, True):
            result = measure(config, args.batch_size, jit, args.steps)
            result["flops_per_step"] = flops
            result["achieved_flops_per_s"] = flops / result["seconds_per_step"]
            result["fraction_of_peak"] = result["achieved_flops_per_s"] / peak["flops_per_s"]
            rows[f"{name} xla={'on' if jit else 'off'}"] = result
            print(f"{name:7s} xla {'on ' if jit else 'off'}: {result['sequences_per_s']:8.1f} seq/s"
                  f"  {result['achieved_flops_per_s'] / 1e9:6.2f} GFLOP/s"
                  f" ({100 * result['fraction_of_peak']:.1f}% of peak)", flush=True)

    def best(name: str) -> str:
        return max((k for k in rows if k.startswith(name + " ")),
                   key=lambda k: rows[k]["sequences_per_s"])

    ratio = rows[best("dspnet")]["sequences_per_s"] / rows[best("sasrec")]["sequences_per_s"]
    same_xla = {x: rows[f"dspnet xla={x}"]["sequences_per_s"]
                / rows[f"sasrec xla={x}"]["sequences_per_s"] for x in ("off", "on")}
    report = {
        "settings": vars(args), "machine": {"cpus": os.cpu_count(),
                                            "platform": platform.platform(),
                                            "tensorflow": tf.__version__},
        "matmul_peak": peak, "runs": rows,
        "faster_xla_setting": {name: best(name).split("=")[1] for name in configs},
        "dspnet_over_sasrec_best": ratio, "dspnet_over_sasrec_same_xla": same_xla,
    }
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "results.json"), "w", encoding="utf-8") as handle:
        json.dump(report, handle, indent=2)
    lines = ["# Training throughput", "",
             f"Batch {args.batch_size}, length {args.max_len}, d={args.item_dim}, "
             f"{args.items} items, {args.steps} timed steps; {os.cpu_count()} CPUs. Dense matmul "
             f"peak {peak['flops_per_s'] / 1e9:.1f} GFLOP/s.", "",
             "| model | XLA | sequences/s | s/step | GFLOP/s | of peak |", "|---|---|---|---|---|---|"]
    for key, r in rows.items():
        name, xla = key.split(" xla=")
        lines.append(f"| {name} | {xla} | {r['sequences_per_s']:.1f} | {r['seconds_per_step']:.3f} "
                     f"| {r['achieved_flops_per_s'] / 1e9:.2f} | {100 * r['fraction_of_peak']:.1f}% |")
    lines += ["", f"DSPnet / SASRec sequences/s, each at its faster XLA setting: **{ratio:.2f}** "
                  f"(XLA off: {same_xla['off']:.2f}, on: {same_xla['on']:.2f})."]
    with open(os.path.join(args.out, "results.md"), "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
