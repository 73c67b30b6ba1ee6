"""Prometheus metrics with TF Serving's names, and its `MonitoringConfig`.

TF Serving exports its TensorFlow monitoring metrics on the REST port when started with
`--monitoring_config_file` holding `prometheus_config { enable: true path: "..." }`; a metric
`/tensorflow/serving/request_count` appears as `:tensorflow:serving:request_count`. This module
gives the local server the same metrics, names, labels and units (latencies in microseconds),
recorded with `prometheus_client` into a registry of its own per server:

| metric | labels | what |
|---|---|---|
| `:tensorflow:serving:request_count` | model_name, status | requests by final status code |
| `:tensorflow:serving:request_latency` | model_name, API, entrypoint | wall time per request (us) |
| `:tensorflow:serving:runtime_latency` | model_name, API, runtime | the model call alone (us) |
| `:tensorflow:serving:request_example_counts` | model | rows per request |
| `:tensorflow:serving:batching:processed_batch_size` | model_name, signature | rows per model call when batching |
| `:tensorflow:serving:batching:queuing_latency` | model_name, signature | time in the batch queue (us) |
| `:tensorflow:serving:batching:padding_size` | model_name, signature | rows added to reach an allowed size |
| `:tensorflow:cc:saved_model:load_attempt_count` | model_path, status | version loads |
| `:tensorflow:cc:saved_model:load_latency` | model_path | load and warm-up time (us) |

`prometheus_client` exposes a counter's samples with a `_total` suffix (its family keeps the
name above), as every client of the Prometheus text format expects from a counter.
`MonitoringConfig` (tensorflow_serving/config/monitoring_config.proto) is not shipped in the
`tensorflow-serving-api` package, so it is declared here field for field, as `deploy_configs`
does for `BatchingParameters`.
"""

from __future__ import annotations

import functools
from typing import Optional

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

DEFAULT_PATH = "/monitoring/prometheus/metrics"  # TF Serving's default prometheus_config.path
# TF Serving's latency buckets: scale 10 us, power 1.8, 33 buckets (about 20 minutes).
LATENCY_BUCKETS_US = tuple(10 * 1.8 ** i for i in range(33))
SIZE_BUCKETS = tuple(2 ** i for i in range(15))  # 1 .. 16,384 rows, as TF Serving's counts
_FIELD = descriptor_pb2.FieldDescriptorProto


@functools.lru_cache(maxsize=None)
def monitoring_config_class():
    """The `tensorflow.serving.MonitoringConfig` message class."""
    pool = descriptor_pool.DescriptorPool()
    file_proto = descriptor_pb2.FileDescriptorProto(
        name="dspnet/monitoring_config.proto", package="tensorflow.serving", syntax="proto3")
    prometheus = file_proto.message_type.add(name="PrometheusConfig")
    prometheus.field.add(name="enable", number=1, type=_FIELD.TYPE_BOOL,
                         label=_FIELD.LABEL_OPTIONAL)
    prometheus.field.add(name="path", number=2, type=_FIELD.TYPE_STRING,
                         label=_FIELD.LABEL_OPTIONAL)
    config = file_proto.message_type.add(name="MonitoringConfig")
    config.field.add(name="prometheus_config", number=1, type=_FIELD.TYPE_MESSAGE,
                     label=_FIELD.LABEL_OPTIONAL,
                     type_name=".tensorflow.serving.PrometheusConfig")
    pool.Add(file_proto)
    descriptor = pool.FindMessageTypeByName("tensorflow.serving.MonitoringConfig")
    return message_factory.MessageFactory(pool).GetPrototype(descriptor)


def read_monitoring_config(path: str) -> Optional[str]:
    """The metrics path a `--monitoring_config_file` asks for, or None if it disables them.

    Raises ValueError naming the file for text-format errors, as tensorflow_model_server stops.
    """
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    try:
        config = text_format.Parse(text, monitoring_config_class()())
    except text_format.ParseError as err:
        raise ValueError(f"{path}: not a MonitoringConfig text proto: {err}") from None
    if not config.prometheus_config.enable:
        return None
    metrics_path = config.prometheus_config.path or DEFAULT_PATH
    if not metrics_path.startswith("/"):
        raise ValueError(f"{path}: prometheus_config.path {metrics_path!r} must start with '/'")
    return metrics_path


class ServingMetrics:
    """The server's metrics, in a registry of their own (so two servers in one process, as in
    the tests, do not mix counts)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        self.request_count = Counter(
            ":tensorflow:serving:request_count", "The total number of requests.",
            ["model_name", "status"], registry=registry)
        self.request_latency = Histogram(
            ":tensorflow:serving:request_latency",
            "Distribution of wall time (in microseconds) for Tensorflow Serving request.",
            ["model_name", "API", "entrypoint"], buckets=LATENCY_BUCKETS_US, registry=registry)
        self.runtime_latency = Histogram(
            ":tensorflow:serving:runtime_latency",
            "Distribution of wall time (in microseconds) for Tensorflow runtime.",
            ["model_name", "API", "runtime"], buckets=LATENCY_BUCKETS_US, registry=registry)
        self.example_counts = Histogram(
            ":tensorflow:serving:request_example_counts",
            "The number of tensorflow.Examples per request.", ["model"],
            buckets=SIZE_BUCKETS, registry=registry)
        self.batch_size = Histogram(
            ":tensorflow:serving:batching:processed_batch_size",
            "Rows per model call formed by the batching queue.", ["model_name", "signature"],
            buckets=SIZE_BUCKETS, registry=registry)
        self.queuing_latency = Histogram(
            ":tensorflow:serving:batching:queuing_latency",
            "Time (in microseconds) a request waited in the batching queue.",
            ["model_name", "signature"], buckets=LATENCY_BUCKETS_US, registry=registry)
        self.padding_size = Histogram(
            ":tensorflow:serving:batching:padding_size",
            "Rows added to a batch to reach an allowed batch size.",
            ["model_name", "signature"], buckets=(0,) + SIZE_BUCKETS, registry=registry)
        self.load_attempt_count = Counter(
            ":tensorflow:cc:saved_model:load_attempt_count",
            "The number of times a SavedModel was loaded.", ["model_path", "status"],
            registry=registry)
        self.load_latency = Histogram(
            ":tensorflow:cc:saved_model:load_latency",
            "Latency (in microseconds) of a SavedModel load and warm-up.", ["model_path"],
            buckets=LATENCY_BUCKETS_US, registry=registry)

    def record_request(self, model_name: str, api: str, entrypoint: str, status: str,
                       seconds: float) -> None:
        """Counts one finished request (by status) and records its latency."""
        self.request_count.labels(model_name, status).inc()
        self.request_latency.labels(model_name, api, entrypoint).observe(seconds * 1e6)

    def exposition(self) -> bytes:
        """The Prometheus text format of every metric."""
        return generate_latest(self.registry)

    content_type = CONTENT_TYPE_LATEST
