"""What a slow, hostile or unlucky client can do to the server: each test is one finding of
the outside review (issue 37) and fails on the code before its fix."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time

import grpc
import numpy as np
import portpicker
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2

from serving import grpc_service, rest
from serving.client import DSPnetClient
from serving.errors import ServingError
from serving.model_manager import ModelManager, model_versions
from serving.prediction import RequestLimits, tensor_proto_to_array
from serving.server import ModelServer, ServerOptions
from serving.testing import install_version, write_test_pki

VALID = (["i00001", "i00002", "i00003"], ["feed", "search", "live"])
PREDICT_BODY = json.dumps({"signature_name": "predict_raw", "instances": [
    {"item_history": VALID[0], "scene_history": VALID[1]}]}).encode()


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return write_test_pki(str(tmp_path_factory.mktemp("pki")))


@pytest.fixture(scope="module")
def base(exported_versions, tmp_path_factory):
    folder = tmp_path_factory.mktemp("hardening-base")
    install_version(str(folder), 1, exported_versions[1])
    return str(folder)


def _options(base, **overrides) -> ServerOptions:
    settings = dict(model_base_path=base, port=0, rest_port=0, poll_seconds=0,
                    rest_timeout=3.0, rest_max_connections=64)
    settings.update(overrides)
    return ServerOptions(**settings)


def _tls(pki, **overrides):
    return dict(tls_cert=pki["server.pem"], tls_key=pki["server.key"], **overrides)


def _https(pki, port, timeout=5.0):
    context = ssl.create_default_context(cafile=pki["ca.pem"])
    return http.client.HTTPSConnection("127.0.0.1", port, timeout=timeout, context=context)


def _rest_predict(connection) -> tuple:
    connection.request("POST", "/v1/models/dspnet:predict", body=PREDICT_BODY,
                       headers={"Content-Type": "application/json"})
    response = connection.getresponse()
    return response.status, json.loads(response.read())


def _raw(port, payload: bytes, wait: float = 5.0) -> bytes:
    """Sends bytes on one plaintext connection and returns all it gets until the server
    closes it (or `wait` s pass)."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as sock:
        sock.sendall(payload)
        received = b""
        try:
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                received += chunk
        except socket.timeout:
            received += b"<still open>"
    return received


def _slow_clients(port, pki=None, count=50):
    """`count` connections that hold on: a third never send a byte (no TLS ClientHello
    either), a third stop in the middle of the headers, a third promise a body they never send.
    """
    held = []
    for index in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        kind = index % 3
        if kind and pki is not None:
            context = ssl.create_default_context(cafile=pki["ca.pem"])
            sock = context.wrap_socket(sock, server_hostname="127.0.0.1")
        if kind == 1:
            sock.sendall(b"POST /v1/models/dspnet:predict HTTP/1.1\r\nHost: x\r\n")
        elif kind == 2:
            sock.sendall(b"POST /v1/models/dspnet:predict HTTP/1.1\r\nHost: x\r\n"
                         b"Content-Length: 100\r\n\r\n{")
        held.append(sock)
    return held


@pytest.mark.parametrize("use_tls", [False, True], ids=["plaintext", "tls"])
def test_fifty_slow_rest_clients_do_not_delay_a_normal_client(base, pki, use_tls):
    options = _options(base, rest_timeout=30.0, **(_tls(pki) if use_tls else {}))
    with ModelServer(options) as server:
        held = _slow_clients(server.rest_port, pki if use_tls else None)
        try:
            time.sleep(0.3)  # the server has accepted them all
            started = time.monotonic()
            connection = (_https(pki, server.rest_port) if use_tls else
                          http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=5))
            status, body = _rest_predict(connection)
            rest_seconds = time.monotonic() - started
            connection.close()
            started = time.monotonic()
            client = (DSPnetClient(f"127.0.0.1:{server.port}", root_certificates=pki["ca.pem"])
                      if use_tls else DSPnetClient(f"127.0.0.1:{server.port}"))
            with client:
                answer = client.recommend(*VALID)
            grpc_seconds = time.monotonic() - started
        finally:
            for sock in held:
                sock.close()
    print(f"with 50 slow clients ({'TLS' if use_tls else 'plaintext'}): REST answered in "
          f"{rest_seconds:.3f} s, gRPC in {grpc_seconds:.3f} s")
    assert status == 200 and body["predictions"][0]["item_ids"][:5] == answer.items[:5]
    assert rest_seconds < 1.0, rest_seconds
    assert grpc_seconds < 1.0, grpc_seconds


def test_connections_beyond_the_limit_get_503_and_idle_ones_time_out(base):
    with ModelServer(_options(base, rest_max_connections=4, rest_timeout=0.5)) as server:
        idle = [socket.create_connection(("127.0.0.1", server.rest_port)) for _ in range(4)]
        time.sleep(0.1)
        refused = _raw(server.rest_port, b"GET /v1/models/dspnet HTTP/1.1\r\nHost: x\r\n\r\n")
        assert refused.startswith(b"HTTP/1.1 503") and b"too many open connections" in refused
        for sock in idle:  # the server drops each after its timeout
            sock.settimeout(3)
            assert sock.recv(100) == b""
            sock.close()
        answered = _raw(server.rest_port, b"GET /v1/models/dspnet HTTP/1.1\r\nHost: x\r\n"
                                          b"Connection: close\r\n\r\n")
        assert answered.startswith(b"HTTP/1.1 200")


def test_a_promised_body_that_never_comes_drops_the_connection(base):
    with ModelServer(_options(base, rest_timeout=0.5)) as server:
        started = time.monotonic()
        got = _raw(server.rest_port, b"POST /v1/models/dspnet:predict HTTP/1.1\r\nHost: x\r\n"
                                     b"Content-Length: 50\r\n\r\n{\"inst", wait=5)
        assert got == b"" and time.monotonic() - started < 3


def test_an_unread_body_is_never_parsed_as_the_next_request(base):
    smuggled = b"GET /v1/models/dspnet HTTP/1.1\r\nHost: x\r\n\r\n"
    with ModelServer(_options(base)) as server:
        # POST to the metadata path is refused before the body is read.
        got = _raw(server.rest_port, b"POST /v1/models/dspnet/metadata HTTP/1.1\r\nHost: x\r\n"
                                     b"Content-Length: %d\r\n\r\n" % len(smuggled) + smuggled)
        too_big = _raw(server.rest_port,
                       b"POST /v1/models/dspnet:predict HTTP/1.1\r\nHost: x\r\n"
                       b"Content-Length: 99999999\r\n\r\n" + smuggled)
    assert got.count(b"HTTP/1.1 ") == 1 and got.startswith(b"HTTP/1.1 404")
    assert b"Connection: close" in got
    assert too_big.count(b"HTTP/1.1 ") == 1 and too_big.startswith(b"HTTP/1.1 429")


@pytest.mark.parametrize("headers,status", [
    (b"Transfer-Encoding: chunked\r\n", b"501"),
    (b"Content-Length: +10\r\n", b"400"),
    (b"Content-Length: 10\r\nContent-Length: 12\r\n", b"400"),
], ids=["chunked", "plus-sign", "two-lengths"])
def test_body_framing_we_cannot_follow_is_refused_and_closes(base, headers, status):
    with ModelServer(_options(base)) as server:
        got = _raw(server.rest_port, b"POST /v1/models/dspnet:predict HTTP/1.1\r\nHost: x\r\n"
                   + headers + b"\r\n0123456789ab" + b"GET /v1/models/dspnet HTTP/1.1\r\n\r\n")
    assert got.startswith(b"HTTP/1.1 " + status) and got.count(b"HTTP/1.1 ") == 1


@pytest.mark.parametrize("body,needle", [
    (b"[" * 5000 + b"]" * 5000, "nested deeper"),
    (b'{"instances": [' + b"7" * 5000 + b"]}", "digits"),
], ids=["deep-nesting", "5000-digit-int"])
def test_expensive_json_is_invalid_argument_not_a_500(base, body, needle, caplog):
    with ModelServer(_options(base)) as server:
        connection = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=10)
        connection.request("POST", "/v1/models/dspnet:predict", body=body)
        response = connection.getresponse()
        payload = json.loads(response.read())
    assert response.status == 400 and needle in payload["error"]
    assert not any(record.exc_info for record in caplog.records)


def test_tls_handshake_stall_does_not_block_sigterm_shutdown(base, pki, tmp_path):
    port, rest_port = portpicker.pick_unused_port(), portpicker.pick_unused_port()
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    process = subprocess.Popen(
        [sys.executable, "-m", "dspnet_tf.cli", "serve", "--model-base-path", base,
         "--port", str(port), "--rest-port", str(rest_port), "--tls-cert", pki["server.pem"],
         "--tls-key", pki["server.key"], "--rest-timeout", "60"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    held = []
    try:
        with DSPnetClient(f"127.0.0.1:{port}", root_certificates=pki["ca.pem"]) as client:
            client.wait_until_ready(timeout=120)
            held = _slow_clients(rest_port, pki)
            time.sleep(0.3)
            started = time.monotonic()
            status, _ = _rest_predict(_https(pki, rest_port))
            assert status == 200 and time.monotonic() - started < 1.0
            started = time.monotonic()
            client.recommend(*VALID)
            assert time.monotonic() - started < 1.0
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
        stop_seconds = time.monotonic() - started
    finally:
        for sock in held:
            sock.close()
        if process.poll() is None:
            process.kill()
    print(f"SIGTERM with 50 slow TLS clients: stopped in {stop_seconds:.2f} s")
    assert process.returncode == 0, output
    assert stop_seconds < 5.0, (stop_seconds, output[-2000:])


def test_rest_requests_in_flight_finish_before_stop_returns(base, monkeypatch):
    real = rest.run_signature

    def slow(*args, **kwargs):
        time.sleep(1.0)
        return real(*args, **kwargs)

    monkeypatch.setattr(rest, "run_signature", slow)
    server = ModelServer(_options(base)).start()
    answers = []

    def ask():
        connection = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=10)
        answers.append(_rest_predict(connection)[0])

    thread = threading.Thread(target=ask)
    thread.start()
    time.sleep(0.3)
    server.stop(grace=5)
    assert answers == [200]  # answered before stop() returned, not cut off at exit
    thread.join()


def test_tls_flags_that_would_fall_back_to_plaintext_are_refused(base, pki):
    with pytest.raises(ValueError, match="tls-client-ca needs TLS"):
        ModelServer(_options(base, tls_client_ca=pki["ca.pem"]))
    with pytest.raises(ValueError, match="needs TLS"):
        DSPnetClient("127.0.0.1:1", client_certificate=pki["client.pem"],
                     client_key=pki["client.key"])
    with pytest.raises(ValueError, match="needs its key"):
        DSPnetClient("127.0.0.1:1", root_certificates=pki["ca.pem"],
                     client_certificate=pki["client.pem"])


def test_serve_cli_refuses_client_ca_without_tls(base, pki, capsys):
    from dspnet_tf import cli

    assert cli.main(["serve", "--model-base-path", base, "--port", "0", "--rest-port", "-1",
                     "--tls-client-ca", pki["ca.pem"]]) == 2
    assert "--tls-client-ca needs TLS" in capsys.readouterr().err


def test_a_one_value_tensor_claiming_a_large_shape_is_refused_before_allocation(
        base, monkeypatch):
    conversions = []
    real = tf.make_ndarray
    monkeypatch.setattr(tf, "make_ndarray", lambda proto: conversions.append(1) or real(proto))
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "dspnet"
    request.model_spec.signature_name = "predict_raw"
    for name in ("item_history", "scene_history"):
        tensor = request.inputs[name]
        tensor.dtype = tf.string.as_datatype_enum
        tensor.tensor_shape.dim.add().size = 1024
        tensor.tensor_shape.dim.add().size = 2048
        tensor.string_val.append(b"i00001")
    assert len(request.inputs["item_history"].SerializeToString()) < 40
    with ModelServer(_options(base, rest_port=None)) as server:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            from tensorflow_serving.apis import prediction_service_pb2_grpc

            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            with pytest.raises(grpc.RpcError) as refused:
                stub.Predict(request, timeout=10)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "needs 2097152 values, got 1" in refused.value.details()
    assert conversions == []


@pytest.mark.parametrize("dtype,field", [(tf.int64, "int64_val"), (tf.int32, "int_val"),
                                         (tf.float32, "float_val")])
def test_numeric_tensors_must_carry_every_value_they_claim(dtype, field):
    proto = tf.make_tensor_proto(np.zeros([2, 3], dtype.as_numpy_dtype))
    proto.ClearField("tensor_content")
    getattr(proto, field).append(0)
    with pytest.raises(ServingError) as refused:
        tensor_proto_to_array("x", proto, dtype.as_datatype_enum, 2, RequestLimits())
    assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT
    full = tf.make_tensor_proto(np.arange(6, dtype=dtype.as_numpy_dtype).reshape(2, 3))
    np.testing.assert_array_equal(
        tensor_proto_to_array("x", full, dtype.as_datatype_enum, 2, RequestLimits()),
        np.arange(6).reshape(2, 3))


class _ExpiredContext:
    """A gRPC servicer context whose deadline has passed."""

    def time_remaining(self):
        return 0.0

    def is_active(self):
        return True

    def abort(self, code, details):
        raise grpc.RpcError(code, details)


def test_a_request_past_its_deadline_does_not_run_the_model(base, monkeypatch):
    runs = []
    monkeypatch.setattr(grpc_service, "run_signature", lambda *a, **k: runs.append(1))
    manager = ModelManager("dspnet", base, poll_seconds=0)
    manager.start()
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "dspnet"
    request.inputs["examples"].CopyFrom(tf.make_tensor_proto([b""]))
    service = grpc_service.PredictionService(manager, RequestLimits())
    with pytest.raises(grpc.RpcError) as refused:
        service.Predict(request, _ExpiredContext())
    assert refused.value.args[0] == grpc.StatusCode.DEADLINE_EXCEEDED
    assert runs == []


def test_version_folder_names_that_are_not_int64_numbers_are_skipped(exported_versions,
                                                                     tmp_path):
    install_version(str(tmp_path), 1, exported_versions[1])
    for name in ("²", "01", "99999999999999999999", "٣"):
        shutil.copytree(exported_versions[2], tmp_path / name)
    assert model_versions(str(tmp_path)) == {1: str(tmp_path / "1")}
    with ModelServer(_options(str(tmp_path), rest_port=None)) as server:
        assert server.manager.serving_versions == [1]


def _corrupt(path: str) -> bytes:
    """Overwrites saved_model.pb with garbage of the same size; returns the good bytes."""
    pb = os.path.join(path, "saved_model.pb")
    with open(pb, "rb") as handle:
        good = handle.read()
    with open(pb, "wb") as handle:
        handle.write(b"\x00garbage" * (len(good) // 8) + b"\x00" * (len(good) % 8))
    return good


def test_a_refused_version_rewritten_with_same_size_and_mtime_is_retried(exported_versions,
                                                                          tmp_path):
    install_version(str(tmp_path), 1, exported_versions[1])
    path = install_version(str(tmp_path), 2, exported_versions[2])
    good = _corrupt(path)
    manager = ModelManager("dspnet", str(tmp_path), poll_seconds=0)
    manager.start()
    assert manager.serving_versions == [1]
    status = {s.version: s for s in manager.statuses("dspnet")}[2]
    assert status.error_message and str(tmp_path) not in status.error_message
    pb = os.path.join(path, "saved_model.pb")
    before = os.stat(pb)
    time.sleep(0.02)
    with open(pb, "wb") as handle:  # fixed in place; size and mtime set back as they were
        handle.write(good)
    os.utime(pb, ns=(before.st_atime_ns, before.st_mtime_ns))
    manager.poll()
    assert manager.serving_versions == [2]


def test_a_copy_that_completes_while_a_load_fails_is_retried(exported_versions, tmp_path,
                                                            monkeypatch):
    path = install_version(str(tmp_path), 1, exported_versions[1])
    good = _corrupt(path)
    real_load = tf.saved_model.load

    def load_while_the_copy_finishes(export_dir, *args, **kwargs):
        monkeypatch.setattr(tf.saved_model, "load", real_load)
        with open(os.path.join(export_dir, "saved_model.pb"), "wb") as handle:
            handle.write(good)  # the copy completes while the failed load unwinds
        raise OSError("truncated file")

    monkeypatch.setattr(tf.saved_model, "load", load_while_the_copy_finishes)
    manager = ModelManager("dspnet", str(tmp_path), poll_seconds=0)
    manager.start()
    assert manager.serving_versions == []
    manager.poll()
    assert manager.serving_versions == [1]


def test_not_found_messages_do_not_reveal_server_paths(tmp_path):
    manager = ModelManager("dspnet", str(tmp_path), poll_seconds=0)
    with pytest.raises(ServingError) as missing:
        manager.resolve("dspnet")
    assert missing.value.code == grpc.StatusCode.NOT_FOUND
    assert str(tmp_path) not in missing.value.message


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _ipv6_loopback(), reason="this machine has no IPv6 loopback")
def test_an_ipv6_host_serves_grpc_and_rest(base):
    with ModelServer(_options(base, host="::1")) as server:
        with DSPnetClient(f"[::1]:{server.port}") as client:
            assert len(client.recommend(*VALID).items) > 0
        connection = http.client.HTTPConnection("::1", server.rest_port, timeout=5)
        connection.request("GET", "/v1/models/dspnet")
        assert connection.getresponse().status == 200
