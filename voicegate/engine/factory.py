"""``create_engine(settings)``: builds the Engine a process serves with.

Settings are read by attribute (``engine``, ``model_dir``, ``device``, ``max_calls``,
``kv_cache_dtype``, ``engine_tick_timeout_s`` and the test-only ``engine_fault*``), so any object with those names works: the pydantic ``Settings`` in the
gateway, a ``SimpleNamespace`` in a benchmark on a machine without pydantic.

Owns: create_engine. Must not import voicegate.config or pydantic at import time; torch is
imported only when a torch backend is asked for.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from voicegate.engine.echo import ECHO_DEFAULT_SLOTS, EchoModel
from voicegate.engine.health import TICK_TIMEOUT_S
from voicegate.engine.runtime import BatchedEngine, TickMode
from voicegate.engine.stepper import TickModel
from voicegate.errors import ConfigError

if TYPE_CHECKING:
    from voicegate.config import Settings

__all__ = ["create_engine", "create_model"]

log = logging.getLogger("voicegate.engine")


def create_model(settings: Settings | Any, *, generation: int = 0) -> TickModel:
    """The backend named by ``settings.engine``, built but not warmed up.

    ``generation``: how many engines the gateway built before this one (0 at start-up, then one
    more per rebuild); the TEST-only ``engine_fault`` wraps the first ``engine_fault_engines``.
    """
    model = _backend(settings)
    fault = str(getattr(settings, "engine_fault", "") or "")
    if not fault:
        return model
    from voicegate.engine.faulty import FaultInjectingModel

    return FaultInjectingModel(
        model,
        fault if generation < int(getattr(settings, "engine_fault_engines", 1)) else "",
        after_s=float(getattr(settings, "engine_fault_after_s", 1.0)),
        min_calls=int(getattr(settings, "engine_fault_calls", 1)),
        warmup_s=float(getattr(settings, "engine_fault_warmup_s", 0.0)),
    )


def _backend(settings: Settings | Any) -> TickModel:
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
    settings: Settings | Any,
    *,
    offline: bool = False,
    seed: int | None = None,
    generation: int = 0,
) -> BatchedEngine:
    """Build the engine (not started: call ``start()`` off the event loop).

    ``offline=True`` ticks as fast as every active slot has input (``voicegate call``, tests).
    ``generation`` counts rebuilds (``create_model``).
    """
    model = create_model(settings, generation=generation)
    return BatchedEngine(
        model,
        mode=TickMode.OFFLINE if offline else TickMode.SERVING,
        max_calls=int(getattr(settings, "max_calls", 0) or 0),
        seed=seed,
        tick_timeout_s=float(getattr(settings, "engine_tick_timeout_s", TICK_TIMEOUT_S)),
    )
