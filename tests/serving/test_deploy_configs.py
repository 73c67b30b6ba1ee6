"""The configs for the real TF Serving parse with its protos; manifests have what they need."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from google.protobuf import text_format

from serving.deploy_configs import parse_batching_parameters, read_batching_parameters, \
    read_model_server_config

DEPLOY = Path(__file__).resolve().parents[2] / "serving" / "deploy"


def test_models_config_is_a_model_server_config():
    config = read_model_server_config(str(DEPLOY / "models.config"))
    (model,) = config.model_config_list.config
    assert model.name == "dspnet" and model.model_platform == "tensorflow"
    assert model.base_path == "/models/dspnet"
    assert model.model_version_policy.latest.num_versions == 2


def test_batching_parameters_parse_and_follow_tf_servings_rules():
    params = read_batching_parameters(str(DEPLOY / "batching_parameters.txt"))
    assert params.max_batch_size.value == 32 and params.batch_timeout_micros.value == 2000
    assert list(params.allowed_batch_sizes) == [1, 8, 32]
    with pytest.raises(text_format.ParseError):
        parse_batching_parameters("max_batch_sise { value: 3 }")  # a typo is caught
    with pytest.raises(ValueError, match="must equal"):
        parse_batching_parameters("max_batch_size { value: 16 } allowed_batch_sizes: 8")


def _containers(manifest):
    return manifest["spec"]["template"]["spec"]["containers"]


def test_kubernetes_manifests():
    docs = {}
    for path in sorted((DEPLOY / "kubernetes").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            docs[doc["kind"]] = doc
    assert set(docs) == {"ConfigMap", "Deployment", "Service"}
    (container,) = _containers(docs["Deployment"])
    assert container["image"].startswith("tensorflow/serving:")
    assert {p["containerPort"] for p in container["ports"]} == {8500, 8501}
    assert container["readinessProbe"]["httpGet"]["path"] == "/v1/models/dspnet"
    assert "livenessProbe" in container
    assert {"cpu", "memory"} <= set(container["resources"]["requests"]) and \
        {"cpu", "memory"} <= set(container["resources"]["limits"])
    args = " ".join(container["args"])
    assert "--model_config_file=/config/models.config" in args and "--enable_batching" in args
    mounted = {v["name"] for v in docs["Deployment"]["spec"]["template"]["spec"]["volumes"]}
    assert {m["name"] for m in container["volumeMounts"]} <= mounted
    selector = docs["Service"]["spec"]["selector"]
    assert selector.items() <= docs["Deployment"]["spec"]["template"]["metadata"]["labels"].items()
    assert {p["port"] for p in docs["Service"]["spec"]["ports"]} == {8500, 8501}
    # The ConfigMap carries configs that parse with the same protos.
    data = docs["ConfigMap"]["data"]
    parse_batching_parameters(data["batching_parameters.txt"])
    from tensorflow_serving.config import model_server_config_pb2

    config = text_format.Parse(data["models.config"], model_server_config_pb2.ModelServerConfig())
    assert config.model_config_list.config[0].name == "dspnet"


def test_compose_file_runs_tf_serving_on_loopback_only():
    compose = yaml.safe_load((DEPLOY / "docker-compose.yaml").read_text())
    service = compose["services"]["tfserving"]
    assert service["image"].startswith("tensorflow/serving:")
    assert all(port.startswith("127.0.0.1:") for port in service["ports"])
    assert any("--model_config_file=" in arg for arg in service["command"])
    assert "healthcheck" in service
