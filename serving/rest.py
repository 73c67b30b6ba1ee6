"""TF Serving's REST API over a `ModelManager`.

  GET  /v1/models/{name}[/versions/{v}|/labels/{l}]             model status
  GET  /v1/models/{name}[/versions/{v}|/labels/{l}]/metadata    signature defs
  POST /v1/models/{name}[/versions/{v}|/labels/{l}]:predict     row ("instances") or
                                                                columnar ("inputs") format

Request and response JSON follow TF Serving's REST API: binary strings as {"b64": ...}, errors
as {"error": message} with the HTTP status of the gRPC code. Written on the standard library's
threading HTTP server because TF Serving's own REST front end is part of the C++ binary.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, List, Mapping, Optional, Tuple

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
                   r"(?:/versions/(?P<version>\d+)|/labels/(?P<label>[^/:]+))?"
                   r"(?P<action>/metadata|:predict)?$")


def _bad(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.INVALID_ARGUMENT, message)


def _decode_value(value: Any) -> Any:
    """JSON value -> nested lists with {"b64": ...} decoded to bytes and text to UTF-8 bytes."""
    if isinstance(value, dict):
        if set(value) == {"b64"} and isinstance(value["b64"], str):
            try:
                return base64.b64decode(value["b64"], validate=True)
            except ValueError:
                raise _bad("a {\"b64\": ...} value is not valid base64") from None
        raise _bad(f"unexpected object {sorted(value)[:5]} where a tensor value was expected")
    if isinstance(value, list):
        return [_decode_value(v) for v in value]
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


def make_handler(manager: ModelManager, limits: RequestLimits):
    """A request handler class bound to one model manager."""

    class Handler(BaseHTTPRequestHandler):
        server_version = "dspnet-serving"
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt: str, *args: Any) -> None:  # quiet: debug level only
            LOG.debug("rest %s - " + fmt, self.address_string(), *args)

        def _send(self, status: int, payload: Mapping[str, Any]) -> None:
            data = json.dumps(payload).encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _route(self):
            match = _PATH.match(self.path.split("?", 1)[0])
            if not match:
                raise ServingError(grpc.StatusCode.NOT_FOUND,
                                   f"Malformed request: {self.command} {self.path[:200]}")
            version = int(match["version"]) if match["version"] else None
            return match["name"], version, match["label"], match["action"]

        def _handle(self, method: str) -> None:
            try:
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
                    self._predict(name, version, label)
                else:
                    raise ServingError(grpc.StatusCode.NOT_FOUND,
                                       f"Malformed request: {method} {self.path[:200]}")
            except ServingError as err:
                self._send(err.http_status, {"error": err.message})
            except Exception:  # pylint: disable=broad-except
                LOG.exception("REST %s %s failed", method, self.path[:200])
                self._send(500, {"error": "internal error; see server log"})

        def _predict(self, name: str, version: Optional[int], label: Optional[str]) -> None:
            try:
                length = int(self.headers.get("Content-Length", "-1"))
            except ValueError:
                length = -1
            if length < 0:
                raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                                   "a predict request needs a Content-Length header")
            if length > limits.max_request_bytes:
                self.close_connection = True  # do not read a body we refuse
                raise ServingError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                   f"request of {length} bytes exceeds the server's limit of "
                                   f"{limits.max_request_bytes}")
            raw = self.rfile.read(length)
            try:
                body = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError) as err:
                raise _bad(f"request body is not valid JSON: {err}") from None
            loaded = manager.resolve(name, version, label)
            signature_name, inputs, row_format = decode_predict_request(body, loaded, limits)
            outputs = run_signature(loaded, signature_name, inputs)
            self._send(200, encode_predict_response(outputs, row_format))

        def do_GET(self) -> None:  # noqa: N802
            self._handle("GET")

        def do_POST(self) -> None:  # noqa: N802
            self._handle("POST")

    return Handler


class RestServer:
    """The REST front end in a background thread; `port=0` picks a free port."""

    def __init__(self, manager: ModelManager, host: str, port: int, limits: RequestLimits,
                 ssl_context: Optional[ssl.SSLContext] = None) -> None:
        self.httpd = ThreadingHTTPServer((host, port), make_handler(manager, limits))
        self.httpd.daemon_threads = True
        if ssl_context is not None:
            self.httpd.socket = ssl_context.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="rest-server",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
