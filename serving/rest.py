"""TF Serving's REST API over a `ModelManager`.

  GET  /v1/models/{name}[/versions/{v}|/labels/{l}]             model status
  GET  /v1/models/{name}[/versions/{v}|/labels/{l}]/metadata    signature defs
  POST /v1/models/{name}[/versions/{v}|/labels/{l}]:predict     row ("instances") or
                                                                columnar ("inputs") format

Request and response JSON follow TF Serving's REST API: binary strings as {"b64": ...}, errors
as {"error": message} with the HTTP status of the gRPC code. Written on the standard library's
threading HTTP server because TF Serving's own REST front end is part of the C++ binary.

What a slow or hostile client can hold is bounded: at most `max_connections` connections (one
thread each; more are refused with 503 at once), a socket timeout on every read so idle
keep-alive connections, slow headers and missing bodies are dropped, TLS handshakes run on the
connection's own thread with that timeout (never on the accepting thread), a request body is read
in full or the connection is closed (never parsed as the next request), and JSON is parsed with
bounded integers and nesting.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import socket
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Dict, List, Mapping, Optional, Set, Tuple

import grpc
import numpy as np
from google.protobuf import json_format

from serving.errors import ServingError
from serving.grpc_service import status_response
from serving.model_manager import LoadedVersion, ModelManager
from serving.prediction import (
    DEFAULT_SIGNATURE,
    RequestLimits,
    check_examples,
    check_shape,
    run_signature,
    signature_input_specs,
)

LOG = logging.getLogger("dspnet.serving")
_PATH = re.compile(r"^/v1/models/(?P<name>[^/:]+)"
                   r"(?:/versions/(?P<version>[0-9]{1,19})|/labels/(?P<label>[^/:]+))?"
                   r"(?P<action>/metadata|:predict)?$")


# Tensors here have rank <= 3; deeper tensor values are refused while they are walked.
MAX_JSON_DEPTH = 32
# int64 has 19 digits; a longer literal cannot be a tensor value (and Python's int() of a
# 5,000-digit string is slow and, from 3.10.7, raises ValueError).
MAX_INT_DIGITS = 20
_CONTENT_LENGTH = re.compile(r"^[0-9]{1,18}$")


def _bad(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.INVALID_ARGUMENT, message)


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise _bad(f"a number of {len(text)} digits is not a tensor value (int64 has 19)")
    return int(text)


def parse_json_body(raw: bytes) -> Any:
    """A request body as JSON, refusing what would cost the server more than its bytes.

    Integers longer than int64 and nesting too deep for the decoder are INVALID_ARGUMENT (not
    a 500 with a traceback per request); the body's size is already bounded by Content-Length,
    and the tensor values' nesting by `_decode_value`.
    """
    try:
        return json.loads(raw, parse_int=_bounded_int)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise _bad(f"request body is not valid JSON: {err}") from None
    except RecursionError:
        raise _bad(f"request JSON is nested deeper than {MAX_JSON_DEPTH} levels") from None


def _decode_value(value: Any, depth: int = 0) -> Any:
    """JSON value -> nested lists with {"b64": ...} decoded to bytes and text to UTF-8 bytes."""
    if depth > MAX_JSON_DEPTH:
        raise _bad(f"request JSON is nested deeper than {MAX_JSON_DEPTH} levels")
    if isinstance(value, dict):
        if set(value) == {"b64"} and isinstance(value["b64"], str):
            try:
                return base64.b64decode(value["b64"], validate=True)
            except ValueError:
                raise _bad("a {\"b64\": ...} value is not valid base64") from None
        raise _bad(f"unexpected object {sorted(value)[:5]} where a tensor value was expected")
    if isinstance(value, list):
        return [_decode_value(v, depth + 1) for v in value]
    if isinstance(value, str):
        return value.encode("utf-8")
    return value


def _to_array(name: str, value: Any, spec, limits: RequestLimits) -> np.ndarray:
    from tensorflow.core.framework import types_pb2  # pylint: disable=import-outside-toplevel

    decoded = _decode_value(value)
    is_string = spec.dtype == types_pb2.DT_STRING
    try:
        array = np.array(decoded, dtype=object if is_string else None)
    except ValueError:
        raise _bad(f"input {name!r}: rows of different lengths; all instances must have the "
                   "same shape (pad histories with \"\")") from None
    if array.dtype == object and not is_string:
        raise _bad(f"input {name!r}: rows of different lengths or mixed types")
    rank = None if spec.tensor_shape.unknown_rank else len(spec.tensor_shape.dim)
    if is_string:
        flat = array.reshape(-1)
        if array.size and not all(isinstance(v, bytes) for v in flat):
            raise _bad(f"input {name!r}: expects strings (rows of equal length; pad with \"\"), "
                       f"got {type(next(v for v in flat if not isinstance(v, bytes))).__name__}")
    check_shape(name, array.shape, rank, limits)
    check_examples(name, array, limits)
    return array


def decode_predict_request(body: Mapping[str, Any], loaded: LoadedVersion,
                           limits: RequestLimits) -> Tuple[str, Dict[str, np.ndarray], bool]:
    """-> (signature name, numpy inputs, row format?) from a REST predict body."""
    if not isinstance(body, dict):
        raise _bad("request body must be a JSON object with \"instances\" or \"inputs\"")
    signature_name = body.get("signature_name") or DEFAULT_SIGNATURE
    if not isinstance(signature_name, str):
        raise _bad("\"signature_name\" must be a string")
    specs = signature_input_specs(loaded, signature_name)
    if ("instances" in body) == ("inputs" in body):
        raise _bad("the body needs exactly one of \"instances\" (row format) or \"inputs\" "
                   "(columnar format)")
    names = sorted(specs)
    if "instances" in body:
        instances = body["instances"]
        if not isinstance(instances, list) or not instances:
            raise _bad("\"instances\" must be a non-empty list")
        if len(instances) > limits.max_batch_size:
            raise _bad(f"{len(instances)} instances exceed the server's max batch size "
                       f"{limits.max_batch_size}")
        columns: Dict[str, List[Any]] = {name: [] for name in names}
        for index, instance in enumerate(instances):
            named = isinstance(instance, dict) and not set(instance) <= {"b64"}
            if not named:
                if len(names) != 1:
                    raise _bad(f"instance {index}: signature {signature_name!r} has inputs "
                               f"{names}; give each instance as an object with them")
                instance = {names[0]: instance}
            if set(instance) != set(names):
                raise _bad(f"instance {index}: has {sorted(instance)}, signature "
                           f"{signature_name!r} takes {names}")
            for name in names:
                columns[name].append(instance[name])
        arrays = {name: _to_array(name, columns[name], specs[name], limits) for name in names}
        return signature_name, arrays, True
    inputs = body["inputs"]
    if not isinstance(inputs, dict) or (len(names) == 1 and set(inputs) <= {"b64"}):
        if len(names) != 1:
            raise _bad(f"\"inputs\" must be an object with {names}")
        inputs = {names[0]: inputs}
    if set(inputs) != set(names):
        raise _bad(f"\"inputs\" has {sorted(inputs)}, signature {signature_name!r} takes {names}")
    arrays = {name: _to_array(name, inputs[name], specs[name], limits) for name in names}
    return signature_name, arrays, False


def _json_value(array: np.ndarray) -> Any:
    if array.dtype == object:
        def text(value: bytes) -> Any:
            try:
                return value.decode("utf-8")
            except UnicodeDecodeError:
                return {"b64": base64.b64encode(value).decode("ascii")}
        return np.vectorize(text, otypes=[object])(array).tolist() if array.size else \
            array.tolist()
    return array.tolist()


def encode_predict_response(outputs: Mapping[str, np.ndarray], row_format: bool) -> Dict:
    """Outputs as TF Serving's REST answer: `predictions` (row format) or `outputs` (columnar).

    A single output is not wrapped in a dict, as in TF Serving.
    """
    if row_format:
        names = list(outputs)
        rows = len(next(iter(outputs.values())))
        if len(names) == 1:
            return {"predictions": _json_value(outputs[names[0]])}
        columns = {name: _json_value(value) for name, value in outputs.items()}
        return {"predictions": [{name: columns[name][row] for name in names}
                                for row in range(rows)]}
    if len(outputs) == 1:
        return {"outputs": _json_value(next(iter(outputs.values())))}
    return {"outputs": {name: _json_value(value) for name, value in outputs.items()}}


def make_handler(manager: ModelManager, limits: RequestLimits, timeout: float,
                 runner: Optional[Callable] = None, metrics=None,
                 metrics_path: Optional[str] = None):
    """A request handler class bound to one model manager (and, optionally, the batcher that
    runs its signatures, the metrics it records and the path that exposes them)."""
    run = runner or run_signature

    class Handler(BaseHTTPRequestHandler):
        server_version = "dspnet-serving"
        protocol_version = "HTTP/1.1"
        # StreamRequestHandler applies it to the socket: every read (request line, headers,
        # body) of an idle or slow client gives up after this many seconds.
        timeout = None

        def setup(self) -> None:
            self.timeout = timeout
            super().setup()
            self._unread = 0
            self.server.track(self, busy=False)

        def finish(self) -> None:
            try:
                super().finish()
            except OSError:  # the client went away while we flushed
                pass
            finally:
                self.server.untrack(self)

        def handle_one_request(self) -> None:
            try:
                super().handle_one_request()
            except (socket.timeout, ssl.SSLError, ConnectionError) as err:
                # A client that stalls mid-request or drops the connection: nothing to answer.
                LOG.debug("rest %s: connection dropped (%s)", self.client_address[0],
                          type(err).__name__)
                self.close_connection = True

        def log_message(self, fmt: str, *args: Any) -> None:  # quiet: debug level only
            LOG.debug("rest %s - " + fmt, self.address_string(), *args)

        def _send(self, status: int, payload: Mapping[str, Any]) -> None:
            self._send_raw(status, json.dumps(payload).encode("utf-8"), "application/json")

        def _route(self):
            match = _PATH.match(self.path.split("?", 1)[0])
            if not match:
                raise ServingError(grpc.StatusCode.NOT_FOUND,
                                   f"Malformed request: {self.command} {self.path[:200]}")
            version = int(match["version"]) if match["version"] else None
            return match["name"], version, match["label"], match["action"]

        def _body_length(self) -> int:
            """The declared body length; framing we cannot follow closes the connection."""
            if self.headers.get("Transfer-Encoding") is not None:
                self.close_connection = True
                raise ServingError(grpc.StatusCode.UNIMPLEMENTED,
                                   "Transfer-Encoding is not supported; send the body with a "
                                   "Content-Length header")
            values = self.headers.get_all("Content-Length") or []
            if not values:
                return 0
            if len(values) > 1 or not _CONTENT_LENGTH.match(values[0].strip()):
                self.close_connection = True
                raise _bad(f"invalid Content-Length header {', '.join(values)[:40]!r}")
            return int(values[0])

        def _handle(self, method: str) -> None:
            self.server.track(self, busy=True)
            try:
                self._unread = 0
                self._unread = self._body_length()
                if method == "GET" and metrics_path and \
                        self.path.split("?", 1)[0] == metrics_path and metrics is not None:
                    self._send_raw(200, metrics.exposition(), metrics.content_type)
                    return
                name, version, label, action = self._route()
                if method == "GET" and action is None:
                    if label:
                        version = manager.resolve(name, label=label).version
                    response = status_response(manager, name, version)
                    self._send(200, json_format.MessageToDict(
                        response, preserving_proto_field_name=True,
                        including_default_value_fields=True))
                elif method == "GET" and action == "/metadata":
                    loaded = manager.resolve(name, version, label)
                    self._send(200, {
                        "model_spec": {"name": manager.name, "signature_name": "",
                                       "version": str(loaded.version)},
                        "metadata": {"signature_def": {"signature_def": {
                            key: json_format.MessageToDict(value,
                                                           preserving_proto_field_name=True)
                            for key, value in loaded.signature_defs.items()}}},
                    })
                elif method == "POST" and action == ":predict":
                    self._timed_predict(name, version, label)
                else:
                    raise ServingError(grpc.StatusCode.NOT_FOUND,
                                       f"Malformed request: {method} {self.path[:200]}")
            except ServingError as err:
                self._send(err.http_status, {"error": err.message})
            except (socket.timeout, ssl.SSLError, ConnectionError):
                raise  # handle_one_request drops the connection
            except Exception:  # pylint: disable=broad-except
                LOG.exception("REST %s %s failed", method, self.path[:200])
                self._send(500, {"error": "internal error; see server log"})
            finally:
                self.server.track(self, busy=False)

        def _send_raw(self, status: int, data: bytes, content_type: str) -> None:
            if self._unread or self.server.closing:
                # A body we did not read would be parsed as the next request: close instead.
                self.close_connection = True
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(data)

        def _timed_predict(self, name: str, version: Optional[int],
                           label: Optional[str]) -> None:
            started, status = time.monotonic(), "OK"
            try:
                self._predict(name, version, label)
            except ServingError as err:
                status = err.code.name
                raise
            except (socket.timeout, ssl.SSLError, ConnectionError):
                status = "CANCELLED"
                raise
            except Exception:
                status = "INTERNAL"
                raise
            finally:
                if metrics is not None:
                    metrics.record_request(name, "predict", "REST", status,
                                           time.monotonic() - started)

        def _read_body(self, length: int) -> bytes:
            chunks, left = [], length
            while left:
                chunk = self.rfile.read(min(left, 1 << 16))
                if not chunk:
                    raise ConnectionError("the client closed the connection mid-body")
                chunks.append(chunk)
                left -= len(chunk)
            self._unread = 0
            return b"".join(chunks)

        def _predict(self, name: str, version: Optional[int], label: Optional[str]) -> None:
            length = self._unread
            if not self.headers.get("Content-Length"):
                raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                                   "a predict request needs a Content-Length header")
            if length > limits.max_request_bytes:
                raise ServingError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                   f"request of {length} bytes exceeds the server's limit of "
                                   f"{limits.max_request_bytes}")
            # Waiting for a body is not work in flight: shutdown may cut a client that stalls.
            self.server.track(self, busy=False)
            raw = self._read_body(length)
            self.server.track(self, busy=True)
            body = parse_json_body(raw)
            loaded = manager.resolve(name, version, label)
            signature_name, inputs, row_format = decode_predict_request(body, loaded, limits)
            if metrics is not None and inputs:
                metrics.example_counts.labels(name).observe(len(next(iter(inputs.values()))))
            outputs = run(loaded, signature_name, inputs)
            self._send(200, encode_predict_response(outputs, row_format))

        def do_GET(self) -> None:  # noqa: N802
            self._handle("GET")

        def do_POST(self) -> None:  # noqa: N802
            self._handle("POST")

    return Handler


def _busy_reply() -> bytes:
    body = json.dumps({"error": "too many open connections; retry later"}).encode()
    return (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
            b"Connection: close\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n"
            + body)


_BUSY_REPLY = _busy_reply()


class _BoundedHTTPServer(ThreadingHTTPServer):
    """The standard threading HTTP server with bounded connections, a per-connection TLS
    handshake, and a shutdown that lets requests in flight finish.

    `ThreadingHTTPServer` starts one thread per connection without limit and, given a wrapped
    listening socket, runs every TLS handshake inside `accept()` on its one serving thread, so a
    client that never sends a ClientHello stalls all of REST and the shutdown.
    """

    daemon_threads = True  # stop() waits for requests in flight itself, up to its grace

    def __init__(self, address: Tuple[str, int], handler, ssl_context: Optional[ssl.SSLContext],
                 max_connections: int, timeout: float) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.ssl_context = ssl_context
        self.connection_timeout = timeout
        self.closing = False
        self._slots = threading.BoundedSemaphore(max_connections)
        self._handlers: Dict[Any, bool] = {}  # handler -> busy (inside a request)
        self._handshaking: Set[ssl.SSLSocket] = set()
        self._handlers_lock = threading.Lock()
        super().__init__(address, handler)

    def process_request(self, request, client_address) -> None:
        if self.closing or not self._slots.acquire(blocking=False):
            # Refused at once, so a flood of connections costs neither threads nor memory.
            try:
                if self.ssl_context is None:
                    request.settimeout(0.5)
                    request.sendall(_BUSY_REPLY)
            except OSError:
                pass
            self.shutdown_request(request)
            LOG.warning("rest: refused a connection from %s (%s)", client_address[0],
                        "shutting down" if self.closing else "connection limit reached")
            return
        try:
            super().process_request(request, client_address)
        except Exception:  # could not start a thread: give the slot back
            self._slots.release()
            raise

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def finish_request(self, request, client_address) -> None:
        request.settimeout(self.connection_timeout)
        if self.ssl_context is None:
            super().finish_request(request, client_address)
            return
        try:
            connection = self.ssl_context.wrap_socket(request, server_side=True,
                                                      do_handshake_on_connect=False)
        except (OSError, ssl.SSLError) as err:
            LOG.debug("rest %s: TLS setup failed (%s)", client_address[0], err)
            return
        with self._handlers_lock:  # drain() can cut a handshake that waits for the client
            self._handshaking.add(connection)
            closing = self.closing
        try:
            if closing:
                raise OSError("server shutting down")
            connection.do_handshake()  # on this connection's thread, under its timeout
        except (OSError, ssl.SSLError) as err:
            LOG.debug("rest %s: TLS handshake failed (%s)", client_address[0], err)
            connection.close()
            return
        finally:
            with self._handlers_lock:
                self._handshaking.discard(connection)
        try:
            super().finish_request(connection, client_address)
        finally:
            try:
                connection.close()
            except OSError:
                pass

    def track(self, handler, busy: bool) -> None:
        with self._handlers_lock:
            self._handlers[handler] = busy
            if self.closing and not busy:
                handler.close_connection = True

    def untrack(self, handler) -> None:
        with self._handlers_lock:
            self._handlers.pop(handler, None)

    def drain(self, grace: float) -> None:
        """Closes idle connections now and waits up to `grace` s for requests in flight."""
        with self._handlers_lock:
            self.closing = True
            idle = [handler.connection for handler, busy in self._handlers.items() if not busy]
            idle += list(self._handshaking)
        for connection in idle:
            try:  # wakes the thread blocked reading from it; it then exits
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            with self._handlers_lock:
                if not self._handlers and not self._handshaking:
                    return
            time.sleep(0.02)
        with self._handlers_lock:
            left = len(self._handlers) + len(self._handshaking)
        LOG.warning("rest: %d connection(s) still open after %.1f s of grace; closing", left,
                    grace)


class RestServer:
    """The REST front end in a background thread; `port=0` picks a free port.

    Args:
      manager, limits: what to serve and the request limits (shared with gRPC).
      host, port: where to listen (an IPv6 host such as "::1" listens on IPv6).
      ssl_context: TLS for every connection (handshake per connection, under `timeout`).
      max_connections: open connections at most (one thread each); more get 503 at once.
      timeout: seconds any read may wait (idle keep-alive, slow headers, missing body).
      runner: runs a signature on validated inputs (default `run_signature`; a `Batcher`'s
        `run` when batching).
      metrics, metrics_path: a `ServingMetrics` to record requests in, and the GET path that
        exposes it in the Prometheus text format (None: not exposed).
    """

    def __init__(self, manager: ModelManager, host: str, port: int, limits: RequestLimits,
                 ssl_context: Optional[ssl.SSLContext] = None, max_connections: int = 64,
                 timeout: float = 10.0, runner: Optional[Callable] = None, metrics=None,
                 metrics_path: Optional[str] = None) -> None:
        if max_connections < 1 or timeout <= 0:
            raise ValueError(f"REST needs max_connections >= 1 and timeout > 0, got "
                             f"{max_connections} and {timeout}")
        handler = make_handler(manager, limits, timeout, runner, metrics, metrics_path)
        self.httpd = _BoundedHTTPServer((host, port), handler, ssl_context, max_connections,
                                        timeout)
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="rest-server",
                                        daemon=True)

    def start(self) -> None:
        """Starts serving in a daemon thread and returns at once."""
        self._thread.start()

    def stop(self, grace: float = 5.0) -> None:
        """Stops accepting, closes idle connections, lets requests in flight finish."""
        self.httpd.shutdown()
        self.httpd.drain(grace)
        self.httpd.server_close()
