"""A local model server with TF Serving's gRPC and REST APIs.

The TF Serving binary cannot be installed everywhere (e.g. CI and this project's dev machines),
so this server implements the same API on the same protos for the client, the demo and the tests.
Production deployments use the real `tensorflow/serving` image (see `serving/deploy/`); clients
do not change.

    server = ModelServer(ServerOptions(model_base_path="serving/dspnet"))
    server.start()          # loads the newest version, then polls for new ones
    ...                     # gRPC on 127.0.0.1:8500, REST on 127.0.0.1:8501
    server.stop()
"""

from __future__ import annotations

import dataclasses
import logging
import signal
import ssl
import threading
from concurrent import futures
from typing import Dict, Optional

import grpc

from serving.batching import Batcher, BatchingOptions
from serving.grpc_service import add_services
from serving.model_manager import ModelManager, VersionPolicy
from serving.monitoring import ServingMetrics
from serving.prediction import RequestLimits, run_signature
from serving.rest import RestServer

LOG = logging.getLogger("dspnet.serving")


@dataclasses.dataclass
class ServerOptions:
    """Everything `dspnet serve` can set; the defaults are those of `tensorflow_model_server`
    where it has one, except the host: 127.0.0.1 unless you ask for more.

    Attributes:
      model_base_path: folder of integer version subfolders (Pusher's push destination).
      model_name: the name clients ask for.
      host: interface to bind; 127.0.0.1 by default (never all interfaces unless asked).
      port: gRPC port (0: any free port).
      rest_port: REST port (0: any free port; None: no REST).
      version_policy: "latest", "latest:N", "all" or "specific:V1,V2".
      version_labels: label -> version for `model_spec.version_label`.
      poll_seconds: how often to look for new versions.
      limits: request limits (size, batch, history length).
      workers: gRPC worker threads; `max_concurrent_rpcs` beyond them get RESOURCE_EXHAUSTED.
      tls_cert / tls_key: PEM paths; with both, gRPC and REST use TLS.
      tls_client_ca: PEM path; if set, clients must present a certificate it signed (needs
        tls_cert and tls_key: client certificates only exist inside TLS).
      rest_max_connections: open REST connections at most (one thread each); more get 503.
      rest_timeout: seconds a REST read may wait (idle keep-alive, slow headers or body, the
        TLS handshake) before the connection is dropped.
      batching: merge concurrent requests into model calls (TF Serving's `--enable_batching`
        with its `BatchingParameters`); None: every request runs alone. gRPC workers are raised
        to twice max_batch_size so that a batch can fill.
      monitoring_path: REST path of the Prometheus metrics (TF Serving's
        `prometheus_config.path`); None: not exposed (they are still counted).
    """

    model_base_path: str
    model_name: str = "dspnet"
    host: str = "127.0.0.1"
    port: int = 8500
    rest_port: Optional[int] = 8501
    version_policy: str = "latest"
    version_labels: Dict[str, int] = dataclasses.field(default_factory=dict)
    poll_seconds: float = 2.0
    limits: RequestLimits = dataclasses.field(default_factory=RequestLimits)
    workers: int = 8
    max_concurrent_rpcs: int = 256
    tls_cert: Optional[str] = None
    tls_key: Optional[str] = None
    tls_client_ca: Optional[str] = None
    rest_max_connections: int = 64
    rest_timeout: float = 10.0
    batching: Optional[BatchingOptions] = None
    monitoring_path: Optional[str] = None


def format_address(host: str, port: int) -> str:
    """host:port, with an IPv6 host in brackets ("[::1]:8500") as gRPC and URLs need it."""
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


def _read(path: str) -> bytes:
    with open(path, "rb") as handle:
        return handle.read()


class ModelServer:
    """gRPC + REST front ends over one `ModelManager`."""

    def __init__(self, options: ServerOptions) -> None:
        if bool(options.tls_cert) != bool(options.tls_key):
            raise ValueError("TLS needs both a certificate (--tls-cert) and its key (--tls-key)")
        if options.monitoring_path and options.rest_port is None:
            raise ValueError("the Prometheus metrics are served on the REST port: monitoring "
                             "needs REST on (--rest-port)")
        if options.tls_client_ca and not options.tls_cert:
            # Without this the server would start in plaintext and accept anyone.
            raise ValueError("--tls-client-ca needs TLS on: give --tls-cert and --tls-key too")
        self.options = options
        self.metrics = ServingMetrics()
        self.manager = ModelManager(options.model_name, options.model_base_path,
                                    VersionPolicy.parse(options.version_policy),
                                    options.poll_seconds, options.version_labels, self.metrics)
        limits = options.limits
        workers = options.workers
        self.batcher: Optional[Batcher] = None
        runner = run_signature
        if options.batching is not None:
            self.batcher = Batcher(options.batching, run_signature, self.metrics,
                                   options.model_name)
            runner = self.batcher.run
            # A request holds its worker while it waits in the batch queue.
            workers = max(workers, 2 * options.batching.max_batch_size)
        self.grpc_server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="grpc-worker"),
            maximum_concurrent_rpcs=options.max_concurrent_rpcs,
            options=[("grpc.max_receive_message_length", limits.max_request_bytes),
                     ("grpc.max_send_message_length", 64 * 1024 * 1024),
                     ("grpc.so_reuseport", 0)],
        )
        add_services(self.grpc_server, self.manager, limits, runner, self.metrics)
        address = format_address(options.host, options.port)
        if options.tls_cert:
            credentials = grpc.ssl_server_credentials(
                [(_read(options.tls_key), _read(options.tls_cert))],
                root_certificates=_read(options.tls_client_ca) if options.tls_client_ca else None,
                require_client_auth=bool(options.tls_client_ca))
            self.port = self.grpc_server.add_secure_port(address, credentials)
        else:
            self.port = self.grpc_server.add_insecure_port(address)
        if self.port == 0:
            raise OSError(f"could not bind gRPC to {address} (port in use?)")
        self.rest: Optional[RestServer] = None
        if options.rest_port is not None:
            context = None
            if options.tls_cert:
                context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
                context.load_cert_chain(options.tls_cert, options.tls_key)
                if options.tls_client_ca:
                    context.load_verify_locations(options.tls_client_ca)
                    context.verify_mode = ssl.CERT_REQUIRED
            self.rest = RestServer(self.manager, options.host.strip("[]"), options.rest_port,
                                   limits, context, options.rest_max_connections,
                                   options.rest_timeout, runner, self.metrics,
                                   options.monitoring_path)
        self.rest_port = self.rest.port if self.rest else None
        self._stopped = threading.Event()

    def start(self) -> "ModelServer":
        """Loads the current versions, starts polling and both front ends."""
        self.manager.start()
        self.grpc_server.start()
        if self.rest:
            self.rest.start()
        LOG.info("serving model %r from %s: gRPC %s%s; versions %s", self.options.model_name,
                 self.manager.base_path, format_address(self.options.host, self.port),
                 f", REST {format_address(self.options.host, self.rest_port)}"
                 if self.rest else "",
                 self.manager.serving_versions or "none yet (polling)")
        if self.batcher is not None:
            LOG.info("batching on: %s", self.options.batching)
        if self.options.monitoring_path and self.rest:
            LOG.info("Prometheus metrics at http%s://%s%s", "s" if self.options.tls_cert else "",
                     format_address(self.options.host, self.rest_port),
                     self.options.monitoring_path)
        return self

    def stop(self, grace: float = 5.0) -> None:
        """Stops taking requests, lets those in flight finish (up to `grace` s), stops polling."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        grpc_stopped = self.grpc_server.stop(grace)  # refuses new RPCs now; both drain at once
        if self.rest:
            self.rest.stop(grace)
        grpc_stopped.wait()
        if self.batcher is not None:
            self.batcher.stop()
        self.manager.stop()
        LOG.info("server stopped")

    def __enter__(self) -> "ModelServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def serve_until_signal(self) -> None:
        """Blocks until SIGTERM or SIGINT, then shuts down cleanly."""
        done = threading.Event()

        def on_signal(signum, _frame) -> None:
            LOG.info("received %s; shutting down", signal.Signals(signum).name)
            done.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        done.wait()
        self.stop()
