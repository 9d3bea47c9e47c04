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
