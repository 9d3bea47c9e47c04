"""Where the event loop was when it stalled: stacks sampled during a late probe (diagnostics).

``voicegate_event_loop_lag_seconds`` says how often the loop ran late, not why. With
``VOICEGATE_STALL_TRACE_MS`` set, a watcher thread checks every ``poll_s`` whether the loop's
lag probe (``LoopLag``) is overdue by more than the threshold; if so it takes every thread's
Python stack once for that probe (``sys._current_frames``): the loop thread's innermost frames
say which callback held it (a stack of only the loop's own ``run`` frame: the loop was between
callbacks, in its own C code or waiting for the interpreter lock), and the other threads' top
frames where each stood (a thread blocked in C code, such as a queue's ``get``, shows the
Python line that called it; those plainly waiting in ``select``, ``wait`` or ``sleep`` are
left out).
Stacks are counted by signature and the most common are logged every ``report_s`` and at stop.

Costs a thread waking every 4 ms: meant for a benchmark or an incident, off by default.

Owns: StallWatch. Imports the standard library only.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from types import FrameType

__all__ = ["StallWatch"]

log = logging.getLogger("voicegate")

_FRAMES = 6  # innermost frames kept per stack
_BLOCKED = {"select", "poll", "wait", "sleep", "_wait_for_tstate_lock", "acquire", "recv"}


def _stack(frame: FrameType | None, depth: int = _FRAMES) -> list[str]:
    out: list[str] = []
    while frame is not None and len(out) < depth:
        code = frame.f_code
        path = code.co_filename
        if path.startswith("<frozen importlib"):  # an import: show who imports, not how
            if not out or out[-1] != "(import)":
                out.append("(import)")
            frame = frame.f_back
            continue
        cut = path.rfind("voicegate/")
        short = path[cut:] if cut >= 0 else path.rsplit("/", 2)[-1]
        out.append(f"{short}:{frame.f_lineno} {code.co_name}")
        frame = frame.f_back
    return out


class StallWatch:
    """Samples thread stacks while ``due()`` (the lag probe's next wake-up) is overdue."""

    def __init__(
        self,
        due: Callable[[], float],
        threshold_s: float,
        *,
        poll_s: float = 0.004,
        report_s: float = 30.0,
    ) -> None:
        self._due = due
        self.threshold_s = threshold_s
        self.poll_s = poll_s
        self.report_s = report_s
        self.loop_thread = threading.get_ident()  # made on the loop's thread
        self.stalls = 0
        self.signatures: Counter[str] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stall-watch", daemon=True)

    def start(self) -> StallWatch:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2)
        self.report()

    def sample(self) -> str:
        """Every thread's stack now, as one signature (the loop thread's first)."""
        frames = sys._current_frames()
        me = threading.get_ident()
        names = {t.ident: t.name for t in threading.enumerate()}
        parts = ["loop: " + " < ".join(_stack(frames.get(self.loop_thread)))]
        for ident, frame in frames.items():
            if ident in (me, self.loop_thread):
                continue
            top = _stack(frame, 2)
            if top and top[0].rsplit(" ", 1)[-1] not in _BLOCKED:  # a thread running Python
                parts.append(f"{names.get(ident, ident)}: " + " < ".join(top))
        return " | ".join(parts)

    def _run(self) -> None:
        sampled_for = -1.0
        next_report = time.monotonic() + self.report_s
        while not self._stop.wait(self.poll_s):
            now = time.monotonic()
            due = self._due()
            if due != sampled_for and now > due + self.threshold_s:
                sampled_for = due
                self.stalls += 1
                self.signatures[self.sample()] += 1
            if now >= next_report:
                next_report = now + self.report_s
                self.report()

    def report(self) -> None:
        if not self.signatures:
            return
        log.warning(
            "event loop stalls over %.0f ms: %d so far; most common stacks:\n%s",
            self.threshold_s * 1000,
            self.stalls,
            "\n".join(f"  {n} x {sig}" for sig, n in self.signatures.most_common(8)),
        )
