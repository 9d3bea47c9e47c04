"""The Twilio leg's public names are exactly its package ``__all__`` (STYLE rule 5)."""

from __future__ import annotations

import voicegate.legs.twilio as twilio


def test_exports_are_sorted_and_importable() -> None:
    assert twilio.__all__ == sorted(twilio.__all__, key=lambda n: (not n.isupper(), n))
    for name in twilio.__all__:
        assert getattr(twilio, name) is not None
    public = {n for n in vars(twilio) if not n.startswith("_")}
    modules = {
        "metrics",
        "nextsteps",
        "playout",
        "protocol",
        "routes",
        "security",
        "sim",
        "stream",
        "twiml",
        "annotations",
    }
    assert public - modules == set(twilio.__all__)
