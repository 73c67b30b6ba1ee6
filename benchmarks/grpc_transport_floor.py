"""The Python gRPC transport floor: a round trip that runs no model, per server style.

`benchmarks/serving_latency.py` compares a gRPC Predict against calling the SavedModel
in-process. Part of the difference is the transport itself: a request over loopback, through
gRPC's C core and the Python bindings on both ends. This script measures that part alone, for the server styles Python
gRPC offers, so the choice of server style rests on a measurement:

- `sync`: `grpc.server` with a thread pool (what `dspnet serve` uses);
- `aio`: `grpc.aio.server` with a coroutine handler run on the event loop (no thread hand-off);
- `aio_threads`: `grpc.aio.server` with a plain handler run on a thread pool.

Each server runs in its own process and answers ModelService.GetModelStatus with a fixed
response (TF Serving's proto, no model); one client thread of this process sends requests one at
a time. The styles take turns (`--rounds`), so they see the same machine load.

    .venv/bin/python benchmarks/grpc_transport_floor.py --out benchmarks/results/grpc_transport_floor
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from concurrent import futures
from typing import Dict, List

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # the protos import TensorFlow's

import grpc  # noqa: E402
import numpy as np  # noqa: E402
import portpicker  # noqa: E402
from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc  # noqa: E402

STYLES = ("sync", "aio", "aio_threads")


def _fixed_response():
    response = get_model_status_pb2.GetModelStatusResponse()
    response.model_version_status.add().version = 1
    return response


class _ThreadedStatus(model_service_pb2_grpc.ModelServiceServicer):
    def GetModelStatus(self, request, context):  # noqa: N802 (gRPC method name)
        return _fixed_response()


class _CoroutineStatus(model_service_pb2_grpc.ModelServiceServicer):
    async def GetModelStatus(self, request, context):  # noqa: N802
        return _fixed_response()


def serve(style: str, port: int) -> None:
    """Runs one server style on 127.0.0.1:port until killed."""
    address = f"127.0.0.1:{port}"
    if style == "sync":
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(_ThreadedStatus(), server)
        server.add_insecure_port(address)
        server.start()
        server.wait_for_termination()
        return

    async def run() -> None:
        if style == "aio":
            server = grpc.aio.server()
            model_service_pb2_grpc.add_ModelServiceServicer_to_server(_CoroutineStatus(), server)
        else:
            server = grpc.aio.server(futures.ThreadPoolExecutor(max_workers=8))
            model_service_pb2_grpc.add_ModelServiceServicer_to_server(_ThreadedStatus(), server)
        server.add_insecure_port(address)
        await server.start()
        await server.wait_for_termination()

    asyncio.run(run())


def round_trips(port: int, requests: int, warmup: int = 200) -> List[float]:
    """Latencies (s) of `requests` sequential GetModelStatus calls."""
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    grpc.channel_ready_future(channel).result(timeout=60)
    stub = model_service_pb2_grpc.ModelServiceStub(channel)
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "floor"
    for _ in range(warmup):
        stub.GetModelStatus(request)
    latencies = []
    for _ in range(requests):
        started = time.perf_counter()
        stub.GetModelStatus(request)
        latencies.append(time.perf_counter() - started)
    channel.close()
    return latencies


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--styles", default=",".join(STYLES),
                        help="server styles to compare (default: %(default)s)")
    parser.add_argument("--requests", type=int, default=1000,
                        help="timed round trips per style and round (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="the styles take turns this many times (default: %(default)s)")
    parser.add_argument("--out", default="benchmarks/results/grpc_transport_floor",
                        help="output folder (default: %(default)s)")
    parser.add_argument("--serve", nargs=2, metavar=("STYLE", "PORT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve[0], int(args.serve[1]))
        return 0
    styles = [s for s in args.styles.split(",") if s]
    unknown = [s for s in styles if s not in STYLES]
    if unknown:
        parser.error(f"--styles: unknown {unknown}; known: {', '.join(STYLES)}")

    latencies: Dict[str, List[float]] = {style: [] for style in styles}
    for round_index in range(args.rounds):
        for style in styles:
            port = portpicker.pick_unused_port()
            server = subprocess.Popen([sys.executable, os.path.abspath(__file__),
                                       "--serve", style, str(port)])
            try:
                latencies[style] += round_trips(port, args.requests)
            finally:
                server.kill()
                server.wait()
            print(f"    round {round_index + 1}: {style:12s} p50 "
                  f"{np.percentile(latencies[style][-args.requests:], 50) * 1000:.3f} ms",
                  flush=True)

    rows = {style: {"p50_ms": float(np.percentile(v, 50) * 1000),
                    "p99_ms": float(np.percentile(v, 99) * 1000),
                    "requests": len(v)} for style, v in latencies.items()}
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "grpc_transport_floor.json"), "w",
              encoding="utf-8") as handle:
        json.dump({"cpus": os.cpu_count(), "grpcio": grpc.__version__, "rows": rows}, handle,
                  indent=2)
    lines = ["# gRPC round trip without a model (GetModelStatus, one client, loopback)", "",
             f"{os.cpu_count()} CPUs, grpcio {grpc.__version__}, {args.rounds} rounds of "
             f"{args.requests} requests per style.", "",
             "| server style | p50 ms | p99 ms |", "|---|---|---|"]
    lines += [f"| {style} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} |" for style, r in rows.items()]
    text = "\n".join(lines) + "\n"
    with open(os.path.join(args.out, "grpc_transport_floor.md"), "w", encoding="utf-8") as handle:
        handle.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
