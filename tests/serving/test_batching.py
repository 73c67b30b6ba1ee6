"""Server-side batching (TF Serving's BatchingParameters) and the Prometheus metrics."""

from __future__ import annotations

import concurrent.futures
import functools
import http.client
import json
import resource
import threading
import time

import grpc
import numpy as np
import pytest
import tensorflow as tf
from prometheus_client.parser import text_string_to_metric_families
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from serving.batching import Batcher, BatchingOptions
from serving.client import DSPnetClient, make_example
from serving.errors import ServingError
from serving.model_manager import LoadedVersion
from serving.monitoring import DEFAULT_PATH, read_monitoring_config
from serving.server import ModelServer, ServerOptions
from serving.testing import install_version

HISTORIES = [(["i00001", "i00002", "i00003"], ["feed", "search", "live"]),
             (["i00010", "unknown-item"], ["cart", "feed"]),
             (["i00004"], ["live"]),
             ([], []),
             (["i00005", "i00006", "i00007", "i00008", "i00009"],
              ["feed", "feed", "cart", "search", "live"])]
TARGETS = [None, "cart", "live", None, "feed"]


class _Recorder:
    """A stand-in model: doubles its input, records every call's batch size."""

    def __init__(self, delay: float = 0.0, fail_on=None):
        self.calls = []
        self.delay = delay
        self.fail_on = fail_on

    def __call__(self, loaded, signature_name, inputs):
        rows = len(next(iter(inputs.values())))
        self.calls.append(rows)
        time.sleep(self.delay)
        if self.fail_on is not None and (inputs["x"] == self.fail_on).any():
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, "bad row")
        return {"y": inputs["x"] * 2, "n": np.full(rows, rows)}


FAKE = LoadedVersion(1, "/nowhere", None, {})


def _concurrently(function, arguments):
    with concurrent.futures.ThreadPoolExecutor(len(arguments)) as pool:
        futures = [pool.submit(function, *args) for args in arguments]
        return [future.exception() or future.result() for future in futures]


def test_concurrent_requests_share_model_calls_and_get_their_own_rows():
    model = _Recorder(delay=0.05)
    batcher = Batcher(BatchingOptions(max_batch_size=8, batch_timeout_micros=100_000,
                                      num_batch_threads=1), model)
    inputs = [{"x": np.arange(k, k + 2, dtype=np.int64)[:, None]} for k in range(0, 16, 2)]
    answers = _concurrently(lambda x: batcher.run(FAKE, "s", x), [(x,) for x in inputs])
    batcher.stop()
    for x, answer in zip(inputs, answers):
        np.testing.assert_array_equal(answer["y"], x["x"] * 2)
    assert sum(model.calls) == 16 and len(model.calls) < 8  # merged, not one call each
    assert max(model.calls) <= 8


def test_a_full_queue_is_refused_with_unavailable_naming_the_queue():
    model = _Recorder(delay=0.3)
    batcher = Batcher(BatchingOptions(max_batch_size=2, max_enqueued_batches=1,
                                      batch_timeout_micros=0, num_batch_threads=1), model)
    inputs = [({"x": np.array([[k]])},) for k in range(8)]
    answers = _concurrently(lambda x: batcher.run(FAKE, "sig", x), inputs)
    batcher.stop()
    refused = [a for a in answers if isinstance(a, ServingError)]
    served = [a for a in answers if isinstance(a, dict)]
    assert refused and served and len(refused) + len(served) == 8
    assert all(a.code == grpc.StatusCode.UNAVAILABLE and "batch queue" in a.message
               and "'sig'" in a.message for a in refused)


def test_allowed_batch_sizes_pad_and_the_padding_is_dropped():
    model = _Recorder()
    batcher = Batcher(BatchingOptions(max_batch_size=8, allowed_batch_sizes=(4, 8),
                                      num_batch_threads=1), model)
    answer = batcher.run(FAKE, "s", {"x": np.array([[1], [2], [3]])})
    batcher.stop()
    assert model.calls == [4]
    np.testing.assert_array_equal(answer["y"], [[2], [4], [6]])


def test_variable_length_inputs_share_a_batch_only_when_padding_is_allowed():
    for pad, expected_calls in ((True, 1), (False, 2)):
        model = _Recorder(delay=0.05)
        batcher = Batcher(BatchingOptions(max_batch_size=8, batch_timeout_micros=200_000,
                                          num_batch_threads=1,
                                          pad_variable_length_inputs=pad), model)
        inputs = [({"x": np.array([[1, 2, 3]])},), ({"x": np.array([[4]])},)]
        answers = _concurrently(lambda x: batcher.run(FAKE, "s", x), inputs)
        batcher.stop()
        assert len(model.calls) == expected_calls, (pad, model.calls)
        np.testing.assert_array_equal(answers[1]["y"][:, :1], [[8]])
        if pad:
            np.testing.assert_array_equal(answers[1]["y"], [[8, 0, 0]])


def test_a_bad_request_fails_alone_and_its_batch_mates_are_answered():
    model = _Recorder(delay=0.05, fail_on=-1)
    batcher = Batcher(BatchingOptions(max_batch_size=8, batch_timeout_micros=200_000,
                                      num_batch_threads=1), model)
    inputs = [({"x": np.array([[k]])},) for k in (1, -1, 3)]
    answers = _concurrently(lambda x: batcher.run(FAKE, "s", x), inputs)
    batcher.stop()
    assert isinstance(answers[1], ServingError)
    np.testing.assert_array_equal(answers[0]["y"], [[2]])
    np.testing.assert_array_equal(answers[2]["y"], [[6]])


def test_batching_parameters_file_and_monitoring_config_are_read(tmp_path):
    params = tmp_path / "batching.txt"
    params.write_text("max_batch_size { value: 16 }\nbatch_timeout_micros { value: 500 }\n"
                      "allowed_batch_sizes: 4\nallowed_batch_sizes: 16\n")
    options = BatchingOptions.read(str(params))
    assert (options.max_batch_size, options.batch_timeout_micros,
            options.allowed_batch_sizes) == (16, 500, (4, 16))
    params.write_text("max_batch_sise { value: 16 }\n")
    with pytest.raises(ValueError, match="batching.txt"):
        BatchingOptions.read(str(params))
    monitoring = tmp_path / "monitoring.config"
    monitoring.write_text("prometheus_config { enable: true }\n")
    assert read_monitoring_config(str(monitoring)) == DEFAULT_PATH
    monitoring.write_text('prometheus_config { enable: true, path: "/metrics" }\n')
    assert read_monitoring_config(str(monitoring)) == "/metrics"
    monitoring.write_text("prometheus_config { enable: false }\n")
    assert read_monitoring_config(str(monitoring)) is None


@pytest.fixture(scope="module")
def batching_server(exported_versions, tmp_path_factory):
    base = tmp_path_factory.mktemp("batching-base")
    for version, path in exported_versions.items():
        install_version(str(base), version, path)
    options = ServerOptions(model_base_path=str(base), port=0, rest_port=0,
                            version_policy="all", poll_seconds=0,
                            batching=BatchingOptions(max_batch_size=16,
                                                     batch_timeout_micros=20_000,
                                                     num_batch_threads=2,
                                                     pad_variable_length_inputs=True),
                            monitoring_path=DEFAULT_PATH)
    with ModelServer(options) as server:
        yield server


@functools.lru_cache(maxsize=None)
def _load(path):
    return tf.saved_model.load(path)


def _expected(path, signature, histories, targets):
    loaded = _load(path)
    if signature == "serving_default":
        out = loaded.signatures[signature](examples=tf.constant(
            [make_example(i, s, t) for (i, s), t in zip(histories, targets)]))
    else:
        width = max(1, max(len(i) for i, _ in histories))
        pad = lambda rows: [list(r) + [""] * (width - len(r)) for r in rows]  # noqa: E731
        out = loaded.signatures[signature](
            item_history=tf.constant(pad([i for i, _ in histories])),
            scene_history=tf.constant(pad([s for _, s in histories])))
    return {key: value.numpy() for key, value in out.items()}


def _predict(stub, version, signature, histories, targets):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "dspnet"
    request.model_spec.version.value = version
    request.model_spec.signature_name = signature
    if signature == "serving_default":
        request.inputs["examples"].CopyFrom(tf.make_tensor_proto(
            [make_example(i, s, t) for (i, s), t in zip(histories, targets)]))
    else:
        width = max(1, max(len(i) for i, _ in histories))
        for name, rows in (("item_history", [i for i, _ in histories]),
                           ("scene_history", [s for _, s in histories])):
            request.inputs[name].CopyFrom(tf.make_tensor_proto(
                [list(r) + [""] * (width - len(r)) for r in rows]))
    response = stub.Predict(request, timeout=30)
    return {key: tf.make_ndarray(value) for key, value in response.outputs.items()}


def test_batched_answers_equal_unbatched_ones_across_lengths_signatures_and_versions(
        batching_server, exported_versions):
    cases = []
    for version in (1, 2):
        for signature in ("serving_default", "predict_raw"):
            for start in range(len(HISTORIES)):
                rows = [HISTORIES[(start + k) % len(HISTORIES)] for k in range(1 + start % 3)]
                targets = [TARGETS[(start + k) % len(TARGETS)] for k in range(len(rows))]
                cases.append((version, signature, rows, targets))
    with grpc.insecure_channel(f"127.0.0.1:{batching_server.port}") as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        answers = _concurrently(lambda *case: _predict(stub, *case), cases)
    for (version, signature, rows, targets), answer in zip(cases, answers):
        assert isinstance(answer, dict), answer
        expected = _expected(exported_versions[version], signature, rows, targets)
        np.testing.assert_array_equal(answer["item_ids"], expected["item_ids"])
        np.testing.assert_allclose(answer["item_scores"], expected["item_scores"], rtol=1e-5)
        np.testing.assert_allclose(answer["scene_probs"], expected["scene_probs"], rtol=1e-5,
                                   atol=1e-7)
    scraped = _scrape(batching_server)
    buckets = {labels["le"]: value for name, labels, value in
               scraped[":tensorflow:serving:batching:processed_batch_size"]
               if name.endswith("_bucket") and labels["signature"] == "serving_default"}
    assert buckets["1.0"] < buckets["+Inf"]  # some model calls merged several requests


def _scrape(server, path=DEFAULT_PATH):
    connection = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=10)
    connection.request("GET", path)
    response = connection.getresponse()
    assert response.status == 200
    assert response.getheader("Content-Type").startswith("text/plain")
    families = text_string_to_metric_families(response.read().decode())
    return {family.name: [(sample.name, sample.labels, sample.value)
                          for sample in family.samples]
            for family in families}


def test_a_metrics_scrape_counts_the_requests_just_sent_by_status(exported_versions, tmp_path):
    install_version(str(tmp_path), 1, exported_versions[1])
    options = ServerOptions(model_base_path=str(tmp_path), port=0, rest_port=0,
                            poll_seconds=0, monitoring_path="/monitoring/prometheus/metrics")
    with ModelServer(options) as server:
        with DSPnetClient(f"127.0.0.1:{server.port}") as client:
            for items, scenes in HISTORIES[:3]:
                client.recommend(items, scenes)
            for _ in range(2):
                with pytest.raises(grpc.RpcError):
                    client.predict([b"not an example"])
        connection = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=10)
        connection.request("POST", "/v1/models/dspnet:predict",
                           body=json.dumps({"instances": [{"b64": ""}]}))
        assert connection.getresponse().status == 200
        scraped = _scrape(server)
    counts = {labels["status"]: value
              for _, labels, value in scraped[":tensorflow:serving:request_count"]
              if labels.get("model_name") == "dspnet"}
    assert counts == {"OK": 4.0, "INVALID_ARGUMENT": 2.0}
    requests = {(labels["API"], labels["entrypoint"]): value
                for name, labels, value in scraped[":tensorflow:serving:request_latency"]
                if name.endswith("_count") and labels["model_name"] == "dspnet"}
    assert requests == {("predict", "GRPC"): 5.0, ("predict", "REST"): 1.0}
    loads = {labels["status"]: value for name, labels, value in
             scraped[":tensorflow:cc:saved_model:load_attempt_count"] if name.endswith("_total")}
    assert loads == {"success": 1.0}


def test_overload_is_answered_or_refused_with_bounded_memory_then_normal(exported_versions,
                                                                         tmp_path):
    install_version(str(tmp_path), 1, exported_versions[1])
    expected = _expected(exported_versions[1], "serving_default", HISTORIES[:1], [None])
    options = ServerOptions(model_base_path=str(tmp_path), port=0, rest_port=None,
                            poll_seconds=0, workers=64, max_concurrent_rpcs=128,
                            batching=BatchingOptions(max_batch_size=8, max_enqueued_batches=2,
                                                     batch_timeout_micros=1000,
                                                     num_batch_threads=1))
    outcomes = {"ok": 0, "wrong": 0, "refused": 0, "other": []}
    lock = threading.Lock()
    stop = threading.Event()
    with ModelServer(options) as server:
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)

            def client():
                while not stop.is_set():
                    try:
                        answer = _predict(stub, 1, "serving_default", HISTORIES[:1], [None])
                        key = "ok" if (answer["item_ids"] == expected["item_ids"]).all() \
                            else "wrong"
                    except grpc.RpcError as err:
                        key = "refused" if err.code() in (
                            grpc.StatusCode.UNAVAILABLE,
                            grpc.StatusCode.RESOURCE_EXHAUSTED) else None
                        if key is None:
                            with lock:
                                outcomes["other"].append(err.code())
                            continue
                    with lock:
                        outcomes[key] += 1

            threads = [threading.Thread(target=client) for _ in range(300)]
            for thread in threads:
                thread.start()
            time.sleep(8)
            stop.set()
            for thread in threads:
                thread.join(timeout=60)
            rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            assert server.batcher.queued_rows == 0
            after = _predict(stub, 1, "serving_default", HISTORIES[:1], [None])
    print(f"overload: {outcomes['ok']} answered, {outcomes['refused']} refused, peak RSS "
          f"{rss_before / 1024:.0f} -> {rss_after / 1024:.0f} MiB")
    assert outcomes["ok"] > 0 and outcomes["refused"] > 0
    assert outcomes["wrong"] == 0 and outcomes["other"] == []
    assert rss_after - rss_before < 512 * 1024  # KiB: bounded, not growing with the load
    np.testing.assert_array_equal(after["item_ids"], expected["item_ids"])


class _FlakyPredictions(prediction_service_pb2_grpc.PredictionServiceServicer):
    """A PredictionService that is UNAVAILABLE for its first `failures` calls."""

    def __init__(self, failures: int):
        self.failures = failures
        self.calls = 0

    def Predict(self, request, context):  # noqa: N802
        self.calls += 1
        if self.calls <= self.failures:
            context.abort(grpc.StatusCode.UNAVAILABLE, "the batch queue is full")
        response = predict_pb2.PredictResponse()
        response.model_spec.version.value = 7
        return response


@pytest.mark.parametrize("retries,failures,succeeds", [(3, 2, True), (0, 1, False),
                                                       (1, 2, False)])
def test_the_client_retries_unavailable_through_grpcs_retry_policy(retries, failures,
                                                                  succeeds):
    from concurrent import futures

    service = _FlakyPredictions(failures)
    server = grpc.server(futures.ThreadPoolExecutor(2))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(service, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with DSPnetClient(f"127.0.0.1:{port}", retries=retries, backoff_seconds=0.01,
                          timeout=5) as client:
            if succeeds:
                assert client.predict([b""]).model_spec.version.value == 7
            else:
                with pytest.raises(grpc.RpcError) as refused:
                    client.predict([b""])
                assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        server.stop(0)
    assert service.calls == (failures + 1 if succeeds else retries + 1)
