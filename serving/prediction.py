"""Predict: request tensors -> validated inputs -> a signature call -> output tensors.

Shared by the gRPC and the REST front ends, so both refuse the same requests with the same
status codes. Inputs are checked against the version's SignatureDef (names, dtypes, ranks) and
the server's limits before anything is allocated from them: a TensorProto can claim any shape,
and `tf.make_ndarray` would happily fill a claimed [10**12] tensor.
"""

from __future__ import annotations

import dataclasses
import math
import re
import warnings
from typing import Dict, Iterable, Mapping, Optional

import grpc
import numpy as np

from serving.errors import ServingError, without_paths
from serving.model_manager import LoadedVersion

DEFAULT_SIGNATURE = "serving_default"
# protobuf warns (once per call site) when it stops at a malformed tail; we refuse those
# examples with INVALID_ARGUMENT already, so the warning is only log noise.
warnings.filterwarnings("ignore", message="Unexpected end-group tag", category=RuntimeWarning)


@dataclasses.dataclass(frozen=True)
class RequestLimits:
    """What one request may ask of the server.

    Attributes:
      max_request_bytes: whole request message (gRPC refuses larger ones with
        RESOURCE_EXHAUSTED before they reach us; REST checks Content-Length).
      max_batch_size: rows per request (INVALID_ARGUMENT beyond).
      max_history: events per history in dense inputs (INVALID_ARGUMENT beyond); Examples are
        bounded by `max_example_bytes` instead, without parsing them in Python.
      max_example_bytes: one serialized tf.Example.
    """

    max_request_bytes: int = 4 * 1024 * 1024
    max_batch_size: int = 1024
    max_history: int = 2048
    max_example_bytes: int = 256 * 1024


def _dtype_name(enum_value: int) -> str:
    from tensorflow.core.framework import types_pb2  # pylint: disable=import-outside-toplevel

    return types_pb2.DataType.Name(enum_value) if enum_value in types_pb2.DataType.values() \
        else str(enum_value)


def check_shape(name: str, dims, expected_rank: Optional[int], limits: RequestLimits) -> None:
    """Rank as the signature says; batch and history within the server's limits."""
    dims = list(dims)
    if expected_rank is not None and len(dims) != expected_rank:
        raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                           f"input {name!r}: expects rank {expected_rank}, got shape {dims}")
    if dims and dims[0] > limits.max_batch_size:
        raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                           f"input {name!r}: batch size {dims[0]} exceeds the server's "
                           f"max batch size {limits.max_batch_size}")
    if len(dims) > 1 and max(dims[1:]) > limits.max_history:
        raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                           f"input {name!r}: history length {max(dims[1:])} exceeds the "
                           f"server's limit of {limits.max_history} events")


def check_examples(name: str, array: np.ndarray, limits: RequestLimits) -> None:
    """Each serialized tf.Example within the size limit and a valid Example proto.

    Parsing them here costs little and turns garbage into a message that says so, where
    TensorFlow's parse op would report a graph node (or fail to decode its own message).
    """
    if array.dtype != object or name != "examples":
        return
    from tensorflow.core.example import example_pb2  # pylint: disable=import-outside-toplevel

    for index, value in enumerate(array.reshape(-1)):
        if len(value) > limits.max_example_bytes:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"input 'examples': example {index} is {len(value)} bytes, more "
                               f"than the server's limit of {limits.max_example_bytes}")
        try:
            # MergeFromString returns the bytes it used; fewer means a malformed tail.
            valid = example_pb2.Example().MergeFromString(value) == len(value)
        except Exception:  # pylint: disable=broad-except  (DecodeError and friends)
            valid = False
        if not valid:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"input 'examples': example {index} is not a serialized "
                               "tf.train.Example")


# TensorProto's typed value fields, by dtype (half and bfloat16 travel in half_val).
_VALUE_FIELDS = {
    "DT_STRING": "string_val", "DT_INT64": "int64_val", "DT_INT32": "int_val",
    "DT_INT16": "int_val", "DT_INT8": "int_val", "DT_UINT8": "int_val",
    "DT_UINT16": "int_val", "DT_FLOAT": "float_val", "DT_DOUBLE": "double_val",
    "DT_BOOL": "bool_val", "DT_HALF": "half_val", "DT_BFLOAT16": "half_val",
    "DT_UINT32": "uint32_val", "DT_UINT64": "uint64_val",
}


def _value_count(proto) -> int:
    """How many values a TensorProto carries (not how many its shape claims)."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    if proto.tensor_content:
        itemsize = tf.as_dtype(proto.dtype).size
        return len(proto.tensor_content) // itemsize if itemsize else -1
    field = _VALUE_FIELDS.get(_dtype_name(proto.dtype))
    return len(getattr(proto, field)) if field else -1


def tensor_proto_to_array(name: str, proto, expected_dtype: int, expected_rank: Optional[int],
                          limits: RequestLimits) -> np.ndarray:
    """A TensorProto as a numpy array, refusing wrong dtypes and oversized shapes first."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    if proto.dtype != expected_dtype:
        raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                           f"input {name!r}: expects dtype {_dtype_name(expected_dtype)}, "
                           f"got {_dtype_name(proto.dtype)}")
    dims = [d.size for d in proto.tensor_shape.dim]
    if proto.tensor_shape.unknown_rank or any(d < 0 for d in dims):
        raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                           f"input {name!r}: shape {dims} is not fully defined")
    check_shape(name, dims, expected_rank, limits)
    count = math.prod(dims)
    given = _value_count(proto)
    if given != count:
        # TensorFlow would broadcast one value to the whole shape (30 bytes on the wire ->
        # a 1024 x 2048 batch); the request must carry every value it claims.
        raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                           f"input {name!r}: shape {dims} needs {count} values, got {given}")
    try:
        array = tf.make_ndarray(proto)
    except Exception as err:  # pylint: disable=broad-except
        raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                           f"input {name!r}: not a valid tensor ({err})") from None
    check_examples(name, array, limits)
    return array


def _tf_error_summary(err: Exception) -> str:
    """The line of a TF runtime error that says what is wrong (not the graph-node noise)."""
    text = getattr(err, "message", None) or str(err)
    assertion = re.search(r"assertion failed: \[([^\]]*)\]", text)
    if assertion:
        return assertion.group(1)
    noise = ("Graph execution error", "Detected at node", "<stack traces", "[[", "File ")
    lines = [line.strip() for line in text.splitlines()]
    useful = [line for line in lines if line and not line.startswith(noise)]
    return without_paths(useful[0] if useful else type(err).__name__)[:500]


def signature_input_specs(loaded: LoadedVersion, signature_name: str) -> Mapping[str, object]:
    """name -> TensorInfo of the signature's inputs; FAILED_PRECONDITION if it does not exist."""
    signature = loaded.signature_defs.get(signature_name or DEFAULT_SIGNATURE)
    if signature is None:
        raise ServingError(grpc.StatusCode.FAILED_PRECONDITION,
                           f"Serving signature name: \"{signature_name}\" not found in signature "
                           f"def; available: {sorted(loaded.signature_defs)}")
    return signature.inputs


def run_signature(loaded: LoadedVersion, signature_name: str, inputs: Mapping[str, np.ndarray],
                  output_filter: Iterable[str] = ()) -> Dict[str, np.ndarray]:
    """Calls one signature of a loaded version on validated numpy inputs."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    signature_name = signature_name or DEFAULT_SIGNATURE
    specs = signature_input_specs(loaded, signature_name)
    missing = sorted(set(specs) - set(inputs))
    unknown = sorted(set(inputs) - set(specs))
    if missing or unknown:
        raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                           f"signature {signature_name!r} takes inputs {sorted(specs)}; "
                           + (f"missing {missing}" if missing else "")
                           + ("; " if missing and unknown else "")
                           + (f"unknown {unknown}" if unknown else ""))
    outputs = loaded.signature_defs[signature_name].outputs
    wanted = list(output_filter) or list(outputs)
    bad = [name for name in wanted if name not in outputs]
    if bad:
        raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                           f"output_filter names {bad}, not outputs of {signature_name!r} "
                           f"({sorted(outputs)})")
    try:
        result = loaded.signature(signature_name)(
            **{name: tf.constant(value) for name, value in inputs.items()})
    except (tf.errors.InvalidArgumentError, tf.errors.OutOfRangeError,
            tf.errors.FailedPreconditionError, ValueError, TypeError) as err:
        # Malformed data reaches the graph as parse / shape / assertion errors.
        raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                           f"signature {signature_name!r} could not use the request: "
                           f"{_tf_error_summary(err)}") from None
    return {name: result[name].numpy() for name in wanted}


def fill_tensor_proto(proto, array: np.ndarray) -> None:
    """Writes a numpy array into a TensorProto in place, as `tf.make_tensor_proto` would.

    The same wire form (raw `tensor_content` for numbers, `string_val` for strings), written
    straight into the response instead of building a proto and copying it: the generic
    `make_tensor_proto` path costs tens of microseconds per output, a visible share of what the
    server adds to a batch-1 request besides the model and the transport.
    """
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    for size in array.shape:
        proto.tensor_shape.dim.add().size = size
    if array.dtype == object or array.dtype.kind in "SU":
        proto.dtype = tf.string.as_datatype_enum
        proto.string_val.extend(
            value if isinstance(value, bytes) else str(value).encode()
            for value in array.reshape(-1).tolist())
        return
    proto.dtype = tf.as_dtype(array.dtype).as_datatype_enum
    proto.tensor_content = np.ascontiguousarray(array).tobytes()


def array_input(proto_inputs: Mapping[str, object], loaded: LoadedVersion, signature_name: str,
                limits: RequestLimits) -> Dict[str, np.ndarray]:
    """PredictRequest.inputs (TensorProtos) -> numpy arrays checked against the signature."""
    specs = signature_input_specs(loaded, signature_name)
    arrays = {}
    for name, proto in proto_inputs.items():
        if name not in specs:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"input {name!r} is not an input of signature "
                               f"{signature_name or DEFAULT_SIGNATURE!r} ({sorted(specs)})")
        spec = specs[name]
        rank = None if spec.tensor_shape.unknown_rank else len(spec.tensor_shape.dim)
        arrays[name] = tensor_proto_to_array(name, proto, spec.dtype, rank, limits)
    return arrays
