"""/metrics of several edge workers: one exposition, merged."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from voicegate.edge.metrics import MetricsShare, exposition, merge_expositions


def worker_registry(calls: int, loop: float, slots: int) -> CollectorRegistry:
    registry = CollectorRegistry()
    Counter("voicegate_calls", "Calls ended.", ["leg"], registry=registry).labels("twilio").inc(
        calls
    )
    Gauge("voicegate_edge_loop_utilisation", "Loop busy.", registry=registry).set(loop)
    Gauge("voicegate_engine_max_slots", "Slots.", registry=registry).set(slots)
    capacity = Gauge("voicegate_capacity_calls", "Calls.", ["limit"], registry=registry)
    capacity.labels("engine").set(slots)
    capacity.labels("edge").set(calls * 10)
    h = Histogram("voicegate_x_seconds", "A latency.", registry=registry, buckets=(0.1, 1.0))
    for _ in range(calls):
        h.observe(0.05)
    return registry


def samples(text: bytes) -> dict[str, float]:
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text.decode()):
        for s in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return out


async def test_counts_add_up_engine_figures_are_taken_once_loops_by_the_busiest(
    tmp_path: Path,
) -> None:
    a, b = MetricsShare(tmp_path, 0), MetricsShare(tmp_path, 1)
    a.registry = worker_registry(3, 0.4, 64)
    b.registry = worker_registry(5, 0.7, 64)
    Counter("voicegate_sip_x", "Only in one worker.", ["leg"], registry=b.registry).labels(
        "sip"
    ).inc()
    Counter("voicegate_calls_y", "Another.", registry=b.registry).inc()
    b.write()
    merged = samples(await a.text())
    assert merged["voicegate_calls_total{leg=twilio}"] == 8
    assert merged["voicegate_sip_x_total{leg=sip}"] == 1  # a family only one worker has
    assert merged["voicegate_x_seconds_count"] == 8
    assert merged["voicegate_x_seconds_bucket{le=0.1}"] == 8
    assert merged["voicegate_engine_max_slots"] == 64  # one engine, not 128
    assert merged["voicegate_edge_loop_utilisation"] == 0.7  # the busiest loop limits
    assert merged["voicegate_capacity_calls{limit=engine}"] == 64
    assert merged["voicegate_capacity_calls{limit=edge}"] == 80  # each worker's loop budget


async def test_a_gone_workers_old_snapshot_is_left_out(tmp_path: Path) -> None:
    a, b = MetricsShare(tmp_path, 0), MetricsShare(tmp_path, 1)
    a.registry = worker_registry(1, 0.1, 8)
    b.registry = worker_registry(9, 0.1, 8)
    b.write()
    old = time.time() - 60
    os.utime(tmp_path / "worker-1.prom", (old, old))
    assert samples(await a.text())["voicegate_calls_total{leg=twilio}"] == 1


def test_label_values_survive_the_merge() -> None:
    registry = CollectorRegistry()
    Counter("voicegate_e", "Errors.", ["why"], registry=registry).labels('a "b"\\c\nd').inc()
    from prometheus_client import generate_latest

    merged = merge_expositions([generate_latest(registry).decode()] * 2)
    assert samples(merged)['voicegate_e_total{why=a "b"\\c\nd}'] == 2


async def test_summed_counters_never_go_back_whichever_worker_answers(tmp_path: Path) -> None:
    a, b = MetricsShare(tmp_path, 0), MetricsShare(tmp_path, 1)
    a.registry = worker_registry(3, 0.1, 8)
    b.registry = worker_registry(5, 0.1, 8)
    b.write()
    key = "voicegate_calls_total{leg=twilio}"
    first = samples(await a.text())[key]  # a's own count, now
    assert first == 8
    # b answers the next scrape before a's periodic snapshot: it must see a's count of then
    assert samples(await b.text())[key] >= first


async def test_a_sliced_exposition_is_generate_latests_bytes_and_yields_between_slices() -> None:
    registry = CollectorRegistry()
    for k in range(30):
        Counter(f"vg_test_{k}", "a counter", ["leg"], registry=registry).labels("twilio").inc(k)
        Histogram(f"vg_test_h_{k}", "a histogram", registry=registry).observe(k / 10)
    turns = 0

    async def count_turns() -> None:
        nonlocal turns
        while True:
            await asyncio.sleep(0)
            turns += 1

    counter = asyncio.get_running_loop().create_task(count_turns())
    await asyncio.sleep(0)
    sliced = await exposition(registry, slice_s=0.0)  # a turn after every family
    counter.cancel()
    assert sliced == generate_latest(registry)
    assert turns >= 30  # the loop ran other work between the families
    whole = await exposition(registry, slice_s=10.0)
    assert whole == generate_latest(registry)


def _with_binding(edge: int, engine: int) -> str:
    registry = CollectorRegistry()
    capacity = Gauge("voicegate_capacity_calls", "Calls.", ["limit"], registry=registry)
    binding = Gauge("voicegate_capacity_binding", "Binds.", ["limit"], registry=registry)
    capacity.labels("edge").set(edge)
    capacity.labels("engine").set(engine)
    binding.labels("edge").set(float(edge < engine))  # as each worker marks it for itself
    binding.labels("engine").set(float(engine <= edge))
    return generate_latest(registry).decode()


def test_the_merged_binding_limit_is_the_smallest_merged_limit() -> None:
    # four workers whose loops carry 54 calls each: each marks its edge as binding against the
    # engine's 150 slots, but together they carry 216, so the engine's slots bind
    merged = samples(merge_expositions([_with_binding(54, 150)] * 4))
    assert merged["voicegate_capacity_calls{limit=edge}"] == 216
    assert merged["voicegate_capacity_binding{limit=engine}"] == 1
    assert merged["voicegate_capacity_binding{limit=edge}"] == 0
    # two workers of 30: 60 calls in all, fewer than the slots: the edge binds
    merged = samples(merge_expositions([_with_binding(30, 150)] * 2))
    assert merged["voicegate_capacity_binding{limit=edge}"] == 1
    assert merged["voicegate_capacity_binding{limit=engine}"] == 0
