"""TF Serving's gRPC services over a `ModelManager`: PredictionService and ModelService.

Implemented on the official `tensorflow_serving.apis` protos and generated servicers, so any
TF Serving client (ours, or one written for `tensorflow_model_server`) talks to it unchanged.
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Optional

import grpc
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from serving.errors import ServingError
from serving.model_manager import ModelManager
from serving.prediction import RequestLimits, array_input, fill_tensor_proto, run_signature

LOG = logging.getLogger("dspnet.serving")


def _model_spec_version(spec) -> Optional[int]:
    return spec.version.value if spec.HasField("version") else None


def _guarded(method: Callable) -> Callable:
    """Turns ServingError into its status code; anything else is logged as a server bug."""

    def wrapper(self, request, context):
        try:
            return method(self, request, context)
        except ServingError as err:
            context.abort(err.code, err.message)
        except Exception:  # pylint: disable=broad-except
            LOG.exception("%s failed", method.__name__)
            context.abort(grpc.StatusCode.INTERNAL, f"{method.__name__} failed; see server log")
        return None  # unreachable: abort raises

    wrapper.__name__ = method.__name__
    wrapper.__doc__ = method.__doc__
    return wrapper


def _check_still_wanted(context) -> None:
    """DEADLINE_EXCEEDED / CANCELLED instead of running the model for nobody.

    A request can wait in the worker queue past its deadline; TF Serving skips such work too.
    """
    remaining = context.time_remaining()
    if remaining is not None and remaining <= 0:
        raise ServingError(grpc.StatusCode.DEADLINE_EXCEEDED,
                           "the request's deadline passed before the model ran")
    if not context.is_active():
        raise ServingError(grpc.StatusCode.CANCELLED, "the client cancelled the request")


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    """Predict and GetModelMetadata (Classify, Regress, MultiInference: UNIMPLEMENTED).

    Args:
      manager: the served versions.
      limits: request limits.
      runner: runs a signature on validated inputs (`run_signature`, or a `Batcher`'s `run`).
      metrics: a `serving.monitoring.ServingMetrics` to record requests in, or None.
    """

    def __init__(self, manager: ModelManager, limits: RequestLimits,
                 runner: Optional[Callable] = None, metrics=None) -> None:
        self.manager = manager
        self.limits = limits
        self.runner = runner or run_signature
        self.metrics = metrics

    @_guarded
    def Predict(self, request, context):  # noqa: N802 (gRPC method name)
        """Runs a signature of the requested model version on the request's input tensors."""
        started, status = time.monotonic(), "OK"
        try:
            return self._predict(request, context)
        except ServingError as err:
            status = err.code.name
            raise
        except Exception:
            status = "INTERNAL"
            raise
        finally:
            if self.metrics is not None:
                self.metrics.record_request(request.model_spec.name, "predict", "GRPC", status,
                                            time.monotonic() - started)

    def _predict(self, request, context):
        spec = request.model_spec
        loaded = self.manager.resolve(spec.name, _model_spec_version(spec), spec.version_label)
        inputs = array_input(request.inputs, loaded, spec.signature_name, self.limits)
        if self.metrics is not None and inputs:
            self.metrics.example_counts.labels(spec.name).observe(
                len(next(iter(inputs.values()))))
        _check_still_wanted(context)
        outputs = self.runner(loaded, spec.signature_name or "serving_default", inputs,
                              request.output_filter)
        response = predict_pb2.PredictResponse()
        response.model_spec.name = self.manager.name
        response.model_spec.version.value = loaded.version
        response.model_spec.signature_name = spec.signature_name or "serving_default"
        for name, value in outputs.items():
            fill_tensor_proto(response.outputs[name], value)
        return response

    @_guarded
    def GetModelMetadata(self, request, context):  # noqa: N802
        """The version's SignatureDefs (the only metadata field TF Serving offers)."""
        spec = request.model_spec
        loaded = self.manager.resolve(spec.name, _model_spec_version(spec), spec.version_label)
        fields = list(request.metadata_field)
        if fields != ["signature_def"]:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"metadata_field must be ['signature_def'], got {fields}")
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        for name, signature in loaded.signature_defs.items():
            signature_map.signature_def[name].CopyFrom(signature)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = self.manager.name
        response.model_spec.version.value = loaded.version
        response.metadata["signature_def"].Pack(signature_map)
        return response


def status_response(manager: ModelManager, name: str, version: Optional[int]):
    """GetModelStatusResponse for a model (all versions, or one)."""
    response = get_model_status_pb2.GetModelStatusResponse()
    states = get_model_status_pb2.ModelVersionStatus.State
    for status in manager.statuses(name, version):
        entry = response.model_version_status.add()
        entry.version = status.version
        entry.state = states.Value(status.state)
        entry.status.error_code = status.error_code.value[0]
        entry.status.error_message = status.error_message
    return response


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    """GetModelStatus (HandleReloadConfigRequest: UNIMPLEMENTED; the base path is polled)."""

    def __init__(self, manager: ModelManager) -> None:
        self.manager = manager

    @_guarded
    def GetModelStatus(self, request, context):  # noqa: N802
        """The state of each version of the model (or of the requested one)."""
        spec = request.model_spec
        return status_response(self.manager, spec.name, _model_spec_version(spec))


def add_services(server: grpc.Server, manager: ModelManager, limits: RequestLimits,
                 runner: Optional[Callable] = None, metrics=None) -> None:
    """Registers PredictionService and ModelService for `manager`'s model on a gRPC server."""
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionService(manager, limits, runner, metrics), server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(manager), server)
