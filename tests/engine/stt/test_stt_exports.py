"""The public surface of voicegate.engine.stt is exactly its ``__all__``."""

from __future__ import annotations

import voicegate.engine.stt as stt


def test_all_is_sorted_and_importable() -> None:
    assert stt.__all__ == sorted(stt.__all__)
    public = {name for name in dir(stt) if not name.startswith("_")}
    submodules = {"checkpoint", "config", "model", "release", "runtime", "tick"}
    assert set(stt.__all__) == public - submodules - {"annotations"}
