"""Python's garbage collector, kept off the 20 ms media path.

A full (generation 2) collection walks every tracked object of the process while holding the
interpreter: on a 2-core dev box the full collections of a started gateway took 20-80 ms
(``bench/gateway_bench.py --engine echo``, timed with ``gc.callbacks``; none fell inside its
30 s of 16 calls), more than a Twilio frame; a stall like that makes every call on that loop
late at once (holes at the callers, slot over/underruns at the engine). Most of the heap is what startup built (modules, personas,
models, pydantic schemas), which never becomes garbage. ``settle()`` collects once and then
freezes what is left (``gc.freeze``: later collections skip it), so a full collection walks
only what calls created since. ``GcPauses`` times every collection (``gc.callbacks``) into
``voicegate_gc_pause_seconds{generation}`` and logs a pause over ``LOG_PAUSE_S``.

Owns: settle, GcPauses. Imports prometheus-client.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from voicegate.histogram import FixedHistogram

__all__ = ["GcPauses", "settle"]

log = logging.getLogger("voicegate")

LOG_PAUSE_S = 0.05  # a pause this long shows in the log (then every 100th)
_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25)


def settle(what: str) -> None:
    """Collect, then freeze what survived: startup's objects leave the collector's walk."""
    started = time.perf_counter()
    gc.collect()
    gc.freeze()
    log.info(
        "%s: %d objects frozen out of garbage collection (%.0f ms)",
        what,
        gc.get_freeze_count(),
        (time.perf_counter() - started) * 1000,
    )


class GcPauses(Collector):
    """Every collection's pause by generation, as a histogram; install once per process."""

    def __init__(self) -> None:
        self._started = 0.0
        self._pauses = [FixedHistogram(_BUCKETS) for _ in range(3)]  # by generation
        self._logged = 0

    def install(self) -> GcPauses:
        gc.callbacks.append(self._on_gc)
        return self

    def uninstall(self) -> None:
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        pause = time.perf_counter() - self._started
        generation = min(int(info.get("generation", 2)), 2)
        self._pauses[generation].observe(pause)
        if pause >= LOG_PAUSE_S:
            self._logged += 1
            if self._logged <= 10 or self._logged % 100 == 0:
                log.warning(
                    "garbage collection of generation %d paused the process %.0f ms "
                    "(%d such pauses)",
                    generation,
                    pause * 1000,
                    self._logged,
                )

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(
            "voicegate_gc_pause_seconds",
            "Python garbage collection pauses (the whole process waits), by generation.",
            labels=["generation"],
        )
        for generation, pauses in enumerate(self._pauses):
            family.add_metric([str(generation)], pauses.cumulative(), pauses.sum)
        yield family
