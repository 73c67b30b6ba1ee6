"""A Python client for a served DSPnet, over TF Serving's gRPC API only.

It builds `tf.train.Example`s as the serving contract describes and calls
`PredictionService.Predict`, `GetModelMetadata` and `ModelService.GetModelStatus`, so it works
unchanged against `tensorflow_model_server` or this project's local server.

    >>> with DSPnetClient("127.0.0.1:8500") as client:
    ...     client.wait_until_ready()
    ...     answer = client.recommend(["i12", "i7"], ["feed", "search"], k=5)
    ...     answer.items, answer.next_scenes
"""

from __future__ import annotations

import dataclasses
import json
import time
from typing import Dict, List, Optional, Sequence, Tuple, Union

import grpc

from dspnet_tf.export import make_history_example
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

History = Sequence[str]
# The contract's Example format, built by the same function the export documents.
make_example = make_history_example


@dataclasses.dataclass
class Recommendation:
    """One user's answer: top-K items (best first) and the next scene distribution."""

    items: List[str]
    scores: List[float]
    scenes: List[str]
    scene_probs: List[float]
    model_version: int

    @property
    def next_scenes(self) -> List[Tuple[str, float]]:
        """(scene, probability) pairs, most likely first."""
        return list(zip(self.scenes, self.scene_probs))


def _string_tensor(values: Sequence[bytes]) -> tensor_pb2.TensorProto:
    # Built directly from the proto: no TensorFlow runtime call needed on the client side.
    return tensor_pb2.TensorProto(
        dtype=types_pb2.DT_STRING,
        tensor_shape=tensor_shape_pb2.TensorShapeProto(
            dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=len(values))]),
        string_val=list(values))


def _rows(proto: tensor_pb2.TensorProto) -> list:
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    return tf.make_ndarray(proto).tolist()


def retry_service_config(retries: int, backoff_seconds: float = 0.1) -> str:
    """A gRPC service config (JSON) that retries UNAVAILABLE on TF Serving's two services.

    gRPC's own retry policy (gRFC A6): attempts = retries + 1, exponential backoff with jitter,
    and no retry once the call's deadline has passed. An empty config when `retries` is 0.
    """
    if retries <= 0:
        return json.dumps({})
    policy = {"maxAttempts": min(retries + 1, 5),  # gRPC caps attempts at 5
              "initialBackoff": f"{backoff_seconds:.3f}s", "maxBackoff": "2s",
              "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE"]}
    return json.dumps({"methodConfig": [{
        "name": [{"service": "tensorflow.serving.PredictionService"},
                 {"service": "tensorflow.serving.ModelService"}],
        "retryPolicy": policy}]})


class DSPnetClient:
    """Talks to a served DSPnet through TF Serving's gRPC API.

    Args:
      target: "host:port" of the gRPC endpoint (TF Serving's default port is 8500).
      model_name: the served model's name.
      version: ask for this version (default: the newest the server serves).
      timeout: default seconds per call.
      root_certificates: PEM path (or bytes) of the CA that signed the server's certificate;
        given, the channel uses TLS.
      client_certificate / client_key: PEM paths for servers that require client certificates.
      retries: how many times a call refused with UNAVAILABLE (a full batch queue, a server
        restarting) is retried (at most 4: gRPC caps attempts at 5), with exponential backoff
        from `backoff_seconds` (0: never).
        gRPC retries it itself, by the channel's service config (`retry_service_config`), and
        never past the call's deadline: every call has one (`timeout`).
      backoff_seconds: the first retry's backoff; each next one doubles, up to 2 s.
    """

    def __init__(self, target: str, model_name: str = "dspnet", *, version: Optional[int] = None,
                 timeout: float = 10.0,
                 root_certificates: Optional[Union[str, bytes]] = None,
                 client_certificate: Optional[str] = None,
                 client_key: Optional[str] = None, retries: int = 3,
                 backoff_seconds: float = 0.1) -> None:
        if timeout <= 0 or retries < 0 or backoff_seconds <= 0:
            raise ValueError(f"timeout and backoff_seconds must be > 0 and retries >= 0, got "
                             f"{timeout}, {backoff_seconds} and {retries}")
        options = [("grpc.enable_retries", 1 if retries else 0),
                   ("grpc.service_config", retry_service_config(retries, backoff_seconds))]
        self.target = target
        self.model_name = model_name
        self.version = version
        self.timeout = timeout
        if (client_certificate is None) != (client_key is None):
            raise ValueError("a client certificate needs its key: give both client_certificate "
                             "and client_key")
        if client_certificate is not None and root_certificates is None:
            # Else the certificate would be dropped and the channel fall back to plaintext.
            raise ValueError("client_certificate needs TLS: give root_certificates too (the CA "
                             "that signed the server's certificate)")
        if root_certificates is not None:
            def read(value):
                if value is None or isinstance(value, bytes):
                    return value
                with open(value, "rb") as handle:
                    return handle.read()
            credentials = grpc.ssl_channel_credentials(read(root_certificates), read(client_key),
                                                       read(client_certificate))
            self.channel = grpc.secure_channel(target, credentials, options=options)
        else:
            self.channel = grpc.insecure_channel(target, options=options)
        self.predictions = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self.models = model_service_pb2_grpc.ModelServiceStub(self.channel)

    # -- requests -------------------------------------------------------------------------
    def _spec(self, spec, version: Optional[int], signature_name: str = "") -> None:
        spec.name = self.model_name
        version = self.version if version is None else version
        if version is not None:
            spec.version.value = int(version)
        if signature_name:
            spec.signature_name = signature_name

    def predict(self, examples: Sequence[bytes], signature_name: str = "serving_default",
                version: Optional[int] = None, timeout: Optional[float] = None):
        """Raw Predict on serialized Examples; returns the PredictResponse."""
        request = predict_pb2.PredictRequest()
        self._spec(request.model_spec, version, signature_name)
        request.inputs["examples"].CopyFrom(_string_tensor(list(examples)))
        return self.predictions.Predict(request, timeout=timeout or self.timeout)

    def recommend_batch(self, item_histories: Sequence[History],
                        scene_histories: Sequence[History],
                        target_scenes: Optional[Sequence[Optional[str]]] = None,
                        k: Optional[int] = None, timeout: Optional[float] = None,
                        version: Optional[int] = None) -> List[Recommendation]:
        """Top-k items and next-scene probabilities for several users in one request."""
        if len(item_histories) != len(scene_histories):
            raise ValueError(f"{len(item_histories)} item histories but {len(scene_histories)} "
                             "scene histories")
        targets = list(target_scenes) if target_scenes is not None else \
            [None] * len(item_histories)
        examples = [make_example(items, scenes, target)
                    for items, scenes, target in zip(item_histories, scene_histories, targets)]
        response = self.predict(examples, version=version, timeout=timeout)
        outputs = response.outputs
        item_ids, item_scores = _rows(outputs["item_ids"]), _rows(outputs["item_scores"])
        scene_ids, scene_probs = _rows(outputs["scene_ids"]), _rows(outputs["scene_probs"])
        served_k = len(item_ids[0]) if item_ids else 0
        if k is not None and not 1 <= k <= served_k:
            raise ValueError(f"k={k}: the served model returns at most {served_k} items "
                             "(its top_k at export)")
        k = served_k if k is None else k
        return [Recommendation([x.decode() for x in ids[:k]], [float(s) for s in scores[:k]],
                               [x.decode() for x in scenes], [float(p) for p in probs],
                               response.model_spec.version.value)
                for ids, scores, scenes, probs in zip(item_ids, item_scores, scene_ids,
                                                      scene_probs)]

    def recommend(self, item_history: History, scene_history: History,
                  target_scene: Optional[str] = None, k: Optional[int] = None,
                  timeout: Optional[float] = None,
                  version: Optional[int] = None) -> Recommendation:
        """Top-k items for one user's history (raw item ids and scene names, oldest first).

        `target_scene` is the scene the list will be shown in, if known. Unknown items and an
        empty history are fine: the model maps them to out-of-vocabulary ids.
        """
        return self.recommend_batch([item_history], [scene_history], [target_scene], k=k,
                                    timeout=timeout, version=version)[0]

    def next_scene(self, item_history: History, scene_history: History,
                   timeout: Optional[float] = None) -> List[Tuple[str, float]]:
        """The next-scene distribution for one user, most likely first."""
        return self.recommend(item_history, scene_history, timeout=timeout).next_scenes

    # -- model information ----------------------------------------------------------------
    def metadata(self, timeout: Optional[float] = None) -> Dict[str, Dict[str, Dict[str, str]]]:
        """signature name -> {"inputs": {name: dtype}, "outputs": {name: dtype}}."""
        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        self._spec(request.model_spec, None)
        response = self.predictions.GetModelMetadata(request, timeout=timeout or self.timeout)
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(signature_map)
        return {name: {side: {key: types_pb2.DataType.Name(info.dtype)
                              for key, info in getattr(signature, side).items()}
                       for side in ("inputs", "outputs")}
                for name, signature in signature_map.signature_def.items()}

    def status(self, timeout: Optional[float] = None) -> List[Dict[str, object]]:
        """[{"version", "state", "error"}] for every version the server knows, newest first."""
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = self.model_name
        response = self.models.GetModelStatus(request, timeout=timeout or self.timeout)
        states = get_model_status_pb2.ModelVersionStatus.State
        return [{"version": s.version, "state": states.Name(s.state),
                 "error": s.status.error_message}
                for s in response.model_version_status]

    def wait_until_ready(self, timeout: float = 60.0) -> int:
        """Blocks until a version is AVAILABLE; returns it. TimeoutError after `timeout` s."""
        deadline = time.monotonic() + timeout
        last_error = "no answer yet"
        while time.monotonic() < deadline:
            try:
                available = [s["version"] for s in self.status(timeout=2.0)
                             if s["state"] == "AVAILABLE"]
                if available:
                    return max(available)
                last_error = "no version AVAILABLE yet"
            except grpc.RpcError as err:
                last_error = f"{err.code().name}: {err.details()}"
            time.sleep(0.2)
        raise TimeoutError(f"model {self.model_name!r} at {self.target} not ready after "
                           f"{timeout:.0f} s ({last_error})")

    def close(self) -> None:
        """Closes the gRPC channel (also done on leaving a `with` block)."""
        self.channel.close()

    def __enter__(self) -> "DSPnetClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
