"""voicegate.audio's public surface: __all__ is exactly the sorted public names, and none is async."""

from __future__ import annotations

import inspect

import voicegate.audio as audio


def test_all_is_sorted_and_complete() -> None:
    public = sorted(
        name
        for name, obj in vars(audio).items()
        if not name.startswith("_") and not inspect.ismodule(obj) and name != "annotations"
    )
    assert audio.__all__ == sorted(audio.__all__)
    assert sorted(audio.__all__) == public


def test_nothing_public_is_async() -> None:
    for name in audio.__all__:
        obj = getattr(audio, name)
        members = [obj, *vars(obj).values()] if inspect.isclass(obj) else [obj]
        assert not any(inspect.iscoroutinefunction(m) for m in members), name
