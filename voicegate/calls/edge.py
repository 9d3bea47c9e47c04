"""How many calls the event loop can carry in real time, measured on the loop itself.

The engine's slots are not the only limit on calls: every call's leg work (socket messages,
codecs, resampling, framing, pacing) runs on the one event loop, and a loop that is busy all
the time is late for every call at once (skipped sends, playout holes). ``EdgeMonitor`` samples
the loop thread's CPU time (``time.thread_time`` read from a task on the loop) once a second,
divides it by the calls in progress, and turns the smoothed cost per call into a capacity:
``budget / cost per call``, where ``budget`` is the share of one core the loop may use (default
75%, leaving room for bursts). Until enough calls have been seen to measure, a prior cost per
call (a setting, from the edge benchmark) is used. The CallManager admits no call beyond
``capacity``; /metrics shows the engine's and the edge's limits and which one binds.

Owns: ``EdgeMonitor``. Imports prometheus-client; asyncio only in ``run``.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Gauge

__all__ = ["EdgeMonitor"]

SAMPLE_S = 1.0
MIN_CALLS_TO_MEASURE = 4  # below this the loop's fixed work (metrics, polls) dominates
SMOOTHING = 0.3  # weight of the newest sample in the cost estimate


class EdgeMonitor:
    """The loop's utilisation and the calls it can carry; ``sample()`` once per interval.

    ``budget``: the share of one core the loop may spend (0 < budget <= 1); ``prior_cost``: the
    share of a core one call is assumed to cost before it is measured. ``active`` returns the
    calls in progress now.
    """

    def __init__(
        self,
        active: Callable[[], int],
        *,
        budget: float = 0.75,
        prior_cost: float = 0.01,
        clock: Callable[[], float] = time.monotonic,
        cpu: Callable[[], float] = time.thread_time,
    ) -> None:
        if not 0.0 < budget <= 1.0:
            raise ValueError(f"edge: the loop budget must be in (0, 1], got {budget}")
        if not 0.0 < prior_cost <= 1.0:
            raise ValueError(f"edge: the prior cost per call must be in (0, 1], got {prior_cost}")
        self.active = active
        self.budget = budget
        self.cost_per_call = prior_cost
        self.is_measured = False
        self.utilisation = 0.0
        self.lag_s = 0.0  # how late the last sample ran after its due time
        self._clock = clock
        self._cpu = cpu
        self._last_wall = clock()
        self._last_cpu = cpu()

    @property
    def capacity(self) -> int:
        """Calls the loop can carry within its budget at the measured (or prior) cost."""
        return max(0, math.floor(self.budget / self.cost_per_call))

    def sample(self) -> None:
        """Read the loop thread's CPU since the last sample; update the cost per call."""
        wall, cpu = self._clock(), self._cpu()
        dt = wall - self._last_wall
        if dt <= 0.0:
            return
        self.utilisation = (cpu - self._last_cpu) / dt
        self._last_wall, self._last_cpu = wall, cpu
        calls = self.active()
        if calls >= MIN_CALLS_TO_MEASURE:
            cost = self.utilisation / calls
            if self.is_measured:
                cost = SMOOTHING * cost + (1.0 - SMOOTHING) * self.cost_per_call
            self.cost_per_call = min(1.0, max(cost, 1e-4))
            self.is_measured = True

    async def run(self, interval_s: float = SAMPLE_S) -> None:
        """Sample forever on the running loop (cancel to stop)."""
        self._last_wall, self._last_cpu = self._clock(), self._cpu()
        due = self._clock() + interval_s
        while True:
            await asyncio.sleep(max(0.0, due - self._clock()))
            self.lag_s = max(0.0, self._clock() - due)
            self.sample()
            due += interval_s
            if due < self._clock():
                due = self._clock() + interval_s  # a long stall: no burst of samples after it

    def register(
        self, registry: CollectorRegistry | None, limits: Callable[[], dict[str, int]]
    ) -> None:
        """Gauges: utilisation, cost per call, lag, and every limit on calls (``limits()`` as
        admission sees them, e.g. the engine's slots and this edge) with which one binds."""
        Gauge(
            "voicegate_edge_loop_utilisation",
            "Share of one core the event loop thread used over the last second.",
            registry=registry,
        ).set_function(lambda: self.utilisation)
        Gauge(
            "voicegate_edge_cost_per_call",
            "Share of one core one call costs the event loop (smoothed; a prior until measured).",
            registry=registry,
        ).set_function(lambda: self.cost_per_call)
        Gauge(
            "voicegate_edge_loop_lag_seconds",
            "How late the event loop ran the edge monitor's last 1 s sample.",
            registry=registry,
        ).set_function(lambda: self.lag_s)
        capacity = Gauge(
            "voicegate_capacity_calls",
            "Most simultaneous calls each limit allows (engine slots, the edge's loop budget, "
            "max_calls).",
            ["limit"],
            registry=registry,
        )
        binding = Gauge(
            "voicegate_capacity_binding",
            "1 for the limit that bounds admission now (the smallest), 0 for the others.",
            ["limit"],
            registry=registry,
        )

        def all_limits() -> dict[str, int]:
            return {"edge": self.capacity, **limits()}  # the admitting side's view wins

        for name in all_limits():
            capacity.labels(name).set_function(_limit_of(all_limits, name))
            binding.labels(name).set_function(_is_binding(all_limits, name))


def _limit_of(limits: Callable[[], dict[str, int]], name: str) -> Callable[[], float]:
    return lambda: float(limits().get(name, 0))


def _is_binding(limits: Callable[[], dict[str, int]], name: str) -> Callable[[], float]:
    return lambda: float(_binding(limits()) == name)


def _binding(limits: dict[str, int]) -> str:
    return min(limits, key=lambda k: (limits[k], k))
