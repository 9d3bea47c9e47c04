"""Engine faults: what counts as one, and the watch that reports each exactly once.

A fault is a tick that raised, a tick whose agent audio holds NaN or inf, or a tick that did not
finish within ``timeout_s`` (a hung model step: the tick thread never comes back to say so, so a
second thread watches the clock). The first fault latches: the engine stops ticking, its
``health()`` names the fault, and ``on_fault(fault)`` runs once, ON THE ENGINE THREAD (raise,
NaN) or ON THE WATCH THREAD (hang): the subscriber hops to its event loop itself
(``loop.call_soon_threadsafe``) and must not block.

Usage (inside ``BatchedEngine``)::

    watch = FaultWatch("echo", timeout_s=2.0, on_fault=subscriber)
    watch.start()                        # serving mode: the hang watch thread
    watch.tick_started(); ...; watch.tick_ended()     # around every tick (two float stores)
    watch.report(FaultKind.NAN, "slot 3: non-finite agent audio")
    watch.close()

Owns: FaultKind, EngineFault, FaultWatch, non_finite_rows. Imports numpy only.
"""

from __future__ import annotations

import enum
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = ["TICK_TIMEOUT_S", "EngineFault", "FaultKind", "FaultWatch", "non_finite_rows"]

log = logging.getLogger("voicegate.engine")

TICK_TIMEOUT_S = 2.0  # a tick running longer than this is hung
# the watch thread looks this often at the tick in progress: a hang is seen at most this late
WATCH_PERIOD_S = 0.05


class FaultKind(enum.Enum):
    RAISE = "raise"  # a tick raised
    NAN = "nan"  # a tick handed back NaN or inf audio
    HANG = "hang"  # a tick did not finish within the timeout


@dataclass(frozen=True, slots=True)
class EngineFault:
    """One engine fault: its kind, what happened, and when (``time.monotonic()``)."""

    engine: str
    kind: FaultKind
    detail: str
    at: float

    def describe(self) -> str:
        return f"engine fault: {self.engine}: {self.kind.value}: {self.detail}"


class FaultWatch:
    """Latches the first fault of one engine and reports it once; watches for hung ticks."""

    def __init__(
        self,
        engine: str,
        *,
        timeout_s: float = TICK_TIMEOUT_S,
        on_fault: Callable[[EngineFault], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._engine = engine
        self._timeout_s = timeout_s
        self.on_fault = on_fault
        self._clock = clock
        self._lock = threading.Lock()
        self._fault: EngineFault | None = None
        self._tick_started_at = 0.0  # 0.0: no tick in progress (written by the engine thread)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def fault(self) -> EngineFault | None:
        return self._fault

    def start(self) -> None:
        """Start the hang watch thread (serving mode; not with ``timeout_s <= 0``)."""
        if self._timeout_s <= 0 or self._thread is not None:
            return
        self._thread = threading.Thread(
            target=self._watch, name=f"voicegate-engine-watch-{self._engine}", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def tick_started(self) -> None:
        self._tick_started_at = self._clock()

    def tick_ended(self) -> None:
        self._tick_started_at = 0.0

    def report(self, kind: FaultKind, detail: str) -> bool:
        """Latch a fault; True for the first one (then ``on_fault`` ran), False after."""
        with self._lock:
            if self._fault is not None:
                return False
            fault = self._fault = EngineFault(self._engine, kind, detail, self._clock())
        log.error("%s", fault.describe())
        callback = self.on_fault
        if callback is not None:
            try:
                callback(fault)
            except Exception:
                log.exception("engine %s: the fault subscriber raised", self._engine)
        return True

    def _watch(self) -> None:
        timeout_s = self._timeout_s
        period_s = min(WATCH_PERIOD_S, timeout_s / 4)
        while not self._stop.wait(period_s):
            started = self._tick_started_at
            if started and self._fault is None:
                running_s = self._clock() - started
                if running_s > timeout_s:
                    self.report(
                        FaultKind.HANG,
                        f"a tick has run {running_s:.1f} s (limit {timeout_s:g} s)",
                    )
            if self._fault is not None:
                return


def non_finite_rows(
    pcm: npt.NDArray[np.float32], n_rows: int, is_active: npt.NDArray[np.bool_]
) -> str:
    """'' when the agent audio of the active rows is finite, else which of them hold NaN/inf.

    Every tick: one reduction over the rows stepped, no copy (about 55 us for 80 rows on this
    machine's CPU); only a non-finite sum looks at the rows one by one (rows of free slots may
    hold anything and do not count, and a finite sum that overflowed finds no bad row).
    """
    if math.isfinite(float(pcm[:n_rows].sum())):
        return ""
    bad = [int(i) for i in np.flatnonzero(is_active[:n_rows]) if not np.isfinite(pcm[i]).all()]
    if not bad:
        return ""
    more = f" and {len(bad) - 8} more" if len(bad) > 8 else ""
    return "slot(s) " + ", ".join(map(str, bad[:8])) + more
