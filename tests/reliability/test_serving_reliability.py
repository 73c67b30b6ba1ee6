"""Serving under hostile input, broken versions and TLS: nothing crashes, nothing leaks."""

from __future__ import annotations

import logging
import os
import threading
import time

import grpc
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tensorflow_serving.apis import predict_pb2

from serving.client import DSPnetClient, make_example
from serving.server import ModelServer, ServerOptions
from serving.testing import install_version, write_test_pki

pytestmark = pytest.mark.reliability
FUZZED = []
VALID = (["i00001", "i00002", "i00003"], ["feed", "search", "live"])
FORBIDDEN = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}


def _expected(path):
    out = tf.saved_model.load(path).signatures["serving_default"](
        examples=tf.constant([make_example(*VALID)]))
    return [x.decode() for x in out["item_ids"].numpy()[0]]


BYSTANDER = {"answers": 0, "wrong": [], "stop": threading.Event()}


@pytest.fixture(scope="module")
def fuzz_server(exported_versions, tmp_path_factory):
    """The fuzzing target, with a bystander client asking a valid question all along."""
    base = tmp_path_factory.mktemp("fuzz-base")
    install_version(str(base), 1, exported_versions[1])
    expected = _expected(exported_versions[1])
    with ModelServer(ServerOptions(model_base_path=str(base), port=0, rest_port=None,
                                   poll_seconds=0)) as server:
        def bystander():
            with DSPnetClient(f"127.0.0.1:{server.port}", timeout=30) as client:
                while not BYSTANDER["stop"].is_set():
                    try:
                        items = client.recommend(*VALID).items
                    except grpc.RpcError as err:
                        items = f"{err.code()}: {err.details()}"
                    BYSTANDER["answers"] += 1
                    if items != expected:
                        BYSTANDER["wrong"].append(items)
                    time.sleep(0.02)

        thread = threading.Thread(target=bystander, daemon=True)
        thread.start()
        yield server
        BYSTANDER["stop"].set()
        thread.join()


_text = st.text(max_size=12)
_bytes = st.binary(max_size=64)
_valid_example = make_example(*VALID)


@st.composite
def _mutated_example(draw):
    data = bytearray(_valid_example)
    for _ in range(draw(st.integers(1, 8))):
        position = draw(st.integers(0, len(data) - 1))
        data[position] = draw(st.integers(0, 255))
    cut = draw(st.integers(0, len(data)))
    return bytes(data[:cut]) if draw(st.booleans()) else bytes(data)


@st.composite
def _random_example(draw):
    n = draw(st.integers(0, 12))
    m = draw(st.sampled_from([n, n, n + 1, max(n - 1, 0)]))
    items = draw(st.lists(st.sampled_from(["i00001", "i00039", "", "x" * 300, "\u00e9\u4e2d"]),
                          min_size=n, max_size=n))
    scenes = draw(st.lists(st.sampled_from(["feed", "live", "", "?"]), min_size=m, max_size=m))
    example = tf.train.Example()
    example.features.feature["item_history"].bytes_list.value.extend(x.encode() for x in items)
    if draw(st.booleans()):
        example.features.feature["scene_history"].bytes_list.value.extend(
            x.encode() for x in scenes)
    if draw(st.booleans()):
        example.features.feature["target_scene"].int64_list.value.append(3)
    return example.SerializeToString()


@st.composite
def _request(draw):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = draw(st.sampled_from(["dspnet", "dspnet", "dspnet", "", "x"]))
    if draw(st.booleans()):
        request.model_spec.version.value = draw(st.sampled_from([1, 1, 2, -1, 2**62]))
    request.model_spec.signature_name = draw(st.sampled_from(
        ["", "serving_default", "predict_raw", "transform_features", "evaluate_ranking",
         "__saved_model_init_op", "nope"]))
    kind = draw(st.sampled_from(["examples", "raw", "random"]))
    if kind == "examples":
        values = draw(st.lists(st.one_of(_mutated_example(), _random_example(), _bytes),
                               min_size=0, max_size=4))
        request.inputs["examples"].CopyFrom(tf.make_tensor_proto(values, dtype=tf.string,
                                                                 shape=[len(values)]))
    elif kind == "raw":
        rows, cols = draw(st.integers(0, 3)), draw(st.integers(0, 5))
        for name in draw(st.sampled_from([["item_history", "scene_history"], ["item_history"],
                                          ["item_history", "scene_history", "extra"]])):
            cells = draw(st.lists(_text, min_size=rows * cols, max_size=rows * cols))
            request.inputs[name].CopyFrom(tf.make_tensor_proto(
                [c.encode() for c in cells], dtype=tf.string, shape=[rows, cols]))
    else:
        name = draw(st.sampled_from(["examples", "item_history", "weird"]))
        proto = request.inputs[name]
        proto.dtype = draw(st.sampled_from([1, 3, 7, 9, 10, 0, 99]))
        for size in draw(st.lists(st.integers(-2, 10**12), max_size=3)):
            proto.tensor_shape.dim.add(size=size)
        proto.string_val.extend(draw(st.lists(_bytes, max_size=3)))
        if draw(st.booleans()):
            proto.tensor_content = draw(_bytes)
    if draw(st.booleans()):
        request.output_filter.extend(draw(st.lists(st.sampled_from(
            ["item_ids", "scene_probs", "nope"]), max_size=2)))
    return request


@settings(max_examples=2000, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(request=_request())
def test_fuzzed_requests_never_get_internal_or_unknown(fuzz_server, request):
    stub_client = DSPnetClient(f"127.0.0.1:{fuzz_server.port}", timeout=30)
    try:
        stub_client.predictions.Predict(request, timeout=30)
        FUZZED.append(grpc.StatusCode.OK)
    except grpc.RpcError as err:
        FUZZED.append(err.code())
        assert err.code() not in FORBIDDEN, (err.code(), err.details(), request)
    finally:
        stub_client.close()


def test_after_the_fuzzing_a_valid_request_is_answered_correctly(fuzz_server, exported_versions):
    # A client asking all along always got the right answer: hostile requests changed nothing.
    assert BYSTANDER["answers"] > 0 and not BYSTANDER["wrong"], BYSTANDER["wrong"][:3]
    if FUZZED:  # (empty when this test runs alone)
        from collections import Counter

        print(f"{len(FUZZED)} fuzzed requests: "
              + ", ".join(f"{code.name} {n}" for code, n in Counter(FUZZED).most_common())
              + f"; bystander answers {BYSTANDER['answers']}, wrong {len(BYSTANDER['wrong'])}")
        assert len(FUZZED) >= 2000
        # The fuzzer reached both sides: answered requests and refused ones.
        assert FUZZED.count(grpc.StatusCode.OK) > 20
        assert FUZZED.count(grpc.StatusCode.INVALID_ARGUMENT) > 20
        assert FUZZED.count(grpc.StatusCode.NOT_FOUND) > 20
    with DSPnetClient(f"127.0.0.1:{fuzz_server.port}") as client:
        assert client.recommend(*VALID).items == _expected(exported_versions[1])


def _corrupt_copy(source, target_base, version):
    path = install_version(target_base, version, source)
    variables = os.path.join(path, "variables")
    for name in os.listdir(variables):
        if name.startswith("variables.data"):
            file_path = os.path.join(variables, name)
            size = os.path.getsize(file_path)
            with open(file_path, "r+b") as handle:
                handle.write(np.random.default_rng(0).bytes(size))
    return path


def test_a_corrupt_version_is_refused_under_load_and_a_good_one_then_served(
        exported_versions, tmp_path, caplog):
    base = tmp_path / "base"
    base.mkdir()
    install_version(str(base), 1, exported_versions[1])
    first, good = _expected(exported_versions[1]), _expected(exported_versions[2])
    caplog.set_level(logging.INFO, logger="dspnet.serving")
    with ModelServer(ServerOptions(model_base_path=str(base), port=0, rest_port=None,
                                   poll_seconds=0.3)) as server:
        target = f"127.0.0.1:{server.port}"
        answers, failures, stop = [], [], threading.Event()

        def keep_asking():
            with DSPnetClient(target, timeout=30) as client:
                while not stop.is_set():
                    try:
                        answer = client.recommend(*VALID)
                        answers.append((answer.model_version, answer.items))
                    except grpc.RpcError as err:
                        failures.append(err)

        clients = [threading.Thread(target=keep_asking) for _ in range(8)]
        for thread in clients:
            thread.start()
        time.sleep(1.0)
        _corrupt_copy(exported_versions[2], str(base), 2)
        deadline = time.monotonic() + 60
        with DSPnetClient(target) as probe:
            while time.monotonic() < deadline:
                states = {s["version"]: s for s in probe.status()}
                if 2 in states and states[2]["state"] == "END":
                    break
                time.sleep(0.1)
            assert states[2]["state"] == "END" and "refused" in states[2]["error"]
            assert states[1]["state"] == "AVAILABLE"
            time.sleep(1.0)  # still serving version 1 under load
            install_version(str(base), 3, exported_versions[2])
            while time.monotonic() < deadline and probe.wait_until_ready(10) != 3:
                time.sleep(0.1)
        time.sleep(1.0)
        stop.set()
        for thread in clients:
            thread.join()
    assert not failures, failures[:3]
    assert {version for version, _ in answers} == {1, 3}
    assert all(items == (first if version == 1 else good) for version, items in answers)
    assert any("refused version 2" in record.getMessage() for record in caplog.records)


def test_tls_right_ca_connects_and_wrong_ca_is_refused(exported_versions, tmp_path):
    pki = write_test_pki(str(tmp_path))
    base = tmp_path / "base"
    base.mkdir()
    install_version(str(base), 1, exported_versions[1])
    options = ServerOptions(model_base_path=str(base), port=0, rest_port=None, poll_seconds=0,
                            tls_cert=pki["server.pem"], tls_key=pki["server.key"])
    with ModelServer(options) as server:
        target = f"127.0.0.1:{server.port}"
        with DSPnetClient(target, root_certificates=pki["ca.pem"]) as client:
            assert client.recommend(*VALID).items == _expected(exported_versions[1])
        with DSPnetClient(target, root_certificates=pki["other-ca.pem"], timeout=5) as client:
            with pytest.raises(grpc.RpcError) as refused:
                client.recommend(*VALID)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        with DSPnetClient(target, timeout=5) as plaintext:  # no TLS at all
            with pytest.raises(grpc.RpcError):
                plaintext.recommend(*VALID)


def test_request_limits_refuse_with_a_message(exported_versions, tmp_path):
    from serving.prediction import RequestLimits

    base = tmp_path / "base"
    base.mkdir()
    install_version(str(base), 1, exported_versions[1])
    limits = RequestLimits(max_request_bytes=64 * 1024, max_batch_size=4, max_history=16,
                           max_example_bytes=2_000)
    with ModelServer(ServerOptions(model_base_path=str(base), port=0, rest_port=0,
                                   poll_seconds=0, limits=limits)) as server, \
            DSPnetClient(f"127.0.0.1:{server.port}") as client:
        cases = {
            "batch": lambda: client.recommend_batch([VALID[0]] * 5, [VALID[1]] * 5),
            "example size": lambda: client.recommend(["i00001"] * 400, ["feed"] * 400),
            "request size": lambda: client.predict([b"x" * 1000] * 100),
        }
        codes = {}
        for name, call in cases.items():
            with pytest.raises(grpc.RpcError) as caught:
                call()
            codes[name] = (caught.value.code(), caught.value.details())
        assert codes["batch"][0] == grpc.StatusCode.INVALID_ARGUMENT
        assert "max batch size 4" in codes["batch"][1]
        assert codes["example size"][0] == grpc.StatusCode.INVALID_ARGUMENT
        assert "limit of 2000" in codes["example size"][1]
        assert codes["request size"][0] == grpc.StatusCode.RESOURCE_EXHAUSTED
        raw = predict_pb2.PredictRequest()
        raw.model_spec.name, raw.model_spec.signature_name = "dspnet", "predict_raw"
        for name in ("item_history", "scene_history"):
            raw.inputs[name].CopyFrom(tf.make_tensor_proto([[b"i00001"] * 17], dtype=tf.string))
        with pytest.raises(grpc.RpcError) as caught:
            client.predictions.Predict(raw)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "history length 17" in caught.value.details()
        # REST: an oversized body is refused before it is read; broken JSON is a 400.
        import http.client

        connection = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=10)
        connection.request("POST", "/v1/models/dspnet:predict", body=b"{" * 10,
                           headers={"Content-Length": str(10 ** 9)})
        response = connection.getresponse()
        assert response.status == 429 and b"exceeds" in response.read()
        connection = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=10)
        connection.request("POST", "/v1/models/dspnet:predict", body=b"{not json")
        response = connection.getresponse()
        assert response.status == 400 and b"not valid JSON" in response.read()
        # ...and the server still answers correctly.
        assert client.recommend(*VALID).items == _expected(exported_versions[1])


def test_serving_code_never_unpickles_or_evaluates_request_data():
    import pathlib

    import serving

    sources = {path.name: path.read_text()
               for path in pathlib.Path(serving.__file__).parent.glob("*.py")}
    assert sources, "no serving sources found"
    for name, text in sources.items():
        for forbidden in ("pickle", "dill", "eval(", "exec(", "marshal", "yaml.load("):
            assert forbidden not in text, f"{name} uses {forbidden}"


def test_a_version_copied_file_by_file_is_refused_until_complete_then_served(
        exported_versions, tmp_path):
    """A non-atomic copy (saved_model.pb before the variables) is retried when its files change."""
    import shutil

    from serving.model_manager import ModelManager

    base = tmp_path / "base"
    base.mkdir()
    install_version(str(base), 1, exported_versions[1])
    manager = ModelManager("dspnet", str(base), poll_seconds=0)
    manager.poll()
    partial = base / "2"
    partial.mkdir()
    shutil.copy(os.path.join(exported_versions[2], "saved_model.pb"), partial)
    manager.poll()
    states = {s.version: s for s in manager.statuses("dspnet")}
    assert states[2].state == "END" and states[2].error_code == grpc.StatusCode.DATA_LOSS
    assert manager.serving_versions == [1]
    for name in ("variables", "assets"):
        source = os.path.join(exported_versions[2], name)
        if os.path.exists(source):
            shutil.copytree(source, partial / name)
    manager.poll()
    assert manager.serving_versions == [2]
    assert manager.resolve("dspnet").version == 2
