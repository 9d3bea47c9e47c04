"""STYLE rule 1: a leg knows nothing of the model; it and the persona schema talk to the rest
through ``voicegate.contracts``, so importing one pulls in neither the Call, the engine runtime
nor the Redis writer."""

from __future__ import annotations

import subprocess
import sys

import pytest

LEGS = [
    "voicegate.legs.twilio",
    "voicegate.legs.sip",
    "voicegate.legs.webrtc",
    "voicegate.legs.carriers",
]
NEVER = ("voicegate.calls.call", "voicegate.events.log", "voicegate.engine.runtime")


def imported_by(module: str) -> list[str]:
    """The voicegate modules a fresh interpreter holds after ``import module``."""
    code = (
        f"import sys, {module}; "
        "print('\\n'.join(sorted(m for m in sys.modules if m.startswith('voicegate'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    return out.split()


@pytest.mark.parametrize("leg", LEGS)
def test_importing_a_leg_does_not_import_the_engine(leg: str) -> None:
    assert [m for m in imported_by(leg) if m.startswith("voicegate.engine")] == []


@pytest.mark.parametrize("module", [*LEGS, "voicegate.personas.schema"])
def test_a_leg_or_the_persona_schema_pulls_in_no_call_runtime_or_writer(module: str) -> None:
    modules = imported_by(module)
    assert module in modules and "voicegate.contracts" in modules
    assert [m for m in modules if m in NEVER] == []


def test_app_without_webrtc_imports_neither_aiortc_nor_av() -> None:
    """VOICEGATE_WEBRTC_ENABLED=false: a host without aiortc and av (the GPU bench's) can serve."""
    code = (
        "import sys; from voicegate.app import create_app; from voicegate.config import Settings; "
        "create_app(Settings(webrtc_enabled=False, engine='echo')); "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'aiortc', 'av'}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == "[]"
