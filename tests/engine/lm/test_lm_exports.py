"""The public surface of voicegate.engine.lm is exactly its ``__all__``."""

from __future__ import annotations

import voicegate.engine.lm as lm


def test_all_is_sorted_and_importable() -> None:
    assert lm.__all__ == sorted(lm.__all__)
    public = {name for name in dir(lm) if not name.startswith("_")}
    submodules = {
        "checkpoint",
        "config",
        "model",
        "prompt",
        "reanchor",
        "runtime",
        "sampling",
        "state",
        "textpass",
    }
    assert set(lm.__all__) == public - submodules - {"annotations"}
