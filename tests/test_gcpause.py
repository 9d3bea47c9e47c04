"""Garbage-collection pauses: timed by generation into /metrics, and startup frozen out."""

from __future__ import annotations

import gc
import logging

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from voicegate import gcpause
from voicegate.gcpause import GcPauses


def _sample(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in the exposition")


def test_every_collection_is_timed_by_generation() -> None:
    registry = CollectorRegistry()
    pauses = GcPauses().install()
    registry.register(pauses)
    try:
        gc.collect(2)
        gc.collect(0)
        text = generate_latest(registry).decode()
    finally:
        pauses.uninstall()
    assert _sample(text, 'voicegate_gc_pause_seconds_count{generation="2"}') >= 1
    assert _sample(text, 'voicegate_gc_pause_seconds_count{generation="0"}') >= 1
    inf = _sample(text, 'voicegate_gc_pause_seconds_bucket{generation="2",le="+Inf"}')
    assert inf == _sample(text, 'voicegate_gc_pause_seconds_count{generation="2"}')
    gc.collect(2)  # uninstalled: no longer counted
    again = generate_latest(registry).decode()
    assert _sample(again, 'voicegate_gc_pause_seconds_count{generation="2"}') == inf


def test_a_long_pause_is_logged(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(gcpause, "LOG_PAUSE_S", 0.0)  # every pause counts as long
    pauses = GcPauses().install()
    try:
        with caplog.at_level(logging.WARNING, logger="voicegate"):
            gc.collect(2)
    finally:
        pauses.uninstall()
    assert any("garbage collection of generation 2 paused" in r.message for r in caplog.records)
