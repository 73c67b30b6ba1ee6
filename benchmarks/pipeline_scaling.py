"""Pipeline scaling: wall time and peak memory of the TFX data stages at growing event counts.

For each size it writes a synthetic event log (Zipf items over a 100,000-item catalog, six
scenes, about 20 events per user, split over several CSV files), then runs the pipeline's data
stages (SequenceExampleGen -> StatisticsGen -> SchemaGen -> ExampleValidator -> Transform) with
LocalDagRunner on Beam's multi-process DirectRunner. Each size runs in a fresh process; peak
memory is the largest resident set of that process and of any Beam worker it started. The
growth exponent is the slope of log(wall time) against log(events). Prints and saves JSON and
Markdown.

    .venv/bin/python benchmarks/pipeline_scaling.py --out benchmarks/results/pipeline_scaling
    .venv/bin/python benchmarks/pipeline_scaling.py --sizes 100000,1000000 \\
        --beam-arg=--direct_running_mode=in_memory --beam-arg=--direct_num_workers=1
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Dict, List


DEFAULT_BEAM_ARGS = ["--direct_running_mode=multi_processing", "--direct_num_workers=2"]
SCENES = ("feed", "search", "live", "favorites", "cart", "messages")


def write_event_log(folder: str, events: int, files: int = 4, seed: int = 0) -> None:
    """A synthetic standard event log of `events` rows in `files` CSV files (vectorised)."""
    import numpy as np  # pylint: disable=import-outside-toplevel
    import pandas as pd  # pylint: disable=import-outside-toplevel

    rng = np.random.default_rng(seed)
    users = max(1, events // 20)
    os.makedirs(folder, exist_ok=True)
    for part, rows in enumerate(np.array_split(np.arange(events), files)):
        n = rows.size
        frame = pd.DataFrame({
            "user_id": np.char.add("u", rng.integers(0, users, n).astype(str)),
            "item_id": np.char.add("i", np.minimum(rng.zipf(1.1, n), 100_000).astype(str)),
            "scene": np.array(SCENES)[rng.integers(0, len(SCENES), n)],
            "timestamp": 1_600_000_000 + rows,
        })
        frame.to_csv(os.path.join(folder, f"events-{part:02d}.csv"), index=False)


def child(events: int, work: str, beam_args: List[str]) -> Dict[str, float]:
    """Runs the data stages on a fresh log of `events` rows; wall time and peak memory."""
    data = os.path.join(work, "events")
    started = time.perf_counter()
    write_event_log(data, events)
    generate_s = time.perf_counter() - started

    import dspnet_tf  # noqa: F401  (Keras 2 before TensorFlow)  pylint: disable=import-outside-toplevel
    from tfx import v1 as tfx  # pylint: disable=import-outside-toplevel

    from tfx_pipeline.pipeline import create_pipeline  # pylint: disable=import-outside-toplevel

    pipeline = create_pipeline(
        pipeline_name="scaling", pipeline_root=os.path.join(work, "root"), data_root=data,
        serving_model_dir=os.path.join(work, "serving"),
        metadata_path=os.path.join(work, "metadata.sqlite"), beam_pipeline_args=beam_args,
        enable_cache=False, data_stages_only=True)
    started = time.perf_counter()
    tfx.orchestration.LocalDagRunner().run(pipeline)
    seconds = time.perf_counter() - started
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"events": events, "seconds": seconds, "generate_seconds": generate_s,
            "peak_rss_gib": max(own, workers) / 2 ** 20,
            "driver_peak_rss_gib": own / 2 ** 20, "worker_peak_rss_gib": workers / 2 ** 20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100000,1000000,5000000",
                        help="comma-separated event counts (default: %(default)s)")
    parser.add_argument("--beam-arg", action="append",
                        help="Beam pipeline argument, repeatable (default: "
                             + " ".join(DEFAULT_BEAM_ARGS) + ")")
    parser.add_argument("--out", default="benchmarks/results/pipeline_scaling")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()
    beam_args = args.beam_arg or DEFAULT_BEAM_ARGS
    if args.child:
        print(json.dumps(child(args.child, args.work, beam_args)))
        return

    import numpy as np  # pylint: disable=import-outside-toplevel

    rows = []
    for size in [int(s) for s in args.sizes.split(",")]:
        work = tempfile.mkdtemp(prefix=f"dspnet-scaling-{size}-")
        try:
            out = subprocess.run(
                [sys.executable, os.path.abspath(__file__), "--child", str(size), "--work", work,
                 *[f"--beam-arg={a}" for a in beam_args]],
                capture_output=True, text=True, check=False,
                env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
        finally:
            shutil.rmtree(work, ignore_errors=True)
        if out.returncode != 0:
            raise SystemExit(f"{size} events: child failed\n{out.stderr[-4000:]}")
        row = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(f"{size:>9} events: {row['seconds']:.0f} s, peak RSS {row['peak_rss_gib']:.2f} GiB",
              flush=True)
    exponent = None
    if len(rows) >= 2:
        exponent = float(np.polyfit(np.log([r["events"] for r in rows]),
                                    np.log([r["seconds"] for r in rows]), 1)[0])
    report = {"beam_args": beam_args, "rows": rows, "growth_exponent": exponent,
              "cpus": os.cpu_count()}
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "results.json"), "w", encoding="utf-8") as handle:
        json.dump(report, handle, indent=2)
    lines = ["# Pipeline scaling", "",
             f"Data stages (SequenceExampleGen, StatisticsGen, SchemaGen, ExampleValidator, "
             f"Transform) with LocalDagRunner, Beam args `{' '.join(beam_args)}`, "
             f"{os.cpu_count()} CPUs.", "",
             "| events | wall time (s) | peak RSS (GiB) | driver | largest worker |",
             "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['events']:,} | {r['seconds']:.0f} | {r['peak_rss_gib']:.2f} | "
                     f"{r['driver_peak_rss_gib']:.2f} | {r['worker_peak_rss_gib']:.2f} |")
    if exponent is not None:
        lines += ["", f"Growth exponent (slope of log time on log events): **{exponent:.2f}**."]
    with open(os.path.join(args.out, "results.md"), "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
