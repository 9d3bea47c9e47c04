"""Dockerfile and infra/docker-compose.yml, checked by reading (no Docker engine here).

Every VOICEGATE_* variable they set must be a real setting, what the Dockerfile copies must
exist and not be docker-ignored, weights must be a mounted volume (never copied in), and the
compose file must reserve a GPU and wire the gateway to its Redis.
"""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path

import yaml

from voicegate.config import Settings

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "Dockerfile").read_text()
COMPOSE = yaml.safe_load((ROOT / "infra" / "docker-compose.yml").read_text())


def _dockerfile_env() -> dict[str, str]:
    text = DOCKERFILE.replace("\\\n", " ")
    env: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("ENV "):
            env.update(re.findall(r"(\w+)=(\S+)", line[4:]))
    return env


def test_voicegate_variables_are_settings() -> None:
    fields = {f"VOICEGATE_{name.upper()}" for name in Settings.model_fields}
    used = {k for k in _dockerfile_env() if k.startswith("VOICEGATE_")}
    used |= set(COMPOSE["services"]["gateway"]["environment"])
    assert used and used <= fields, used - fields


def test_dockerfile_serves_with_weights_mounted_at_models() -> None:
    env = _dockerfile_env()
    assert env["VOICEGATE_MODEL_DIR"] == "/models"
    assert env["VOICEGATE_ENGINE"] == "personaplex"
    assert re.search(r'^VOLUME \[.*"/models"', DOCKERFILE, re.M)
    assert 'ENTRYPOINT ["tini", "--", "voicegate"]' in DOCKERFILE
    assert 'CMD ["serve"]' in DOCKERFILE
    assert re.search(r"^FROM \$\{CUDA_IMAGE\}", DOCKERFILE, re.M)
    assert re.search(r"^ARG CUDA_IMAGE=nvidia/cuda:[\w.]+-runtime-", DOCKERFILE, re.M)
    assert "--index-url" in DOCKERFILE and "torch==${TORCH_VERSION}" in DOCKERFILE
    assert not re.search(r"safetensors|\.pt\b|/models\s*$", DOCKERFILE.split("COPY", 1)[1])


def test_copied_paths_exist_and_are_not_dockerignored() -> None:
    ignored = [
        p.strip()
        for p in (ROOT / ".dockerignore").read_text().splitlines()
        if p.strip() and not p.startswith("#")
    ]
    for line in DOCKERFILE.splitlines():
        if line.startswith("COPY "):
            for src in line.split()[1:-1]:
                assert (ROOT / src).exists(), src
                assert not any(fnmatch.fnmatch(src, pat) for pat in ignored), src


def test_compose_reserves_a_gpu_and_wires_redis() -> None:
    gateway = COMPOSE["services"]["gateway"]
    devices = gateway["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert gateway["environment"]["VOICEGATE_REDIS_URL"] == "redis://redis:6379/0"
    assert gateway["depends_on"]["redis"]["condition"] == "service_healthy"
    assert "redis" in COMPOSE["services"]
    volumes = [re.sub(r"\$\{[^}]*\}", "HOST", m) for m in gateway["volumes"]]
    mounts = {m.split(":")[1] for m in volumes}
    assert {"/models", "/app/personas"} <= mounts
    assert gateway["build"]["context"] == ".."
    assert (ROOT / "infra" / gateway["build"]["context"] / gateway["build"]["dockerfile"]).is_file()
    assert "HOST:/models:ro" in volumes
