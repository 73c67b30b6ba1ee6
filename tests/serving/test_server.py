"""Client and local server over real gRPC and HTTP on 127.0.0.1."""

from __future__ import annotations

import base64
import http.client
import json
import threading
import time
import urllib.parse
import urllib.request

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2

from serving.client import DSPnetClient, make_example
from serving.server import ModelServer, ServerOptions
from serving.testing import install_version

HISTORIES = [(["i00001", "i00002", "i00003"], ["feed", "search", "live"]),
             (["i00010", "unknown-item"], ["cart", "feed"]),
             ([], [])]


@pytest.fixture()
def client(server):
    with DSPnetClient(f"127.0.0.1:{server.port}", timeout=30) as connected:
        yield connected


def _in_process(path, histories):
    loaded = tf.saved_model.load(path)
    out = loaded.signatures["serving_default"](
        examples=tf.constant([make_example(i, s) for i, s in histories]))
    return {k: v.numpy() for k, v in out.items()}


def _scene_probs(outputs, row):
    """scene name -> probability of one row of an answer."""
    return {name.decode(): float(prob)
            for name, prob in zip(outputs["scene_ids"][row], outputs["scene_probs"][row])}


def test_batch_answers_match_the_savedmodel_called_in_process(client, exported_versions):
    answers = client.recommend_batch([h[0] for h in HISTORIES], [h[1] for h in HISTORIES])
    expected = _in_process(exported_versions[2], HISTORIES)  # newest version by default
    assert [a.model_version for a in answers] == [2, 2, 2]
    for row, answer in enumerate(answers):
        assert answer.items == [x.decode() for x in expected["item_ids"][row]]
        np.testing.assert_allclose(answer.scores, expected["item_scores"][row], rtol=1e-6)
        assert answer.scenes == [x.decode() for x in expected["scene_ids"][row]]
        np.testing.assert_allclose(sum(answer.scene_probs), 1.0, rtol=1e-5)
        assert dict(answer.next_scenes) == pytest.approx(_scene_probs(expected, row), rel=1e-6)


def test_a_specific_version_is_served_when_asked(client, exported_versions):
    first = client.recommend(*HISTORIES[0], version=1)
    second = client.recommend(*HISTORIES[0], version=2)
    assert (first.model_version, second.model_version) == (1, 2)
    assert first.items == [x.decode() for x in _in_process(exported_versions[1],
                                                            HISTORIES[:1])["item_ids"][0]]
    assert first.scores != second.scores


def test_k_and_next_scene(client, exported_versions):
    answer = client.recommend(*HISTORIES[0], k=3, target_scene="live")
    assert len(answer.items) == 3
    scenes = client.next_scene(*HISTORIES[0])
    # Each scene's probability by name, as the SavedModel gives it in process.
    expected = _scene_probs(_in_process(exported_versions[2], HISTORIES[:1]), 0)
    assert set(expected) == {"feed", "search", "live", "favorites", "cart"}
    assert dict(scenes) == pytest.approx(expected, rel=1e-6)
    assert [p for _, p in scenes] == sorted((p for _, p in scenes), reverse=True)
    with pytest.raises(ValueError, match="at most 10"):
        client.recommend(*HISTORIES[0], k=11)


def test_in_scene_requests_get_their_surfaces_answer(client, exported_versions):
    items, scenes = HISTORIES[0]
    loaded = tf.saved_model.load(exported_versions[2]).signatures["serving_default"]

    def in_process(target):
        out = loaded(examples=tf.constant([make_example(items, scenes, target)]))
        return [x.decode() for x in out["item_ids"].numpy()[0]]

    live, cart = (client.recommend(items, scenes, target_scene=s) for s in ("live", "cart"))
    assert live.items == in_process("live") and cart.items == in_process("cart")
    assert live.items != cart.items  # each surface gets its own list
    # A missing or unknown target scene gets the next-event answer.
    next_event = client.recommend(items, scenes)
    assert next_event.items == in_process(None)
    for unknown in ("not-a-scene", "<oov>", ""):
        answer = client.recommend(items, scenes, target_scene=unknown)
        assert answer.items == next_event.items
        np.testing.assert_allclose(answer.scores, next_event.scores, rtol=1e-6)


def test_a_malformed_target_scene_is_invalid_argument(server, client):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "dspnet"
    example = tf.train.Example()
    for name, values in (("item_history", [b"i00001"]), ("scene_history", [b"feed"]),
                         ("target_scene", [b"live", b"cart"])):
        example.features.feature[name].bytes_list.value.extend(values)
    request.inputs["examples"].CopyFrom(tf.make_tensor_proto([example.SerializeToString()]))
    code, details = _code(lambda: client.predictions.Predict(request, timeout=30))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "target_scene" in details


def _code(call):
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value.code(), caught.value.details()


def test_status_codes_of_tf_serving(server, client):
    target = f"127.0.0.1:{server.port}"
    code, details = _code(lambda: DSPnetClient(target, "other").recommend(*HISTORIES[0]))
    assert code == grpc.StatusCode.NOT_FOUND and "other" in details
    code, _ = _code(lambda: client.recommend(*HISTORIES[0], version=7))
    assert code == grpc.StatusCode.NOT_FOUND
    code, details = _code(lambda: client.predict([make_example(*HISTORIES[0])],
                                                 signature_name="no_such_signature"))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "no_such_signature" in details
    code, _ = _code(lambda: client.predict([b"\xff\x00 not an example"]))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    bad = tf.train.Example.FromString(make_example(["i00001"], ["feed"]))
    bad.features.feature["scene_history"].bytes_list.value.append(b"live")
    code, details = _code(lambda: client.predict([bad.SerializeToString()]))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "one scene per" in details
    # A float tensor where strings are expected, and an unknown input name.
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "dspnet"
    request.inputs["examples"].CopyFrom(tf.make_tensor_proto([1.0, 2.0]))
    code, details = _code(lambda: client.predictions.Predict(request))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "DT_STRING" in details
    request.inputs.clear()
    request.inputs["items"].CopyFrom(tf.make_tensor_proto([b"x"]))
    code, _ = _code(lambda: client.predictions.Predict(request))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    # Larger than max_request_bytes: refused by gRPC before it reaches the model.
    huge = make_example(["i00001"] * 300_000, ["feed"] * 300_000)
    code, _ = _code(lambda: client.predict([huge]))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    # After all that the server still answers correctly.
    assert client.recommend(*HISTORIES[0]).model_version == 2


def test_metadata_and_status(client):
    metadata = client.metadata()
    assert metadata["serving_default"]["inputs"] == {"examples": "DT_STRING"}
    assert metadata["predict_raw"]["outputs"]["scene_probs"] == "DT_FLOAT"
    assert [(s["version"], s["state"]) for s in client.status()] == \
        [(2, "AVAILABLE"), (1, "AVAILABLE")]
    assert client.wait_until_ready(timeout=5) == 2


def _http(url, body=None):
    """(status, JSON body) of a GET, or of a POST of `body` as JSON; error statuses too."""
    parts = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        if body is None:
            connection.request("GET", parts.path)
        else:
            connection.request("POST", parts.path, body=json.dumps(body),
                               headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def test_rest_predict_matches_grpc(server, client):
    url = f"http://127.0.0.1:{server.rest_port}/v1/models/dspnet"
    items, scenes = HISTORIES[0]
    grpc_answer = client.recommend(items, scenes)
    status, raw = _http(url + ":predict", {"signature_name": "predict_raw", "instances": [
        {"item_history": items, "scene_history": scenes}]})
    assert status == 200 and raw["predictions"][0]["item_ids"] == grpc_answer.items
    encoded = base64.b64encode(make_example(items, scenes)).decode()
    status, rows = _http(url + ":predict", {"instances": [{"b64": encoded}]})
    assert status == 200 and rows["predictions"][0]["item_ids"] == grpc_answer.items
    status, columns = _http(url + "/versions/1:predict", {"inputs": {"examples": [{"b64": encoded}]}})
    assert status == 200
    assert columns["outputs"]["item_ids"][0] == client.recommend(items, scenes, version=1).items
    status, body = _http(url)
    assert status == 200 and body["model_version_status"][0]["state"] == "AVAILABLE"
    status, body = _http(url + "/metadata")
    assert status == 200 and "predict_raw" in body["metadata"]["signature_def"]["signature_def"]
    status, body = _http(url + ":predict", {"signature_name": "nope", "instances": [1]})
    assert status == 400 and "nope" in body["error"]
    status, body = _http(url.replace("dspnet", "other") + ":predict", {"instances": [1]})
    assert status == 404
    status, body = _http(url + ":predict", {"signature_name": "predict_raw", "instances": [
        {"item_history": ["a", "b"], "scene_history": ["feed"]},
        {"item_history": ["a"], "scene_history": ["feed"]}]})
    assert status == 400 and "error" in body


def test_a_new_version_is_served_within_seconds_without_failed_requests(exported_versions,
                                                                         tmp_path):
    base = tmp_path / "base"
    base.mkdir()
    install_version(str(base), 1, exported_versions[1])
    options = ServerOptions(model_base_path=str(base), port=0, rest_port=None,
                            poll_seconds=0.5)
    with ModelServer(options) as server, \
            DSPnetClient(f"127.0.0.1:{server.port}", timeout=30) as client:
        versions, failures, stop = [], [], threading.Event()

        def keep_asking():
            while not stop.is_set():
                try:
                    versions.append(client.recommend(*HISTORIES[0]).model_version)
                except grpc.RpcError as err:  # pragma: no cover - the assertion below reports it
                    failures.append(err)

        sender = threading.Thread(target=keep_asking)
        sender.start()
        time.sleep(1.0)
        installed = time.monotonic()
        install_version(str(base), 2, exported_versions[2])
        while time.monotonic() - installed < 30 and (not versions or versions[-1] != 2):
            time.sleep(0.05)
        switched_after = time.monotonic() - installed
        time.sleep(0.5)
        stop.set()
        sender.join()
    print(f"version 2 served {switched_after:.2f} s after it was installed; "
          f"{len(versions)} requests, {len(failures)} failed")
    assert not failures, failures[:3]
    assert versions[0] == 1 and versions[-1] == 2
    assert switched_after < 10, f"version 2 served after {switched_after:.1f} s"
    # Once switched, never back (the old version is unloaded under the `latest` policy).
    first_two = versions.index(2)
    assert set(versions[first_two:]) == {2}


def test_version_labels_over_grpc_and_rest(exported_versions, tmp_path):
    base = tmp_path / "base"
    base.mkdir()
    for version, path in exported_versions.items():
        install_version(str(base), version, path)
    options = ServerOptions(model_base_path=str(base), port=0, rest_port=0, poll_seconds=0,
                            version_policy="all", version_labels={"stable": 1})
    with ModelServer(options) as server, \
            DSPnetClient(f"127.0.0.1:{server.port}") as client:
        request = predict_pb2.PredictRequest()
        request.model_spec.name, request.model_spec.version_label = "dspnet", "stable"
        request.inputs["examples"].CopyFrom(tf.make_tensor_proto([make_example(*HISTORIES[0])]))
        assert client.predictions.Predict(request).model_spec.version.value == 1
        request.model_spec.version_label = "canary"
        code, details = _code(lambda: client.predictions.Predict(request))
        assert code == grpc.StatusCode.NOT_FOUND and "canary" in details
        url = f"http://127.0.0.1:{server.rest_port}/v1/models/dspnet/labels/stable"
        with urllib.request.urlopen(url) as response:
            body = json.loads(response.read())
        assert [s["version"] for s in body["model_version_status"]] == ["1"]


@pytest.mark.parametrize("array", [
    np.arange(12, dtype=np.float32).reshape(3, 4) / 7,
    np.arange(6, dtype=np.int32).reshape(1, 6),
    np.array([3, -1], dtype=np.int64),
    np.array([[b"item-1", b"item-22"]], dtype=object),
    np.zeros([0, 3], dtype=np.float32),
])
def test_fill_tensor_proto_writes_what_make_tensor_proto_writes(array):
    from tensorflow.core.framework import tensor_pb2

    from serving.prediction import fill_tensor_proto

    filled = tensor_pb2.TensorProto()
    fill_tensor_proto(filled, array)
    reference = tf.make_tensor_proto(array)
    assert filled.dtype == reference.dtype
    assert filled.tensor_shape == reference.tensor_shape
    decoded = tf.make_ndarray(filled)
    assert decoded.shape == array.shape and decoded.dtype == tf.make_ndarray(reference).dtype
    np.testing.assert_array_equal(decoded, array)
