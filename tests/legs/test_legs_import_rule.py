"""STYLE rule 1: a leg knows nothing of the model; importing one must not import the engine."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    "leg", ["voicegate.legs.twilio", "voicegate.legs.sip", "voicegate.legs.webrtc"]
)
def test_importing_a_leg_does_not_import_the_engine(leg: str) -> None:
    code = (
        f"import sys, {leg}; "
        "print(sorted(m for m in sys.modules if m.startswith('voicegate.engine')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == "[]"


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
