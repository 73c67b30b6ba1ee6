"""Training throughput: DSPnet vs SASRec sequences/s at equal length, width and batch, XLA on/off.

One run measures, side by side on the same machine and random full-length sequences:
  * sequences/s of `model.fit` steps for DSPnet (both networks and CCR; with the adversarial
    prior as `dspnet_adv`, off by default since 2026-12-01) and for
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
import math
import os
import platform
import subprocess
import sys
import time
from typing import Dict


import dspnet_tf  # noqa: F401,E402  (Keras 2 before TensorFlow)
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from dspnet_tf import DSPnet, DSPnetConfig  # noqa: E402
from dspnet_tf.training import EpochTimer  # noqa: E402


def encoder_flops(batch: int, length: int, dim: int, blocks: int, ffn_multiplier: int,
                  last_only: bool = False) -> float:
    """Forward matmul FLOPs of one Transformer encoder pass over [batch, length].

    `last_only`: the last block computes only the final position (keys and values still cover
    every position), as the CCR views are encoded.
    """
    def block(queries: int) -> float:
        tokens, query_tokens = batch * length, batch * queries
        return (2 * tokens * dim * 2 * dim                  # K, V projections
                + 2 * query_tokens * dim * dim              # Q projection
                + 2 * 2 * batch * queries * length * dim    # scores and weighted values
                + 2 * query_tokens * dim * dim              # attention output projection
                + 2 * 2 * query_tokens * dim * ffn_multiplier * dim)  # feed-forward in and out

    if last_only:
        return float((blocks - 1) * block(length) + block(1))
    return float(blocks * block(length))


def training_flops(config: DSPnetConfig, batch: int) -> float:
    """Matmul FLOPs of one training step (forward x 3 for forward + backward)."""
    # Sequences of max_len events: the model encodes the first max_len - 1 (each predicts the
    # event after it).
    c, length = config, config.max_len - 1
    # The sequences in full and, with CCR, the augmented views read at their last position:
    # two per CCR user ("augmented") or one beside the full pass's state ("anchored"), for
    # ceil(ccr_view_fraction * B) users, over the most recent ceil(ccr_view_window * max_len)
    # events.
    passes = [(batch, length, False)]
    if c.use_ccr:
        users = min(batch, max(2, math.ceil(c.ccr_view_fraction * batch)))
        views = (2 if c.ccr_views == "augmented" else 1) * users
        passes.append((views, min(length, c.ccr_view_events), True))
    forward = sum(encoder_flops(b, n, c.item_dim, c.num_blocks, c.ffn_multiplier, last)
                  for b, n, last in passes)
    positions = batch * length
    head_in = c.item_dim
    if c.use_scene_network:
        forward += sum(encoder_flops(b, n, c.scene_dim, c.num_blocks, c.ffn_multiplier, last)
                       for b, n, last in passes)
        widths = [c.item_dim + c.scene_dim] + [c.sfe_hidden] * (c.sfe_depth - 1) + [c.item_dim]
        fused = batch * length + sum(b for b, _, last in passes if last)
        forward += sum(2 * fused * a * b for a, b in zip(widths, widths[1:]))
    forward += 2 * positions * head_in * head_in  # item head projection
    candidates = c.item_vocab_size if c.item_loss == "softmax" else 1 + c.num_negatives
    forward += 2 * positions * head_in * candidates
    forward += 2 * positions * head_in * c.scene_dim + 2 * positions * c.scene_dim * c.scene_vocab_size
    if c.use_adversarial:  # discriminator on the sampled positions (generator and D steps)
        sampled = math.ceil(c.adversarial_sample_fraction * positions)
        forward += 2 * 2 * sampled * (c.item_dim * c.discriminator_hidden
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
    """Sequences/s of model.fit steps on full-length random sequences (the second epoch)."""
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
    timer = EpochTimer()
    # Epoch 1 also fills the cache; epoch 2 is timed.
    model.fit(data, epochs=2, verbose=0, callbacks=[timer])
    elapsed = timer.seconds[-1]
    return {"sequences_per_s": batch * steps / elapsed, "seconds_per_step": elapsed / steps,
            "warmup_s": warmup}


def model_configs(args: argparse.Namespace) -> Dict[str, DSPnetConfig]:
    base = DSPnetConfig(item_vocab_size=args.items + 2, scene_vocab_size=8, max_len=args.max_len,
                        item_dim=args.item_dim)
    return {"dspnet": base, "sasrec": base.as_baseline("sasrec"),
            # Where DSPnet's extra cost goes: CCR with two separately encoded augmented views
            # (CL4SRec's scheme, the method's first design), and no CCR at all.
            "dspnet_ccr_augmented": base.with_ablation("ccr_augmented"),
            "dspnet_no_ccr": base.with_ablation("no_ccr"),
            # The method's adversarial prior (off by default since 2026-12-01): what it costs.
            "dspnet_adv": base.with_ablation("adv")}


def measure_in_subprocess(args: argparse.Namespace, name: str, jit: bool) -> Dict[str, float]:
    """One measurement in a fresh process: step times of one process drift with its history
    (allocator and thread-pool state), and by up to 2x between processes on this machine, so
    each run starts clean and the report takes the median of interleaved repeats."""
    command = [sys.executable, os.path.abspath(__file__), "--single", f"{name}:{int(jit)}",
               "--batch-size", str(args.batch_size), "--max-len", str(args.max_len),
               "--item-dim", str(args.item_dim), "--items", str(args.items),
               "--steps", str(args.steps)]
    done = subprocess.run(command, capture_output=True, text=True, check=False,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    if done.returncode != 0:
        raise RuntimeError(f"measuring {name} (XLA {'on' if jit else 'off'}) failed:\n"
                           f"{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=256, help="sequences per step")
    parser.add_argument("--max-len", type=int, default=50, help="sequence length")
    parser.add_argument("--item-dim", type=int, default=64, help="item width d")
    parser.add_argument("--items", type=int, default=2000, help="catalog size")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per measurement")
    parser.add_argument("--repeats", type=int, default=3,
                        help="interleaved fresh-process measurements per setting (median kept)")
    parser.add_argument("--out", default="benchmarks/results/train_throughput",
                        help="folder for results.json and results.md")
    parser.add_argument("--single", help=argparse.SUPPRESS)  # MODEL:JIT, one measurement
    args = parser.parse_args()

    configs = model_configs(args)
    if args.single:
        name, jit = args.single.split(":")
        print(json.dumps(measure(configs[name], args.batch_size, bool(int(jit)), args.steps)))
        return
    peak = matmul_peak()
    print(f"dense matmul peak: {peak['flops_per_s'] / 1e9:.1f} GFLOP/s (n={peak['size']})",
          flush=True)
    settings = [(name, jit) for name in configs for jit in (False, True)
                if not (name.startswith("dspnet_") and jit)]
    samples: Dict[str, list] = {f"{n} xla={'on' if j else 'off'}": [] for n, j in settings}
    for repeat in range(args.repeats):
        for name, jit in settings:
            key = f"{name} xla={'on' if jit else 'off'}"
            samples[key].append(measure_in_subprocess(args, name, jit))
            print(f"[{repeat + 1}/{args.repeats}] {key:22s} "
                  f"{samples[key][-1]['sequences_per_s']:8.1f} seq/s", flush=True)
    rows = {}
    for key, runs in samples.items():
        name = key.split(" ")[0]
        seconds = float(np.median([r["seconds_per_step"] for r in runs]))
        flops = training_flops(configs[name], args.batch_size)
        rows[key] = {"sequences_per_s": args.batch_size / seconds, "seconds_per_step": seconds,
                     "seconds_per_step_runs": [r["seconds_per_step"] for r in runs],
                     "flops_per_step": flops, "achieved_flops_per_s": flops / seconds,
                     "fraction_of_peak": flops / seconds / peak["flops_per_s"]}
        print(f"{key:22s} median {rows[key]['sequences_per_s']:8.1f} seq/s  "
              f"{rows[key]['achieved_flops_per_s'] / 1e9:6.2f} GFLOP/s "
              f"({100 * rows[key]['fraction_of_peak']:.1f}% of peak)", flush=True)

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
        "faster_xla_setting": {name: best(name).split("=")[1] for name in ("dspnet", "sasrec")},
        "dspnet_over_sasrec_best": ratio, "dspnet_over_sasrec_same_xla": same_xla,
    }
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "results.json"), "w", encoding="utf-8") as handle:
        json.dump(report, handle, indent=2)
    lines = ["# Training throughput", "",
             f"Batch {args.batch_size}, length {args.max_len}, d={args.item_dim}, "
             f"{args.items} items; median of {args.repeats} interleaved fresh-process runs of "
             f"{args.steps} timed steps; {os.cpu_count()} CPUs. Dense matmul "
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
