"""Reading (and so checking) the deployment configs of `serving/deploy/` with TF Serving's protos.

`ModelServerConfig` comes from the `tensorflow-serving-api` package. `BatchingParameters`
(tensorflow_serving/servables/tensorflow/session_bundle_config.proto) is not shipped in that
package, so its message is declared here field for field (same names, numbers and types) and
parsed with protobuf's own text format: a typo in a field name or a wrong type fails exactly as
in `tensorflow_model_server`.
"""

from __future__ import annotations

import functools

from google.protobuf import descriptor_pb2, descriptor_pool, text_format, wrappers_pb2
from google.protobuf import message_factory
from tensorflow_serving.config import model_server_config_pb2

_FIELD = descriptor_pb2.FieldDescriptorProto


@functools.lru_cache(maxsize=None)
def batching_parameters_class():
    """The `tensorflow.serving.BatchingParameters` message class."""
    pool = descriptor_pool.DescriptorPool()
    wrappers = descriptor_pb2.FileDescriptorProto()
    wrappers_pb2.DESCRIPTOR.CopyToProto(wrappers)
    pool.Add(wrappers)
    file_proto = descriptor_pb2.FileDescriptorProto(
        name="dspnet/session_bundle_config_batching.proto", package="tensorflow.serving",
        syntax="proto3", dependency=["google/protobuf/wrappers.proto"])
    message = file_proto.message_type.add(name="BatchingParameters")
    for number, name, type_name in [
        (1, "max_batch_size", ".google.protobuf.Int64Value"),
        (2, "batch_timeout_micros", ".google.protobuf.Int64Value"),
        (3, "max_enqueued_batches", ".google.protobuf.Int64Value"),
        (4, "num_batch_threads", ".google.protobuf.Int64Value"),
        (5, "thread_pool_name", ".google.protobuf.StringValue"),
    ]:
        message.field.add(name=name, number=number, type=_FIELD.TYPE_MESSAGE,
                          label=_FIELD.LABEL_OPTIONAL, type_name=type_name)
    message.field.add(name="allowed_batch_sizes", number=6, type=_FIELD.TYPE_INT64,
                      label=_FIELD.LABEL_REPEATED)
    message.field.add(name="pad_variable_length_inputs", number=7, type=_FIELD.TYPE_BOOL,
                      label=_FIELD.LABEL_OPTIONAL)
    pool.Add(file_proto)
    descriptor = pool.FindMessageTypeByName("tensorflow.serving.BatchingParameters")
    return message_factory.MessageFactory(pool).GetPrototype(descriptor)


def read_model_server_config(path: str) -> model_server_config_pb2.ModelServerConfig:
    """Parses a `--model_config_file` (text proto); raises text_format.ParseError if invalid."""
    with open(path, encoding="utf-8") as handle:
        return text_format.Parse(handle.read(), model_server_config_pb2.ModelServerConfig())


def parse_batching_parameters(text: str):
    """Parses `--batching_parameters_file` content and checks TF Serving's own rules on it."""
    params = text_format.Parse(text, batching_parameters_class()())
    sizes = list(params.allowed_batch_sizes)
    if sizes:
        if sizes != sorted(set(sizes)):
            raise ValueError(f"allowed_batch_sizes {sizes} must be strictly increasing")
        if params.HasField("max_batch_size") and sizes[-1] != params.max_batch_size.value:
            raise ValueError(f"the last allowed batch size {sizes[-1]} must equal "
                             f"max_batch_size {params.max_batch_size.value}")
    return params


def read_batching_parameters(path: str):
    """Reads a `--batching_parameters_file` and checks it as `parse_batching_parameters` does."""
    with open(path, encoding="utf-8") as handle:
        return parse_batching_parameters(handle.read())
