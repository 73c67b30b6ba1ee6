"""Where a DSPnet training step's time goes: TensorFlow profiler trace, op time by part of the model.

Trains the throughput benchmark's model (`train_throughput.py`'s configs: batch 256, length 50,
d=64, 2,000 items, random full-length sequences) for a few warm-up epochs, then traces one
epoch of `fit` with `tf.profiler.experimental` and reads the trace (the `.xplane.pb` protobuf
the profiler writes; TensorBoard's profile plugin is not needed). Every op's *self* time on the
host threads (an event's duration minus the events nested in it) is summed by the part of the
model its name scope places it in:

  * catalog softmax: the [B, L, catalog] logits product, the padding mask, the full-softmax loss
    and their gradients (DSPnet's `catalog_softmax` name scope);
  * repeat pointer; attention (matmuls apart from its softmax, masks and reshapes); dropout
    (every layer's); layer norm; feed-forward, SFE and heads (matmuls apart); the optimizer;
    the input pipeline (the `Iterator` events);
  * other small ops: everything else (the scene loss, CCR, casts, slices, AddN of gradients).

The step's wall time times the threads minus the summed op time is what the executor spends
between ops (scheduling, waiting): the overhead of many small ops. Op times add over both
threads of this 2-core machine, so a part's share is of the work, not of the wall time.

    .venv/bin/python benchmarks/profile_train_step.py --precision mixed_bfloat16 \
        --out benchmarks/results/train_throughput
"""

from __future__ import annotations

import argparse
import collections
import glob
import json
import os
import re
import sys
import tempfile
import time
from typing import Dict, Optional

import dspnet_tf  # noqa: F401  (Keras 2 before TensorFlow)
import tensorflow as tf
from tensorflow.tsl.profiler.protobuf import xplane_pb2

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import train_throughput  # noqa: E402  (a sibling script: the same models)

MATMULS = {"_MklMatMul", "_MklBatchMatMulV2", "_MklEinsum", "_MklFusedMatMul", "MatMul",
           "BatchMatMulV2", "Einsum"}
# Not ops: the function call that contains them and the executor's own events.
NOT_OPS = {"Run", "Process", "Start"}


def category(scope: str, op: str) -> Optional[str]:
    """The part of the model an op (name scope, op type) belongs to; None for non-op events."""
    if op in NOT_OPS:
        return None
    if "catalog_softmax" in scope and "repeat_pointer" not in scope:
        return "catalog softmax (logits, mask, loss)"
    if "repeat_pointer" in scope:
        return "repeat pointer"
    if "dropout" in scope:
        return "dropout (every layer)"
    if "multi_head_attention" in scope:
        return "attention: matmuls" if op in MATMULS else "attention: softmax, mask, reshapes"
    if re.search(r"layer_normalization|final_norm|/norm/", scope):
        return "layer norm"
    if re.search(r"/dense|hidden_|projection|item_head|scene_head|fusion", scope):
        return ("feed-forward, SFE, heads: matmuls" if op in MATMULS
                else "feed-forward, SFE, heads: elementwise")
    if "Adam" in scope or op in ("AssignSubVariableOp", "AssignAddVariableOp", "ReadVariableOp",
                                 "AssignVariableOp"):
        return "optimizer (Adam) and variable reads"
    return "other small ops"


def op_times(xplane_path: str) -> Dict[str, Dict[str, float]]:
    """{category: {"ps": summed self time, "ops": count}} and {op name: ps} from a trace."""
    space = xplane_pb2.XSpace()
    with open(xplane_path, "rb") as handle:
        space.ParseFromString(handle.read())
    parts: Dict[str, Dict[str, float]] = collections.defaultdict(lambda: {"ps": 0.0, "ops": 0})
    names: collections.Counter = collections.Counter()
    for plane in space.planes:
        if not plane.name.startswith("/host:CPU"):
            continue
        for line in plane.lines:
            events = sorted(line.events, key=lambda e: (e.offset_ps, -e.duration_ps))
            stack: list = []
            self_time: Dict[int, int] = {}
            for index, event in enumerate(events):  # self time: minus the nested events
                start = event.offset_ps
                while stack and stack[-1][1] <= start:
                    stack.pop()
                if stack:
                    self_time[stack[-1][0]] -= event.duration_ps
                self_time[index] = event.duration_ps
                stack.append((index, start + event.duration_ps))
            for index, event in enumerate(events):
                name = plane.event_metadata[event.metadata_id].name
                if name.startswith("Iterator"):
                    part = "input pipeline"
                elif ":" in name:
                    scope, _, op = name.rpartition(":")
                    if " " in op or "/" in op:
                        continue
                    part = category(scope, op)
                    if part is None:
                        continue
                    names[name] += self_time[index]
                else:
                    continue
                parts[part]["ps"] += self_time[index]
                parts[part]["ops"] += 1
    return {"parts": dict(parts), "names": dict(names)}


def profile(name: str, precision: str, steps: int, batch: int, warmup_epochs: int = 2) -> dict:
    """Profiles one epoch of `steps` fit steps of the benchmark model `name` under `precision`."""
    args = argparse.Namespace(items=2000, max_len=50, item_dim=64, batch_size=batch, steps=steps)
    config = train_throughput.model_configs(args)[name].replace(precision=precision)
    data = train_throughput.random_sequences(config, batch, steps)
    tf.keras.utils.set_random_seed(0)
    model = dspnet_tf.DSPnet(config)
    model.compile(optimizer=tf.keras.optimizers.Adam(1e-3))
    model.fit(data, epochs=warmup_epochs, verbose=0)
    started = time.perf_counter()
    model.fit(data, epochs=1, verbose=0)
    unprofiled = (time.perf_counter() - started) / steps
    logdir = tempfile.mkdtemp(prefix="dspnet_profile_")
    tf.profiler.experimental.start(logdir)
    started = time.perf_counter()
    model.fit(data, epochs=1, verbose=0)
    wall = (time.perf_counter() - started) / steps
    tf.profiler.experimental.stop()
    path = sorted(glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True))[-1]
    times = op_times(path)
    threads = os.cpu_count() or 1
    total_ms = sum(p["ps"] for p in times["parts"].values()) / 1e9 / steps
    parts = {k: {"ms_per_step": v["ps"] / 1e9 / steps, "ops_per_step": v["ops"] / steps,
                 "share_of_op_time": v["ps"] / 1e9 / steps / total_ms}
             for k, v in sorted(times["parts"].items(), key=lambda kv: -kv[1]["ps"])}
    top = sorted(times["names"].items(), key=lambda kv: -kv[1])[:15]
    return {"model": name, "precision": precision, "steps": steps, "batch": batch,
            "seconds_per_step_unprofiled": unprofiled, "seconds_per_step_profiled": wall,
            "op_ms_per_step": total_ms, "threads": threads,
            "between_ops_ms_per_step": max(0.0, wall * 1000 * threads - total_ms),
            "ops_per_step": sum(p["ops_per_step"] for p in parts.values()),
            "parts": parts,
            "top_ops": [{"op": n, "ms_per_step": ps / 1e9 / steps} for n, ps in top],
            "trace": logdir}


def markdown(results: list) -> str:
    """One table of parts per profiled run, and each run's largest single ops."""
    lines = ["# Where a training step's time goes", "",
             "Op self time on the host threads, summed over both cores, one profiled epoch "
             "(`benchmarks/profile_train_step.py`; batch 256, length 50, d=64, 2,000 items). "
             "'between ops' = wall time x threads - op time: the executor's scheduling and "
             "waiting.", ""]
    for r in results:
        lines += [f"## {r['model']}, {r['precision']}", "",
                  f"{r['seconds_per_step_profiled']:.3f} s/step traced "
                  f"({r['seconds_per_step_unprofiled']:.3f} untraced), {r['ops_per_step']:.0f} "
                  f"ops/step, op time {r['op_ms_per_step']:.0f} ms/step, between ops "
                  f"{r['between_ops_ms_per_step']:.0f} ms/step.", "",
                  "| part | ms/step | share of op time | ops/step |", "|---|---|---|---|"]
        for part, v in r["parts"].items():
            lines.append(f"| {part} | {v['ms_per_step']:.1f} | {100 * v['share_of_op_time']:.1f}% "
                         f"| {v['ops_per_step']:.0f} |")
        lines += ["", "Largest single ops: " + "; ".join(
            f"`{o['op'][:70]}` {o['ms_per_step']:.1f} ms" for o in r["top_ops"][:6]) + ".", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="dspnet", help="a train_throughput.py model name")
    parser.add_argument("--precision", default="mixed_bfloat16,float32",
                        help="comma-separated policies, each profiled in turn")
    parser.add_argument("--steps", type=int, default=10, help="steps in the profiled epoch")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--out", default="benchmarks/results/train_throughput",
                        help="folder for profile.json and profile.md")
    args = parser.parse_args()
    results = [profile(args.model, p, args.steps, args.batch_size)
               for p in args.precision.split(",")]
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "profile.json"), "w", encoding="utf-8") as handle:
        json.dump(results, handle, indent=2)
    text = markdown(results)
    with open(os.path.join(args.out, "profile.md"), "w", encoding="utf-8") as handle:
        handle.write(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
