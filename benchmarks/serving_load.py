"""Serving under load: throughput and latency against concurrent clients, batching off and on.

One run, one machine: the local server (`dspnet serve`) in its own process, once without
batching and once with `--enable-batching --batching-parameters-file` (by default
`benchmarks/batching_parameters_2cores.txt`, the setting measured best for this server on two
cores; the real TF Serving's is `serving/deploy/batching_parameters.txt`), each at 1, 8, 32
and 128 concurrent closed-loop clients (a client sends its next request when its answer
arrives), plus the ceiling: the same SavedModel called in this process on batches of those
sizes, rows per second. Clients keep their requests in flight with gRPC futures, so 128 clients
cost this process a few threads, not 128; they still share the machine's cores with the server,
as the ceiling does not. Prints and saves JSON, Markdown and a plot.

    .venv/bin/python benchmarks/serving_load.py --out benchmarks/results/serving_load

Without --model-base-path it exports an untrained DSPnet of the default configuration
(2,000 items, 6 scenes, L=50, d=64): cost does not depend on what the weights learned.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import threading
import time
from typing import Dict, List

import dspnet_tf  # noqa: F401  (Keras 2 before TensorFlow)
import grpc
import numpy as np
import portpicker
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from serving.batching import BatchingOptions
from serving.client import DSPnetClient
from serving.model_manager import model_versions

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from serving_latency import make_requests, model_base_path  # noqa: E402  (a sibling script)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_PARAMETERS = os.path.join(ROOT, "benchmarks", "batching_parameters_2cores.txt")


def closed_loop(stub, requests: List[predict_pb2.PredictRequest], clients: int,
                seconds: float, warmup: float) -> Dict[str, float]:
    """`clients` closed-loop clients for `seconds` (after `warmup`): latency and throughput.

    Each client is a chain of futures: the callback of one answer records its latency and sends
    the client's next request, so concurrency is exact and cheap.
    """
    lock = threading.Lock()
    latencies: List[float] = []
    codes: Dict[str, int] = {}
    state = {"measuring": False, "stop": False, "active": clients}
    done = threading.Event()

    def send(client: int, sequence: int) -> None:
        request = requests[(client * 7919 + sequence) % len(requests)]
        started = time.perf_counter()
        future = stub.Predict.future(request, timeout=30)
        future.add_done_callback(lambda f: finished(f, client, sequence, started))

    def finished(future, client: int, sequence: int, started: float) -> None:
        elapsed = time.perf_counter() - started
        code = future.code().name
        with lock:
            if state["measuring"]:
                codes[code] = codes.get(code, 0) + 1
                if code == "OK":
                    latencies.append(elapsed)
            if state["stop"]:
                state["active"] -= 1
                if state["active"] == 0:
                    done.set()
                return
        send(client, sequence + 1)

    for client in range(clients):
        send(client, 0)
    time.sleep(warmup)
    with lock:
        state["measuring"] = True
    started = time.perf_counter()
    time.sleep(seconds)
    with lock:
        state["measuring"] = False
        wall = time.perf_counter() - started
        state["stop"] = True
    done.wait(timeout=60)
    values = np.array(latencies) * 1000.0
    return {"clients": clients, "answered": int(values.size),
            "throughput_rps": float(values.size / wall),
            "p50_ms": float(np.percentile(values, 50)) if values.size else float("nan"),
            "p99_ms": float(np.percentile(values, 99)) if values.size else float("nan"),
            "codes": codes}


def start_server(base: str, batching_file: str = None, extra: List[str] = ()) -> tuple:
    """Starts `dspnet serve` on a free port in its own process; -> (process, port, log)."""
    port = portpicker.pick_unused_port()
    command = [sys.executable, "-m", "dspnet_tf.cli", "serve", "--model-base-path", base,
               "--port", str(port), "--rest-port", "-1", "--max-concurrent-rpcs", "1024",
               *extra]
    if batching_file:
        command += ["--enable-batching", "--batching-parameters-file", batching_file]
    log = open(os.path.join(os.path.dirname(base), f"server-{port}.log"), "w")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                               env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    with DSPnetClient(f"127.0.0.1:{port}") as client:
        client.wait_until_ready(timeout=180)
    return process, port, log


def in_process_ceiling(serve_fn, requests: List[bytes], sizes: List[int],
                       seconds: float) -> List[Dict[str, float]]:
    """Rows per second of the SavedModel called in this process on batches of each size."""
    results = []
    for size in sizes:
        batch = tf.constant((requests * (size // len(requests) + 1))[:size])
        serve_fn(examples=batch)  # trace and warm
        calls, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            serve_fn(examples=batch)
            calls += 1
        wall = time.perf_counter() - started
        results.append({"batch": size, "rows_per_s": calls * size / wall,
                        "ms_per_call": 1000.0 * wall / calls})
    return results


def markdown(report: Dict) -> str:
    lines = ["# Serving under load (batch-1 requests, closed-loop clients)", "",
             f"{report['machine']['cpus']} CPUs; the server in its own process; clients in one "
             f"process with gRPC futures; {report['seconds']:g} s per level after "
             f"{report['warmup']:g} s of warm-up. Batching parameters: "
             f"`{report['batching']}`.", "",
             "| clients | batching | req/s | p50 ms | p99 ms | refused |", "|---|---|---|---|---|---|"]
    for mode in ("off", "on"):
        for row in report["results"][mode]:
            refused = sum(v for k, v in row["codes"].items() if k != "OK")
            lines.append(f"| {row['clients']} | {mode} | {row['throughput_rps']:.0f} | "
                         f"{row['p50_ms']:.2f} | {row['p99_ms']:.2f} | {refused} |")
    lines += ["", "| batch | in-process rows/s (the ceiling) | ms per call |", "|---|---|---|"]
    for row in report["ceiling"]:
        lines.append(f"| {row['batch']} | {row['rows_per_s']:.0f} | {row['ms_per_call']:.2f} |")
    lines += ["", "| clients | batching on / off, throughput | on / ceiling at that batch | "
              "p50 added at 1 client (ms) |", "|---|---|---|---|"]
    for row in report["ratios"]:
        lines.append(f"| {row['clients']} | {row['on_over_off']:.2f} | "
                     f"{row['on_over_ceiling']:.2f} | {row['p50_added_ms']:.2f} |")
    return "\n".join(lines) + "\n"


def plot(report: Dict, path: str) -> None:
    import matplotlib  # pylint: disable=import-outside-toplevel

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for mode in ("off", "on"):
        rows = report["results"][mode]
        clients = [r["clients"] for r in rows]
        left.plot(clients, [r["throughput_rps"] for r in rows], "o-", label=f"batching {mode}")
        right.plot(clients, [r["p99_ms"] for r in rows], "o-", label=f"batching {mode}")
    ceiling = report["ceiling"]
    left.plot([r["batch"] for r in ceiling], [r["rows_per_s"] for r in ceiling], "k--",
              label="in-process ceiling (batch = clients)")
    for axis, label in ((left, "requests / s"), (right, "p99 latency (ms)")):
        axis.set_xscale("log", base=2)
        axis.set_xlabel("concurrent clients")
        axis.set_ylabel(label)
        axis.legend()
        axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-base-path", help="serve this base path (default: export an "
                                                  "untrained default-configuration DSPnet)")
    parser.add_argument("--clients", default="1,8,32,128",
                        help="concurrency levels (default: %(default)s)")
    parser.add_argument("--seconds", type=float, default=8.0,
                        help="measured seconds per level and mode (default: %(default)s)")
    parser.add_argument("--warmup", type=float, default=2.0,
                        help="unmeasured seconds before each level (default: %(default)s)")
    parser.add_argument("--batching-parameters-file", default=DEFAULT_PARAMETERS,
                        help="BatchingParameters for the batching-on server (default: "
                             "benchmarks/batching_parameters_2cores.txt)")
    parser.add_argument("--server-arg", action="append", default=[],
                        help="an extra `dspnet serve` argument for both servers, e.g. "
                             "--server-arg=--intra-op-threads=1 (repeatable)")
    parser.add_argument("--out", default="benchmarks/results/serving_load",
                        help="output folder (default: %(default)s)")
    args = parser.parse_args(argv)
    levels = [int(x) for x in args.clients.split(",")]
    try:
        batching = BatchingOptions.read(args.batching_parameters_file)
    except (OSError, ValueError) as err:
        parser.error(f"--batching-parameters-file: {err}")
    os.makedirs(args.out, exist_ok=True)
    base = model_base_path(args.model_base_path, "dspnet-serving-load-")
    versions = model_versions(base)
    if not versions:
        parser.error(f"--model-base-path {base}: no complete version to serve")
    examples = make_requests(256, 50, 2000)
    requests = []
    for example in examples:
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "dspnet"
        request.inputs["examples"].CopyFrom(tf.make_tensor_proto([example]))
        requests.append(request)

    started = time.time()
    report = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                          "tensorflow": tf.__version__},
              "seconds": args.seconds, "warmup": args.warmup,
              "batching": str(batching), "server_args": args.server_arg, "results": {}}
    for mode, parameters in (("off", None), ("on", args.batching_parameters_file)):
        print(f"==> server with batching {mode}", flush=True)
        process, port, log = start_server(base, parameters, args.server_arg)
        try:
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
                rows = []
                for clients in levels:
                    row = closed_loop(stub, requests, clients, args.seconds, args.warmup)
                    print(f"    {clients:4d} clients: {row['throughput_rps']:7.0f} req/s, p50 "
                          f"{row['p50_ms']:7.2f} ms, p99 {row['p99_ms']:7.2f} ms, "
                          f"codes {row['codes']}", flush=True)
                    rows.append(row)
                report["results"][mode] = rows
        finally:
            process.terminate()
            process.wait(timeout=60)
            log.close()
    print("==> in-process ceiling", flush=True)
    serve_fn = tf.saved_model.load(versions[max(versions)]).signatures["serving_default"]
    report["ceiling"] = in_process_ceiling(serve_fn, examples, levels, args.seconds / 2)
    off = {r["clients"]: r for r in report["results"]["off"]}
    on = {r["clients"]: r for r in report["results"]["on"]}
    ceiling = {r["batch"]: r for r in report["ceiling"]}
    report["ratios"] = [
        {"clients": c, "on_over_off": on[c]["throughput_rps"] / off[c]["throughput_rps"],
         "on_over_ceiling": on[c]["throughput_rps"] / ceiling[c]["rows_per_s"],
         "p50_added_ms": on[c]["p50_ms"] - off[c]["p50_ms"]} for c in levels]
    report["batch_timeout_ms"] = batching.batch_timeout_micros / 1000.0
    report["wall_seconds"] = time.time() - started
    with open(os.path.join(args.out, "serving_load.json"), "w", encoding="utf-8") as handle:
        json.dump(report, handle, indent=1)
    text = markdown(report)
    with open(os.path.join(args.out, "serving_load.md"), "w", encoding="utf-8") as handle:
        handle.write(text)
    plot(report, os.path.join(args.out, "serving_load.png"))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
