"""``voicegate.pipecat``'s public names are exactly its ``__all__``, and the core never imports
it (nor pipecat): the extra stays optional."""

from __future__ import annotations

import subprocess
import sys

import voicegate.pipecat as vg_pipecat


def test_exports_are_sorted_and_importable() -> None:
    assert vg_pipecat.__all__ == sorted(vg_pipecat.__all__)
    public = {n for n in vars(vg_pipecat) if not n.startswith("_")}
    assert public - {"engine", "service", "annotations"} == set(vg_pipecat.__all__)


def test_the_gateway_without_carriers_imports_no_pipecat() -> None:
    code = (
        "import sys; from voicegate.app import create_app; from voicegate.config import Settings; "
        "create_app(Settings(engine='echo')); import voicegate.cli; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'pipecat' "
        "or m.startswith(('voicegate.pipecat', 'voicegate.legs.carriers'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == "[]"
