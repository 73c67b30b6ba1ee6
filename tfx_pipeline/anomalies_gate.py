"""A gate after ExampleValidator: anomalies stop the pipeline before Transform and training."""

# No `from __future__ import annotations`: TFX reads the component's type hints at runtime.
import os
from typing import List

import tensorflow as tf
from tensorflow_metadata.proto.v0 import anomalies_pb2
from tfx import v1 as tfx
from tfx.types import artifact_utils

ANOMALIES_FILE = "SchemaDiff.pb"


class DataAnomaliesError(RuntimeError):
    """ExampleValidator found anomalies; the message lists split, feature and description."""


def describe_anomalies(anomalies_uri: str, splits: List[str]) -> List[str]:
    """One line per anomalous feature: 'split: feature: description'."""
    problems = []
    for split in splits:
        path = os.path.join(anomalies_uri, f"Split-{split}", ANOMALIES_FILE)
        if not tf.io.gfile.exists(path):
            continue
        proto = anomalies_pb2.Anomalies()
        with tf.io.gfile.GFile(path, "rb") as handle:
            proto.ParseFromString(handle.read())
        for feature, info in sorted(proto.anomaly_info.items()):
            text = info.description or info.short_description or "anomaly"
            problems.append(f"{split}: {feature}: {text}")
        if proto.HasField("dataset_anomaly_info"):
            problems.append(f"{split}: <dataset>: {proto.dataset_anomaly_info.description}")
    return problems


@tfx.dsl.components.component
def AnomaliesGate(  # pylint: disable=invalid-name
    anomalies: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.ExampleAnomalies],
) -> None:
    """Fails the run (so nothing downstream executes) if ExampleValidator found anomalies."""
    splits = artifact_utils.decode_split_names(anomalies.split_names)
    problems = describe_anomalies(anomalies.uri, splits)
    if problems:
        raise DataAnomaliesError(
            "ExampleValidator found data anomalies; fix the data or update the schema:\n  "
            + "\n  ".join(problems)
        )


# @component replaced the function with a generated component class (and an executor class it
# also sets on this module); both carry the function's description, for the API reference.
AnomaliesGate.__doc__ = AnomaliesGate.test_call.__doc__
AnomaliesGate.EXECUTOR_SPEC.executor_class.__doc__ = (
    "The executor @component generated for AnomaliesGate: runs the function in TFX.")
