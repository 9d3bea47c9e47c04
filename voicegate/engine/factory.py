"""``create_engine(settings)``: builds the Engine a process serves with.

Settings are read by attribute (``engine``, ``model_dir``, ``device``, ``max_calls``,
``kv_cache_dtype``), so any object with those names works: the pydantic ``Settings`` in the
gateway, a ``SimpleNamespace`` in a benchmark on a machine without pydantic.

Owns: create_engine. Must not import voicegate.config or pydantic at import time; torch is
imported only when a torch backend is asked for.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from voicegate.engine.echo import ECHO_DEFAULT_SLOTS, EchoModel
from voicegate.engine.runtime import BatchedEngine, TickMode
from voicegate.engine.stepper import TickModel
from voicegate.errors import ConfigError

if TYPE_CHECKING:
    from voicegate.config import Settings

__all__ = ["create_engine", "create_model"]

log = logging.getLogger("voicegate.engine")


def create_model(settings: Settings | Any) -> TickModel:
    """The backend named by ``settings.engine``, built but not warmed up."""
    kind = str(getattr(settings, "engine", "tiny"))
    max_calls = int(getattr(settings, "max_calls", 0) or 0)
    if kind == "echo":
        return EchoModel(max_calls or ECHO_DEFAULT_SLOTS)
    if kind == "tiny":
        from voicegate.engine.backends import build_tiny_model

        return build_tiny_model(settings)
    if kind == "personaplex":
        from voicegate.engine.backends import build_personaplex_model

        return build_personaplex_model(settings)
    raise ConfigError(f"VOICEGATE_ENGINE: expected personaplex, tiny or echo, got {kind!r}")


def create_engine(
    settings: Settings | Any, *, offline: bool = False, seed: int | None = None
) -> BatchedEngine:
    """Build the engine (not started: call ``start()`` off the event loop).

    ``offline=True`` ticks as fast as every active slot has input (``voicegate call``, tests).
    """
    model = create_model(settings)
    return BatchedEngine(
        model,
        mode=TickMode.OFFLINE if offline else TickMode.SERVING,
        max_calls=int(getattr(settings, "max_calls", 0) or 0),
        seed=seed,
    )
