"""EdgeMonitor: the event loop's cost per call from its CPU time, and admission that honours it."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from voicegate.calls.edge import EdgeMonitor


class _Clocks:
    def __init__(self) -> None:
        self.wall = 0.0
        self.cpu = 0.0

    def advance(self, seconds: float, busy: float) -> None:
        self.wall += seconds
        self.cpu += seconds * busy


def _monitor(clocks: _Clocks, calls: list[int], **kw: float) -> EdgeMonitor:
    return EdgeMonitor(lambda: calls[0], clock=lambda: clocks.wall, cpu=lambda: clocks.cpu, **kw)


def test_prior_cost_until_enough_calls_are_measured() -> None:
    clocks, calls = _Clocks(), [2]
    edge = _monitor(clocks, calls, budget=0.75, prior_cost=0.01)
    assert edge.capacity == 75
    clocks.advance(1.0, busy=0.5)  # two calls and a busy loop: too few calls to tell
    edge.sample()
    assert edge.utilisation == pytest.approx(0.5)
    assert not edge.is_measured and edge.capacity == 75


def test_measured_cost_sets_the_capacity() -> None:
    clocks, calls = _Clocks(), [20]
    edge = _monitor(clocks, calls, budget=0.75, prior_cost=0.01)
    clocks.advance(1.0, busy=0.4)  # 2% of a core per call
    edge.sample()
    assert edge.is_measured
    assert edge.cost_per_call == pytest.approx(0.02)
    assert edge.capacity == 37  # floor(0.75 / 0.02)
    for _ in range(30):  # the calls got cheaper: the estimate follows, smoothed
        clocks.advance(1.0, busy=0.1)
        edge.sample()
    assert edge.cost_per_call == pytest.approx(0.005, rel=0.01)
    assert 145 <= edge.capacity <= 150


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="budget"):
        EdgeMonitor(lambda: 0, budget=0.0)
    with pytest.raises(ValueError, match="prior"):
        EdgeMonitor(lambda: 0, prior_cost=2.0)


def test_metrics_show_each_limit_and_the_binding_one() -> None:
    clocks, calls = _Clocks(), [10]
    edge = _monitor(clocks, calls, budget=0.5, prior_cost=0.01)
    registry = CollectorRegistry()
    edge.register(registry, lambda: {"engine": 80, "edge": edge.capacity})
    clocks.advance(1.0, busy=0.25)  # 2.5% per call -> 20 calls
    edge.sample()

    def value(name: str, limit: str) -> float | None:
        return registry.get_sample_value(name, {"limit": limit})

    assert value("voicegate_capacity_calls", "engine") == 80
    assert value("voicegate_capacity_calls", "edge") == 20
    assert value("voicegate_capacity_binding", "edge") == 1
    assert value("voicegate_capacity_binding", "engine") == 0
    assert registry.get_sample_value("voicegate_edge_loop_utilisation") == pytest.approx(0.25)
