"""infra/k8s/: every manifest validated offline against the Kubernetes schemas (strict: unknown
fields fail), plus what the schemas cannot see: drain timing and probes agree with the
gateway's settings, GPUs are whole limits, ConfigMaps are folder mounts (live reload), one
per-pod address per replica, the Kamailio ConfigMap carries infra/kamailio/kamailio.cfg, and the
example personas and numbers load."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from voicegate.app import create_app
from voicegate.config import Settings
from voicegate.personas.store import NumbersStore, PersonaStore

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "infra" / "k8s"
KUBERNETES_VERSION = "1.30"  # the oldest version with the preStop `sleep` action at GA
SHUTDOWN_MARGIN_S = 10  # after the drain: closing sockets, flushing events, process exit


def docs() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for path in sorted(K8S.glob("*.yaml")):
        out += [(path.name, d) for d in yaml.safe_load_all(path.read_text()) if d]
    return out


def find(kind: str, name: str) -> dict[str, Any]:
    for _, doc in docs():
        if doc["kind"] == kind and doc["metadata"]["name"] == name:
            return doc
    raise AssertionError(f"no {kind} {name} in infra/k8s")


def gateway_container() -> dict[str, Any]:
    sts = find("StatefulSet", "voicegate")
    (container,) = sts["spec"]["template"]["spec"]["containers"]
    return container  # type: ignore[no-any-return]


def env_values() -> dict[str, str]:
    return {e["name"]: e["value"] for e in gateway_container()["env"] if "value" in e}


def gateway_settings() -> Settings:
    """The pod's settings as the gateway would read them (literal env values only)."""
    values = {k[len("VOICEGATE_") :].lower(): v for k, v in env_values().items()}
    values = {k: v for k, v in values.items() if "$(" not in v}
    return Settings(**{k: v for k, v in values.items() if k in Settings.model_fields})


@pytest.mark.parametrize(("file", "doc"), docs(), ids=lambda v: v if isinstance(v, str) else "")
def test_manifest_validates_strictly(file: str, doc: dict[str, Any]) -> None:
    for version in (KUBERNETES_VERSION, kubernetes_validate.latest_version()):
        kubernetes_validate.validate(doc, version, strict=True)


def test_validation_catches_a_typo() -> None:
    # the check above is real: a misspelt field fails
    doc = yaml.safe_load(yaml.safe_dump(find("StatefulSet", "voicegate")))
    spec = doc["spec"]["template"]["spec"]
    spec["terminationGracePeriodSecond"] = spec.pop("terminationGracePeriodSeconds")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_every_voicegate_variable_is_a_setting_and_parses() -> None:
    names = {e["name"] for e in gateway_container()["env"] if e["name"].startswith("VOICEGATE_")}
    fields = {f"VOICEGATE_{f.upper()}" for f in Settings.model_fields}
    assert names <= fields, names - fields
    settings = gateway_settings()
    assert settings.fleet_enabled and settings.engine == "personaplex"


def test_drain_fits_in_the_grace_period() -> None:
    pod = find("StatefulSet", "voicegate")["spec"]["template"]["spec"]
    container = gateway_container()
    pre_stop_s = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    drain_s = gateway_settings().drain_timeout_s
    grace_s = pod["terminationGracePeriodSeconds"]
    # the grace countdown starts before preStop; SIGTERM comes after it, then the drain
    assert grace_s >= pre_stop_s + drain_s + SHUTDOWN_MARGIN_S, (grace_s, pre_stop_s, drain_s)
    # a pod that is full is never killed by its liveness probe: /healthz does not depend on load
    liveness = container["livenessProbe"]
    assert liveness["httpGet"]["path"] == "/healthz"


def test_probes_and_ports_agree_with_the_app() -> None:
    container = gateway_container()
    settings = gateway_settings()
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["http"] == settings.port
    assert ports["sip-udp"] == ports["sip-tcp"] == settings.sip_port
    app_paths = {getattr(r, "path", "") for r in create_app(settings).routes}
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        assert container[probe]["httpGet"] == {"path": path, "port": "http"}
        assert path in app_paths
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    # unready within one readiness period of a drain (SIGTERM answers /readyz 503 at once)
    readiness = container["readinessProbe"]
    assert readiness["periodSeconds"] * readiness["failureThreshold"] <= settings.fleet_ttl_s
    assert settings.fleet_heartbeat_s < settings.fleet_ttl_s
    annotations = find("StatefulSet", "voicegate")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(settings.port)
    assert annotations["prometheus.io/path"] in app_paths


def test_one_whole_gpu_per_pod_and_read_only_models() -> None:
    container = gateway_container()
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert "nvidia.com/gpu" not in container["resources"].get("requests", {})
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["models"]["readOnly"] is True
    assert mounts["models"]["mountPath"] == str(gateway_settings().model_dir)
    # live reload: ConfigMaps mounted as folders (a subPath mount never sees an update)
    for name in ("personas", "numbers"):
        assert "subPath" not in mounts[name]
    settings = gateway_settings()
    assert settings.personas_dir == Path(mounts["personas"]["mountPath"])
    assert settings.numbers_file.parent == Path(mounts["numbers"]["mountPath"])


def test_selectors_match_and_every_replica_has_its_address() -> None:
    sts = find("StatefulSet", "voicegate")
    labels = sts["spec"]["template"]["metadata"]["labels"]
    for kind, name in (("PodDisruptionBudget", "voicegate"), ("Service", "voicegate")):
        doc = find(kind, name)
        selector = doc["spec"]["selector"]
        selector = selector.get("matchLabels", selector)
        assert selector.items() <= labels.items(), (kind, name)
    assert find("Service", sts["spec"]["serviceName"])["spec"]["clusterIP"] == "None"
    replicas = sts["spec"]["replicas"]
    env = env_values()
    fleet_host = env["VOICEGATE_PUBLIC_URL"].removeprefix("https://")
    pod_url = env["VOICEGATE_FLEET_POD_URL"]
    ingress = find("Ingress", "voicegate")
    hosts = {
        r["host"]: r["http"]["paths"][0]["backend"]["service"]["name"]
        for r in ingress["spec"]["rules"]
    }
    assert hosts.pop(fleet_host) == "voicegate"
    for i in range(replicas):
        pod = f"voicegate-{i}"
        host = pod_url.replace("$(POD_NAME)", pod).removeprefix("https://")
        assert hosts.pop(host) == pod
        service = find("Service", pod)
        assert service["spec"]["selector"] == {"statefulset.kubernetes.io/pod-name": pod}
    assert not hosts
    dispatcher = find("ConfigMap", "voicegate-kamailio")["data"]["dispatcher.list"]
    assert len(dispatcher.strip().splitlines()) == replicas


def test_kamailio_configmap_is_the_tested_config() -> None:
    data = find("ConfigMap", "voicegate-kamailio")["data"]
    assert data["kamailio.cfg"] == (ROOT / "infra" / "kamailio" / "kamailio.cfg").read_text()


def test_example_personas_and_numbers_load(tmp_path: Path) -> None:
    personas = tmp_path / "personas"
    personas.mkdir()
    for name, text in find("ConfigMap", "voicegate-personas")["data"].items():
        (personas / name).write_text(text)
    numbers = tmp_path / "numbers.yaml"
    numbers.write_text(find("ConfigMap", "voicegate-numbers")["data"]["numbers.yaml"])
    store = PersonaStore(personas, settle_s=0)
    assert not [p for p in store.load() if p.is_error]
    routes = NumbersStore(numbers, store)
    assert not [p for p in routes.load() if p.is_error]
    assert routes.route("+14155550101") == "support_agent"


def test_persona_reload_follows_a_configmap_swap(tmp_path: Path) -> None:
    """Kubernetes' atomic update: a new timestamped folder, `..data` re-pointed by rename."""
    mount = tmp_path / "personas"
    mount.mkdir()
    text = find("ConfigMap", "voicegate-personas")["data"]["support_agent.yaml"]

    def project(version: int, body: str) -> None:
        folder = mount / f"..2026_12_03_00_00_0{version}.000"
        folder.mkdir()
        (folder / "support_agent.yaml").write_text(body)
        (mount / "..data_tmp").symlink_to(folder.name)
        os.replace(mount / "..data_tmp", mount / "..data")
        if not (mount / "support_agent.yaml").is_symlink():
            (mount / "support_agent.yaml").symlink_to("..data/support_agent.yaml")

    project(1, text)
    store = PersonaStore(mount, settle_s=0)
    store.load()
    assert "patient" in store.get("support_agent").text_prompt
    old = next(mount.glob("..2026*"))
    project(2, text.replace("patient", "cheerful"))
    shutil.rmtree(old)  # the kubelet deletes the old folder after the swap
    deadline = time.monotonic() + 5
    while "cheerful" not in store.get("support_agent").text_prompt:
        store.poll()
        assert time.monotonic() < deadline, "the swapped persona was not reloaded"
        time.sleep(0.05)
