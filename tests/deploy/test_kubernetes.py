"""The Kubernetes manifests under deploy/kubernetes: every object validates against the API's schemas
offline (kubernetes-validate's bundled schemas, strict: unknown fields refused), the configs in the
ConfigMaps pass edge-agent's own loaders, and the pods run as the brief of issue #21 asks."""

from __future__ import annotations

import os
import pathlib
import sys
import tempfile
from typing import Any

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
MANIFESTS = sorted((ROOT / "deploy" / "kubernetes").glob("*.yaml"))
# the oldest release we claim (grpc probes are GA since 1.27; k3s and KubeEdge track recent releases) and the
# newest the bundled schemas know
VERSIONS = ("1.30.0", "1.37.0")


def _objects(path: pathlib.Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc is not None]


OBJECTS = [(path, obj) for path in MANIFESTS for obj in _objects(path)]


def _id(item: tuple[pathlib.Path, dict[str, Any]]) -> str:
    path, obj = item
    return f"{path.name}:{obj['kind']}/{obj['metadata']['name']}"


def _by_kind(kind: str) -> list[dict[str, Any]]:
    return [obj for _, obj in OBJECTS if obj["kind"] == kind]


def _config(name: str, key: str) -> str:
    [config_map] = [obj for obj in _by_kind("ConfigMap") if obj["metadata"]["name"] == name]
    text: str = config_map["data"][key]
    return text


def test_the_manifests_hold_what_the_fleet_needs() -> None:
    kinds = sorted(_id(item).split(":")[1] for item in OBJECTS)
    assert kinds == ["ConfigMap/edge-agent-gateway", "ConfigMap/edge-agent-line3", "DaemonSet/edge-agent-line3",
                     "Deployment/edge-agent-gateway", "Namespace/edge-agent", "Namespace/edge-agent-boxes",
                     "PodDisruptionBudget/edge-agent-gateway", "Service/edge-agent-gateway", "Service/ollama",
                     "StatefulSet/ollama"]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("item", OBJECTS, ids=_id)
def test_validates_against_the_api_schemas_offline(item: tuple[pathlib.Path, dict[str, Any]], version: str) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="the dev extra's kubernetes-validate")
    kubernetes_validate.validate(item[1], version, strict=True)  # raises ValidationError naming the field


def test_the_validator_refuses_what_it_is_for() -> None:
    """Strict validation for real: a misspelt field and a wrong type are refused."""
    kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="the dev extra's kubernetes-validate")
    [deployment] = _by_kind("Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    for bad in ({**container, "readinessProbes": container["readinessProbe"]}, {**container, "ports": "50061"}):
        broken = {**deployment, "spec": {**deployment["spec"], "template": {
            **deployment["spec"]["template"], "spec": {**deployment["spec"]["template"]["spec"], "containers": [bad]}}}}
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(broken, VERSIONS[0], strict=True)


def _pod_specs() -> list[tuple[str, dict[str, Any]]]:
    return [(obj["metadata"]["name"], obj["spec"]["template"]["spec"])
            for obj in _by_kind("Deployment") + _by_kind("StatefulSet") + _by_kind("DaemonSet")]


@pytest.mark.parametrize(("name", "pod"), _pod_specs(), ids=lambda v: v if isinstance(v, str) else "")
def test_every_pod_runs_non_root_read_only_with_no_capabilities_and_limits(name: str, pod: dict[str, Any]) -> None:
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] >= 1000
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod.get("hostNetwork", False) is False and pod["automountServiceAccountToken"] is False
    for container in pod["containers"]:
        context = container["securityContext"]
        assert context == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                           "capabilities": {"drop": ["ALL"]}}, name
        assert container["resources"]["limits"]["memory"], name


def test_the_gateway_pool_is_probed_through_the_grpc_health_service() -> None:
    [deployment] = _by_kind("Deployment")
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert container["readinessProbe"]["grpc"] == {"port": 50061, "service": "edge_agent.v1.Escalation"}
    [service] = [s for s in _by_kind("Service") if s["metadata"]["name"] == "edge-agent-gateway"]
    assert service["spec"]["clusterIP"] == "None"  # headless: the agents balance over every gateway themselves
    [budget] = _by_kind("PodDisruptionBudget")
    assert budget["spec"]["selector"] == deployment["spec"]["selector"] and budget["spec"]["minAvailable"] >= 1
    [ollama] = _by_kind("StatefulSet")
    assert ollama["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"


def test_the_gateway_config_map_passes_the_gateways_loader() -> None:
    from agent.gateway.config import gateway_plaintext_channels, load_gateway_config

    path = ROOT / "deploy" / "kubernetes" / "edge-agent-gateway.yaml"  # never written: loaded from text
    text = _config("edge-agent-gateway", "edge-agent-gateway.yaml")
    config = _load_text(load_gateway_config, text, path)
    replicas = _by_kind("StatefulSet")[0]["spec"]["replicas"]
    urls = [str(server.url) for server in config.ollama.servers]
    assert len(urls) == replicas and all(f"ollama-{i}.ollama." in url for i, url in enumerate(urls))
    assert config.authenticated and gateway_plaintext_channels(config)  # bearer tokens; plain text, as documented


def _load_text(loader: Any, text: str, path: pathlib.Path) -> Any:
    with tempfile.TemporaryDirectory() as folder:
        file = pathlib.Path(folder) / path.name
        file.write_text(text, encoding="utf-8")
        return loader(file, env={})


def test_the_agent_config_map_passes_config_check(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from agent.cli.main import main

    for name in [n for n in os.environ if n.startswith(("EDGE_AGENT_", "EDGE_GATEWAY_"))]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("EDGE_AGENT_DEVICE_ID", "k3s-node-7")  # the DaemonSet's, from spec.nodeName
    # the image's paths, here: the baked-in models and the mounted secrets
    text = _config("edge-agent-line3", "edge-agent.yaml")
    text = text.replace("/opt/edge-agent/models/", f"{ROOT}/models/")
    for secret in ("mqtt-password", "gateway-token"):
        (tmp_path / secret).write_text("s3cret-for-the-test\n", encoding="utf-8")
        text = text.replace(f"/run/secrets/edge-agent/{secret}", str(tmp_path / secret))
    (tmp_path / "agent.yaml").write_text(text, encoding="utf-8")
    monkeypatch.setattr(sys, "argv", ["edge-agent", "config", "check", str(tmp_path / "agent.yaml")])
    with pytest.raises(SystemExit) as exit_info:
        main()
    out = capsys.readouterr()
    assert exit_info.value.code in (0, None), out.out + out.err
    assert ": ok" in out.out
