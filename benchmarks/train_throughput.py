"""Training throughput: DSPnet vs SASRec sequences/s at equal length, width and batch, XLA on/off,
float32 and mixed bfloat16.

One run measures, side by side on the same machine and random full-length sequences:
  * sequences/s of `model.fit` steps for DSPnet (both networks and CCR; with the adversarial
    prior as `dspnet_adv`, off by default since 2026-12-01) and for
    SASRec (the item-only baseline built from the same layers), each with `jit_compile` off and
    on, in float32;
  * the same for DSPnet and SASRec under the "mixed_bfloat16" policy (`DSPnetConfig.precision`:
    bfloat16 compute, float32 variables, losses and softmaxes), XLA off only: TensorFlow
    2.16's XLA CPU backend has no bfloat16 dot ("unsupported operand type BF16 in op dot");
  * dense float32 and bfloat16 matmul peaks (the best of a few square sizes each), and each
    model's achieved FLOP/s as a fraction of the peak of its compute dtype.

FLOPs are counted analytically from the matmuls of the architecture (QKV, attention, output and
feed-forward projections, SFE, heads), x3 for forward + backward: TensorFlow's graph profiler has
no FLOP statistics for `Einsum`, which Keras's MultiHeadAttention uses, so it would undercount.
Prints and saves JSON and Markdown. `runs` keys: "MODEL xla=on|off" for float32 (the keys
`make_docs.py` reads), "MODEL xla=off precision=mixed_bfloat16" for bfloat16; every row also
names its model, XLA setting and precision. Where the time of a step goes:
`profile_train_step.py`.

    .venv/bin/python benchmarks/train_throughput.py --out benchmarks/results/train_throughput
    .venv/bin/python benchmarks/train_throughput.py --precisions float32   # the float32 rows only
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
from dspnet_tf.config import BFLOAT16_CPU_FLAGS, _read_cpu_flags  # noqa: E402
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


PRECISIONS = ("float32", "mixed_bfloat16")
# The compute dtype of each policy: its rows are compared with that dtype's matmul peak.
COMPUTE_DTYPES = {"float32": "float32", "mixed_bfloat16": "bfloat16"}


def matmul_peak(seconds: float = 3.0, dtype: str = "float32") -> Dict[str, float]:
    """Best dense-matmul FLOP/s in `dtype` over a few square sizes (a tf.function, no XLA)."""
    best = {"flops_per_s": 0.0, "size": 0}
    for size in (512, 1024, 2048):
        a = tf.cast(tf.random.normal([size, size]), dtype)
        b = tf.cast(tf.random.normal([size, size]), dtype)
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


def random_sequences(config: DSPnetConfig, batch: int, steps: int) -> tf.data.Dataset:
    """`steps` cached batches of full-length random item / scene sequences (seed 0)."""
    rng = np.random.default_rng(0)
    items = rng.integers(2, config.item_vocab_size, size=(batch * steps, config.max_len))
    scenes = rng.integers(2, config.scene_vocab_size, size=(batch * steps, config.max_len))
    data = tf.data.Dataset.from_tensor_slices({"item_ids": items, "scene_ids": scenes})
    return data.batch(batch, drop_remainder=True).cache()


def measure(config: DSPnetConfig, batch: int, jit: bool, steps: int) -> Dict[str, float]:
    """Sequences/s of model.fit steps on full-length random sequences (the second epoch)."""
    data = random_sequences(config, batch, steps)
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


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo ("unknown" without one)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return "unknown"


def bfloat16_flags() -> list:
    """The CPU's bfloat16 matrix-product flags (those `precision="auto"` looks for)."""
    return sorted(set(BFLOAT16_CPU_FLAGS) & _read_cpu_flags())


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


def run_key(name: str, jit: bool, precision: str = "float32") -> str:
    """The `runs` key of a setting: "dspnet xla=off", "dspnet xla=off precision=mixed_bfloat16"."""
    key = f"{name} xla={'on' if jit else 'off'}"
    return key if precision == "float32" else f"{key} precision={precision}"


def measure_in_subprocess(args: argparse.Namespace, name: str, jit: bool,
                          precision: str = "float32") -> Dict[str, float]:
    """One measurement in a fresh process: step times of one process drift with its history
    (allocator and thread-pool state), and by up to 2x between processes on this machine, so
    each run starts clean and the report takes the median of interleaved repeats."""
    command = [sys.executable, os.path.abspath(__file__), "--single",
               f"{name}:{int(jit)}:{precision}",
               "--batch-size", str(args.batch_size), "--max-len", str(args.max_len),
               "--item-dim", str(args.item_dim), "--items", str(args.items),
               "--steps", str(args.steps)]
    done = subprocess.run(command, capture_output=True, text=True, check=False,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    if done.returncode != 0:
        raise RuntimeError(f"measuring {run_key(name, jit, precision)} failed:\n"
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
    parser.add_argument("--precisions", default=",".join(PRECISIONS),
                        help="comma-separated policies to measure DSPnet and SASRec under "
                             f"(of {', '.join(PRECISIONS)}); the ablation rows are float32")
    parser.add_argument("--single", help=argparse.SUPPRESS)  # MODEL:JIT[:PRECISION]
    args = parser.parse_args()

    configs = model_configs(args)
    if args.single:
        name, jit, *precision = args.single.split(":")
        config = configs[name].replace(precision=precision[0] if precision else "float32")
        print(json.dumps(measure(config, args.batch_size, bool(int(jit)), args.steps)))
        return
    precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    unknown = sorted(set(precisions) - set(PRECISIONS))
    if unknown or not precisions:
        parser.error(f"--precisions={args.precisions!r}: each one of {', '.join(PRECISIONS)}")
    # Both peaks first, in the same minute, before any model runs.
    peaks = {COMPUTE_DTYPES[p]: matmul_peak(dtype=COMPUTE_DTYPES[p]) for p in PRECISIONS}
    for dtype, peak in peaks.items():
        print(f"dense {dtype} matmul peak: {peak['flops_per_s'] / 1e9:.1f} GFLOP/s "
              f"(n={peak['size']})", flush=True)
    settings = []
    if "float32" in precisions:
        settings += [(name, jit, "float32") for name in configs for jit in (False, True)
                     if not (name.startswith("dspnet_") and jit)]
    settings += [(name, False, p) for p in precisions if p != "float32"
                 for name in ("dspnet", "sasrec")]
    samples: Dict[str, list] = {run_key(*s): [] for s in settings}
    for repeat in range(args.repeats):
        for name, jit, precision in settings:
            key = run_key(name, jit, precision)
            samples[key].append(measure_in_subprocess(args, name, jit, precision))
            print(f"[{repeat + 1}/{args.repeats}] {key:45s} "
                  f"{samples[key][-1]['sequences_per_s']:8.1f} seq/s", flush=True)
    rows = {}
    for name, jit, precision in settings:
        key = run_key(name, jit, precision)
        runs = samples[key]
        peak = peaks[COMPUTE_DTYPES[precision]]
        seconds = float(np.median([r["seconds_per_step"] for r in runs]))
        flops = training_flops(configs[name], args.batch_size)
        rows[key] = {"model": name, "xla": "on" if jit else "off", "precision": precision,
                     "sequences_per_s": args.batch_size / seconds, "seconds_per_step": seconds,
                     "seconds_per_step_runs": [r["seconds_per_step"] for r in runs],
                     "flops_per_step": flops, "achieved_flops_per_s": flops / seconds,
                     "peak_dtype": COMPUTE_DTYPES[precision],
                     "fraction_of_peak": flops / seconds / peak["flops_per_s"]}
        print(f"{key:45s} median {rows[key]['sequences_per_s']:8.1f} seq/s  "
              f"{rows[key]['achieved_flops_per_s'] / 1e9:6.2f} GFLOP/s "
              f"({100 * rows[key]['fraction_of_peak']:.1f}% of the "
              f"{COMPUTE_DTYPES[precision]} peak)", flush=True)

    def best(name: str, precision: str = "float32") -> str:
        return max((k for k, r in rows.items()
                    if r["model"] == name and r["precision"] == precision),
                   key=lambda k: rows[k]["sequences_per_s"])

    def rate(name: str, precision: str) -> float:
        return rows[run_key(name, False, precision)]["sequences_per_s"]

    # Issue 38's targets, XLA off on both sides (the only setting bfloat16 has here).
    mixed = [p for p in precisions if p != "float32"]
    by_precision = {p: rate("dspnet", p) / rate("sasrec", p) for p in precisions}
    over_float32 = ({p: {m: rate(m, p) / rate(m, "float32") for m in ("dspnet", "sasrec")}
                     for p in mixed} if "float32" in precisions else {})
    targets = {}
    for p in mixed:
        if "float32" in precisions:
            targets[f"dspnet {p} / float32 >= 1.5"] = {
                "value": over_float32[p]["dspnet"], "met": over_float32[p]["dspnet"] >= 1.5}
        targets[f"dspnet / sasrec under {p} >= 0.6"] = {
            "value": by_precision[p], "met": by_precision[p] >= 0.6}

    report = {
        "settings": vars(args), "machine": {"cpus": os.cpu_count(),
                                            "cpu": cpu_model(),
                                            "bfloat16_cpu_flags": bfloat16_flags(),
                                            "platform": platform.platform(),
                                            "tensorflow": tf.__version__},
        # "matmul_peak" is the float32 one (the key earlier results and readers use).
        "matmul_peak": peaks["float32"], "matmul_peaks": peaks,
        "bfloat16_over_float32_matmul_peak": (peaks["bfloat16"]["flops_per_s"]
                                              / peaks["float32"]["flops_per_s"]),
        "runs": rows,
        "dspnet_over_sasrec_same_precision": by_precision,
        "mixed_over_float32_sequences_per_s": over_float32,
        "targets": targets,
    }
    if "float32" in precisions:
        ratio = rows[best("dspnet")]["sequences_per_s"] / rows[best("sasrec")]["sequences_per_s"]
        same_xla = {x: rows[f"dspnet xla={x}"]["sequences_per_s"]
                    / rows[f"sasrec xla={x}"]["sequences_per_s"] for x in ("off", "on")}
        report.update({
            "faster_xla_setting": {name: rows[best(name)]["xla"] for name in ("dspnet", "sasrec")},
            "dspnet_over_sasrec_best": ratio, "dspnet_over_sasrec_same_xla": same_xla})
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "results.json"), "w", encoding="utf-8") as handle:
        json.dump(report, handle, indent=2)
    lines = ["# Training throughput", "",
             f"Batch {args.batch_size}, length {args.max_len}, d={args.item_dim}, "
             f"{args.items} items; median of {args.repeats} interleaved fresh-process runs of "
             f"{args.steps} timed steps; {os.cpu_count()} CPUs ({cpu_model()}; bfloat16 flags: "
             f"{', '.join(bfloat16_flags()) or 'none'}). Dense matmul peaks measured in the "
             f"same run: float32 {peaks['float32']['flops_per_s'] / 1e9:.1f} GFLOP/s, bfloat16 "
             f"{peaks['bfloat16']['flops_per_s'] / 1e9:.1f} GFLOP/s "
             f"({report['bfloat16_over_float32_matmul_peak']:.2f} x). 'of peak' compares each "
             "row with the peak of its compute dtype.", "",
             "| model | precision | XLA | sequences/s | s/step | GFLOP/s | of peak |",
             "|---|---|---|---|---|---|---|"]
    for r in rows.values():
        lines.append(f"| {r['model']} | {r['precision']} | {r['xla']} | "
                     f"{r['sequences_per_s']:.1f} | {r['seconds_per_step']:.3f} "
                     f"| {r['achieved_flops_per_s'] / 1e9:.2f} | {100 * r['fraction_of_peak']:.1f}% |")
    lines.append("")
    if "float32" in precisions:
        lines.append(f"float32: DSPnet / SASRec sequences/s, each at its faster XLA setting: "
                     f"**{ratio:.2f}** (XLA off: {same_xla['off']:.2f}, on: "
                     f"{same_xla['on']:.2f}).")
    for p in mixed:
        text = f"{p} (XLA off): DSPnet / SASRec **{by_precision[p]:.2f}**"
        if p in over_float32:
            text += (f"; {p} / float32 sequences/s: DSPnet **{over_float32[p]['dspnet']:.2f}**, "
                     f"SASRec {over_float32[p]['sasrec']:.2f}")
        lines.append(text + ".")
    if targets:
        lines += ["", "Targets (issue 38): " + "; ".join(
            f"{name}: {t['value']:.2f}, {'met' if t['met'] else 'not met'}"
            for name, t in targets.items()) + "."]
    with open(os.path.join(args.out, "results.md"), "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
