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


def _deployment():
    for doc in yaml.safe_load_all((DEPLOY / "kubernetes" / "deployment.yaml").read_text()):
        if doc["kind"] == "Deployment":
            return doc
    raise AssertionError("no Deployment")


def test_kubernetes_pods_run_unprivileged():
    pod = _deployment()["spec"]["template"]["spec"]
    pod_context = pod["securityContext"]
    assert pod_context["runAsNonRoot"] is True
    # The tensorflow/serving image declares no USER (it would run as root), so runAsNonRoot
    # needs a numeric non-root user or the kubelet refuses to start the container.
    assert int(pod_context["runAsUser"]) > 0 and int(pod_context["runAsGroup"]) > 0
    assert pod_context["seccompProfile"] == {"type": "RuntimeDefault"}
    writable = {v["name"] for v in pod["volumes"] if "emptyDir" in v}
    for container in pod["containers"]:
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False
        assert context["readOnlyRootFilesystem"] is True
        assert context["capabilities"] == {"drop": ["ALL"]}
        assert context.get("privileged", False) is False
        # A read-only root still has a writable scratch /tmp.
        assert {m["name"] for m in container["volumeMounts"] if m["mountPath"] == "/tmp"} \
            <= writable and any(m["mountPath"] == "/tmp" for m in container["volumeMounts"])


def _compose_healthcheck():
    service = yaml.safe_load((DEPLOY / "docker-compose.yaml").read_text())["services"]["tfserving"]
    return service["healthcheck"]["test"]


def test_compose_healthcheck_needs_only_bash():
    # The tensorflow/serving image is Ubuntu with ca-certificates and the model server only (its
    # entrypoint is a bash script): no curl, no wget. CMD-SHELL would run /bin/sh (dash), which
    # has no /dev/tcp, so the check runs bash itself.
    test = _compose_healthcheck()
    assert test[0] == "CMD" and test[1] == "bash"
    assert not any(tool in " ".join(test) for tool in ("curl", "wget", "python", "nc "))


def _run_healthcheck(port: int) -> int:
    import subprocess

    command = [arg.replace("$$", "$") for arg in _compose_healthcheck()[1:]]  # compose escaping
    command = [arg.replace("127.0.0.1/8501", f"127.0.0.1/{port}") for arg in command]
    return subprocess.run(command, capture_output=True, timeout=10).returncode


@pytest.mark.parametrize("status, healthy", [(200, True), (404, False)])
def test_compose_healthcheck_passes_only_when_the_model_answers_200(status, healthy):
    """Runs the healthcheck's own command against a stand-in for TF Serving's REST port."""
    import http.server
    import threading

    paths = []

    class Status(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (the http.server name)
            paths.append(self.path)
            self.send_response(status)  # 404 while no version is AVAILABLE
            self.end_headers()
            self.wfile.write(b'{"model_version_status": []}')

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Status)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        assert (_run_healthcheck(server.server_address[1]) == 0) is healthy
        assert paths == ["/v1/models/dspnet"]
    finally:
        server.shutdown()
        server.server_close()
    assert _run_healthcheck(server.server_address[1]) != 0  # nothing listening: unhealthy


def test_batching_and_monitoring_configs_are_used_and_parse_with_the_servers_readers():
    from serving.batching import BatchingOptions
    from serving.monitoring import monitoring_config_class, read_monitoring_config

    options = BatchingOptions.read(str(DEPLOY / "batching_parameters.txt"))
    assert options.max_batch_size == 32 and options.allowed_batch_sizes == (1, 8, 32)
    path = read_monitoring_config(str(DEPLOY / "monitoring.config"))
    assert path == "/monitoring/prometheus/metrics"
    deployment = _deployment()
    (container,) = _containers(deployment)
    assert "--monitoring_config_file=/config/monitoring.config" in container["args"]
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == path and annotations["prometheus.io/port"] == "8501"
    configmap = yaml.safe_load((DEPLOY / "kubernetes" / "configmap.yaml").read_text())
    config = text_format.Parse(configmap["data"]["monitoring.config"], monitoring_config_class()())
    assert config.prometheus_config.enable and config.prometheus_config.path == path
    assert configmap["data"]["batching_parameters.txt"].split() == [
        line for line in (DEPLOY / "batching_parameters.txt").read_text().split()
        if line] or BatchingOptions.from_proto(parse_batching_parameters(
            configmap["data"]["batching_parameters.txt"])) == options
    service = yaml.safe_load((DEPLOY / "docker-compose.yaml").read_text())["services"]["tfserving"]
    assert "--monitoring_config_file=/models/config/monitoring.config" in service["command"]
    assert "--enable_batching=true" in service["command"]
    assert service["labels"]["prometheus.io/path"] == path
