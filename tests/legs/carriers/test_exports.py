"""The carrier legs' public names are exactly the package ``__all__`` (STYLE rule 5)."""

from __future__ import annotations

import voicegate.legs.carriers as carriers


def test_exports_are_sorted_and_importable() -> None:
    assert carriers.__all__ == sorted(carriers.__all__, key=lambda n: (not n.isupper(), n))
    for name in carriers.__all__:
        assert getattr(carriers, name) is not None
    public = {n for n in vars(carriers) if not n.startswith("_")}
    modules = {"control", "protocols", "routes", "security", "sim", "stream", "annotations"}
    assert public - modules == set(carriers.__all__)
