"""Serving latency: gRPC through the local server vs calling the SavedModel in-process.

One run measures both paths on the same model and the same requests (batch 1, one user's
history of the model's length), for 1, 8 and 32 concurrent clients: p50 / p99 latency and
throughput, and the gRPC / in-process ratios. The two paths take turns (`--rounds`), so both
see the same load on a shared machine. The server runs in its own process (`dspnet
serve`), as it would in production; clients are threads of this process. Prints and saves JSON
and Markdown.

    .venv/bin/python benchmarks/serving_latency.py --out benchmarks/results/serving
    .venv/bin/python benchmarks/serving_latency.py --model-base-path demo-out/pipeline/serving/dspnet ...

Without --model-base-path it exports an untrained DSPnet of the default configuration
(2,000 items, 6 scenes, L=50, d=64): latency does not depend on what the weights learned.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from typing import Callable, Dict, List


import dspnet_tf  # noqa: F401,E402  (Keras 2 before TensorFlow)
import numpy as np  # noqa: E402
import portpicker  # noqa: E402
import tensorflow as tf  # noqa: E402

from serving.client import DSPnetClient, make_example  # noqa: E402
from serving.model_manager import model_versions  # noqa: E402
from serving.testing import export_untrained_model, item_names  # noqa: E402

SCENES = ("feed", "search", "live", "favorites", "cart", "messages")


def measure(call: Callable[[int], None], clients: int, requests_per_client: int) -> Dict:
    """Latencies (s) and wall time of `clients` threads each making requests."""
    latencies: List[List[float]] = [[] for _ in range(clients)]
    barrier = threading.Barrier(clients + 1)

    def worker(index: int) -> None:
        barrier.wait()
        for request in range(requests_per_client):
            started = time.perf_counter()
            call(index * requests_per_client + request)
            latencies[index].append(time.perf_counter() - started)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    return {"latencies": [x for per_client in latencies for x in per_client],
            "wall": time.perf_counter() - started}


def summarize(clients: int, rounds: List[Dict]) -> Dict:
    """p50 / p99 (ms) and throughput over the rounds of one path at one concurrency level."""
    flat = np.array([x for r in rounds for x in r["latencies"]]) * 1000.0
    return {"clients": clients, "requests": int(flat.size),
            "p50_ms": float(np.percentile(flat, 50)), "p99_ms": float(np.percentile(flat, 99)),
            "mean_ms": float(flat.mean()),
            "throughput_rps": float(flat.size / sum(r["wall"] for r in rounds))}


def make_requests(count: int, max_len: int, num_items: int, seed: int = 0) -> List[bytes]:
    rng = np.random.default_rng(seed)
    names = item_names(num_items)
    return [make_example([names[i] for i in rng.integers(0, num_items, max_len)],
                         [SCENES[s] for s in rng.integers(0, len(SCENES), max_len)])
            for _ in range(count)]


def model_base_path(given: str = None, prefix: str = "dspnet-serving-") -> str:
    """`given`, or a fresh temporary base path holding an untrained DSPnet of the default
    configuration as version 1 (2,000 items, 6 scenes, L=50, d=64)."""
    if given is not None:
        return given
    base = os.path.join(tempfile.mkdtemp(prefix=prefix), "dspnet")
    print("==> exporting an untrained DSPnet of the default configuration", flush=True)
    export_untrained_model(os.path.join(base, "1"), num_items=2000, max_len=50, item_dim=64,
                           scene_dim=16, top_k=20, scenes=SCENES)
    return base


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-base-path", help="serve this base path (default: export an "
                                                  "untrained default-configuration DSPnet)")
    parser.add_argument("--requests", type=int, default=400,
                        help="requests per concurrency level and path (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=4,
                        help="the two paths alternate this many times per concurrency level, "
                             "so both see the same machine load (default: %(default)s)")
    parser.add_argument("--clients", default="1,8,32",
                        help="concurrency levels (default: %(default)s)")
    parser.add_argument("--intra-op-threads", type=int, default=0,
                        help="TensorFlow threads per op for BOTH paths (the server's flag of the "
                             "same name, and this process); 0: TensorFlow's default. 1 cuts "
                             "batch-1 latency: no hand-off of tiny ops to a sleeping pool")
    parser.add_argument("--out", default="benchmarks/results/serving",
                        help="output folder (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.intra_op_threads:  # before the first op, or TensorFlow ignores it
        tf.config.threading.set_intra_op_parallelism_threads(args.intra_op_threads)
    os.makedirs(args.out, exist_ok=True)
    levels = [int(x) for x in args.clients.split(",")]

    base = model_base_path(args.model_base_path, "dspnet-serving-bench-")
    versions = model_versions(base)
    if not versions:
        parser.error(f"--model-base-path {base}: no complete version (<base>/<integer>/"
                     "saved_model.pb) to serve")
    model_dir = versions[max(versions)]  # what the server serves by default
    loaded = tf.saved_model.load(model_dir)
    serve_fn = loaded.signatures["serving_default"]
    # transform_features gives training examples: the model's max_len inputs + one target.
    max_len = int(loaded.signatures["transform_features"](
        examples=tf.constant([b""]))["item_ids"].shape[1]) - 1
    requests = make_requests(256, max_len, 2000)

    def in_process(i: int) -> None:
        serve_fn(examples=tf.constant([requests[i % len(requests)]]))

    port = portpicker.pick_unused_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "dspnet_tf.cli", "serve", "--model-base-path", base,
         "--port", str(port), "--rest-port", "-1", "--workers", "32",
         "--intra-op-threads", str(args.intra_op_threads)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    results: Dict[str, List[Dict]] = {"in_process": [], "grpc": []}
    try:
        client = DSPnetClient(f"127.0.0.1:{port}", timeout=30)
        client.wait_until_ready(timeout=180)

        def over_grpc(i: int) -> None:
            client.predict([requests[i % len(requests)]])

        for call in (in_process, over_grpc):  # warm-up both paths
            for i in range(50):
                call(i)
        # The transport floor: a round trip that runs no model (GetModelStatus).
        for _ in range(50):
            client.status()
        status_p50 = summarize(1, [measure(lambda i: client.status(), 1, 400)])["p50_ms"]
        print(f"    grpc GetModelStatus (no model run) p50 {status_p50:.2f} ms", flush=True)
        for clients in levels:
            per_client = max(args.requests // clients // args.rounds, 5)
            # The paths take turns, a round each: on a shared machine the load drifts within
            # a minute, and a ratio of two measurements minutes apart would carry the drift.
            rounds: Dict[str, List[Dict]] = {"in_process": [], "grpc": []}
            for _ in range(args.rounds):
                for name, call in (("in_process", in_process), ("grpc", over_grpc)):
                    rounds[name].append(measure(call, clients, per_client))
            for name in ("in_process", "grpc"):
                row = summarize(clients, rounds[name])
                results[name].append(row)
                print(f"    {name:10s} clients {clients:2d}: p50 {row['p50_ms']:6.2f} ms  "
                      f"p99 {row['p99_ms']:6.2f} ms  {row['throughput_rps']:7.1f} req/s",
                      flush=True)
        client.close()
    finally:
        server.terminate()
        server.wait(timeout=60)

    ratios = [{"clients": g["clients"],
               "p50_ratio": g["p50_ms"] / p["p50_ms"], "p99_ratio": g["p99_ms"] / p["p99_ms"],
               "throughput_ratio": g["throughput_rps"] / p["throughput_rps"]}
              for g, p in zip(results["grpc"], results["in_process"])]
    batch1 = ratios[0] if levels[0] == 1 else None
    # The best ratio any server on this transport could reach at batch 1: the model's own time
    # plus a round trip that runs nothing, over the model's time (the handler assumed free).
    floor = ((results["in_process"][0]["p50_ms"] + status_p50) / results["in_process"][0]["p50_ms"]
             if batch1 else None)
    report = {
        "model": model_dir, "history_length": max_len, "batch_size": 1,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "tensorflow": tf.__version__},
        "intra_op_threads": args.intra_op_threads, "rounds": args.rounds,
        "grpc_round_trip_without_model_p50_ms": status_p50,
        "transport_floor_p50_ratio_at_1_client": floor,
        "results": results, "ratios": ratios,
        "targets": {"grpc_p50_over_in_process_at_1_client": {
                        "target": 1.3, "measured": batch1["p50_ratio"] if batch1 else None},
                    "grpc_p99_ms_at_1_client": {
                        "target": 20.0, "measured": results["grpc"][0]["p99_ms"]}},
    }
    with open(os.path.join(args.out, "serving.json"), "w", encoding="utf-8") as handle:
        json.dump(report, handle, indent=2)
    lines = ["# Serving latency (batch 1, one history of the model's length)", "",
             f"Model: `{model_dir}`; {os.cpu_count()} CPUs; server in its own process; "
             f"TensorFlow intra-op threads: {args.intra_op_threads or 'default'} (both paths); "
             f"the paths alternate in {args.rounds} rounds per concurrency level. "
             f"A gRPC round trip that runs no model (GetModelStatus): p50 {status_p50:.2f} ms.",
             *([f"So no server on this transport can beat a batch-1 p50 ratio of {floor:.2f} "
                "((in-process p50 + that round trip) / in-process p50)."] if floor else []),
             "",
             "| clients | path | p50 ms | p99 ms | req/s |", "|---|---|---|---|---|"]
    for clients_index, clients in enumerate(levels):
        for name in ("in_process", "grpc"):
            row = results[name][clients_index]
            lines.append(f"| {clients} | {name} | {row['p50_ms']:.2f} | {row['p99_ms']:.2f} | "
                         f"{row['throughput_rps']:.1f} |")
    lines += ["", "| clients | gRPC/in-process p50 | p99 | throughput |", "|---|---|---|---|"]
    lines += [f"| {r['clients']} | {r['p50_ratio']:.2f} | {r['p99_ratio']:.2f} | "
              f"{r['throughput_ratio']:.2f} |" for r in ratios]
    markdown = "\n".join(lines) + "\n"
    with open(os.path.join(args.out, "serving.md"), "w", encoding="utf-8") as handle:
        handle.write(markdown)
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
