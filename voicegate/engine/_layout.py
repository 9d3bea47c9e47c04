"""Checks a checkpoint's tensor names and shapes against a model's, for every model file.

Owns: ``check_layout``. Imports only the error type: no torch, so it runs before any load.
"""

from __future__ import annotations

from pathlib import Path

from voicegate.errors import CheckpointError

_MAX_NAMES_SHOWN = 12

Layout = dict[str, tuple[int, ...]]


def _names(items: list[str]) -> str:
    shown = ", ".join(items[:_MAX_NAMES_SHOWN])
    more = len(items) - _MAX_NAMES_SHOWN
    return shown + (f" ... and {more} more" if more > 0 else "")


def check_layout(what: str, path: Path, found: Layout, expected: Layout) -> None:
    """Raise CheckpointError naming every missing, unexpected and misshapen tensor."""
    missing = sorted(set(expected) - set(found))
    extra = sorted(set(found) - set(expected))
    misshapen = sorted(
        f"{name} (expected {list(expected[name])}, got {list(found[name])})"
        for name in set(expected) & set(found)
        if expected[name] != found[name]
    )
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing: {_names(missing)}")
    if extra:
        problems.append(f"{len(extra)} unexpected: {_names(extra)}")
    if misshapen:
        problems.append(f"{len(misshapen)} misshapen: {_names(misshapen)}")
    if problems:
        raise CheckpointError(
            f"{what} checkpoint {path} does not match the model ({len(expected)} tensors "
            f"expected): " + "; ".join(problems)
        )
