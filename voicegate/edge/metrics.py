"""One /metrics for every edge worker: each writes its samples to a shared folder once a second,
and whichever worker is scraped merges its live samples with the others' latest.

Each worker's part of a scrape is its latest snapshot, and the worker that answers writes its
own first (``text``), so summed counters never go back between two scrapes answered by
different workers.

Merging: samples with the same name and labels are summed (calls, messages, events, histogram
buckets: totals over the workers), except the engine's and the capacity's families, which every
worker reads from the one engine (``voicegate_engine_*``, ``voicegate_capacity_*``: the same
value, taken once), and each worker's own event-loop figures (``voicegate_edge_*``), where the
busiest worker is the one that limits (the largest is kept); the edge's admission limit
(``voicegate_capacity_calls{limit="edge"}``) is per worker, so it is summed. A worker's file older than
``STALE_S`` (it exited) is left out.

Owns: MetricsShare, merge_expositions. Imports prometheus_client only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import time
from collections.abc import Iterator
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

__all__ = ["MetricsShare", "exposition", "merge_expositions"]

log = logging.getLogger("voicegate.edge")

WRITE_S = 1.0
# the loop's longest stretch on one snapshot: a whole exposition of a worker took 2-6 ms on the
# 2-core dev box (400 lines), which delays every call's next media message that much
SLICE_S = 0.001
STALE_S = 5.0
_TAKE_MAX = ("voicegate_engine_", "voicegate_capacity_", "voicegate_edge_")


def _is_max(sample: str, labels: str) -> bool:
    if not sample.startswith(_TAKE_MAX):
        return False
    return not (sample == "voicegate_capacity_calls" and 'limit="edge"' in labels)


def merge_expositions(texts: list[str]) -> bytes:
    """Prometheus text expositions (``generate_latest``'s) merged as the module says.

    A line-level merge, not a parse: every exposition comes from the same code, so a sample's
    name and label text are the same in each; a family's header lines come from the first
    exposition that has it, and its samples stay together under it. (prometheus_client's parser
    took about 60 ms per 1000 lines here; this is some 20 times faster.)
    """
    families: dict[str, tuple[list[str], dict[str, float]]] = {}
    for text in texts:
        family: tuple[list[str], dict[str, float]] | None = None
        for line in text.splitlines():
            if not line:
                continue
            if line.startswith("#"):
                parts = line.split(" ", 3)
                if len(parts) >= 3 and parts[1] in ("HELP", "TYPE"):
                    family = families.get(parts[2])
                    if family is None:
                        family = families[parts[2]] = ([], {})
                    if len(family[0]) < 2 and line not in family[0]:
                        family[0].append(line)
                continue
            if family is None:
                continue
            key, _, raw = line.rpartition(" ")
            try:
                value = float(raw)
            except ValueError:
                continue
            samples = family[1]
            old = samples.get(key)
            if old is None:
                samples[key] = value
                continue
            name, _, labels = key.partition("{")
            if name.endswith("_created"):
                samples[key] = min(old, value)
            elif _is_max(name, labels):
                samples[key] = max(old, value)
            else:
                samples[key] = old + value
    _rebind(families)
    lines: list[str] = []
    for head, samples in families.values():
        lines.extend(head)
        lines.extend(f"{key} {_number(value)}" for key, value in samples.items())
    return ("\n".join(lines) + "\n").encode()


def _rebind(families: dict[str, tuple[list[str], dict[str, float]]]) -> None:
    """The binding limit of the merged view: the smallest of the merged limits. Each worker
    marks the one binding for itself, comparing its own loop's capacity with the engine's
    slots for all workers, so their marks (merged by max) would name the edge whenever a
    worker's share is below the engine's total."""
    calls = families.get("voicegate_capacity_calls")
    binding = families.get("voicegate_capacity_binding")
    if calls is None or binding is None or not calls[1]:
        return
    prefix = "voicegate_capacity_calls"
    limits = {key[len(prefix) :]: value for key, value in calls[1].items()}
    smallest = min(limits, key=lambda labels: (limits[labels], labels))
    for key in binding[1]:
        labels = key[len("voicegate_capacity_binding") :]
        binding[1][key] = 1.0 if labels == smallest else 0.0


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


class _Families(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


async def exposition(registry: CollectorRegistry, slice_s: float = SLICE_S) -> bytes:
    """``generate_latest(registry)``, byte for byte, taken on the loop a slice at a time: the
    families are collected and formatted in turns of about ``slice_s``, yielding in between,
    so a snapshot never holds the loop for the whole exposition."""
    parts: list[bytes] = []
    batch: list[Metric] = []
    started = time.perf_counter()
    for family in registry.collect():
        batch.append(family)
        if time.perf_counter() - started >= slice_s:
            parts.append(generate_latest(_Families(batch)))
            batch = []
            await asyncio.sleep(0)
            started = time.perf_counter()
    if batch:
        parts.append(generate_latest(_Families(batch)))
    return b"".join(parts)


class MetricsShare:
    """This worker's samples in ``folder`` (``worker-K.prom``), and the merged view of all."""

    def __init__(self, folder: Path, worker: int) -> None:
        self.folder = folder
        self.worker = worker
        self._path = folder / f"worker-{worker}.prom"
        self.registry: CollectorRegistry | None = None

    def write(self, data: bytes | None = None) -> None:
        """Replace this worker's snapshot (``data``, else the registry's samples now)."""
        if data is None:
            if self.registry is None:
                return
            data = generate_latest(self.registry)
        tmp = self._path.with_suffix(".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, self._path)

    async def run(self, interval_s: float = WRITE_S) -> None:
        """Write the snapshot every ``interval_s`` until cancelled. The samples are taken on the
        event loop (the collectors read the loop's state, as a scrape does), the file is
        written on a thread; a failure is logged and the next period tries again."""
        failures = 0
        while True:
            try:
                if self.registry is not None:
                    await asyncio.to_thread(self.write, await exposition(self.registry))
            except Exception as exc:
                failures += 1
                if failures == 1 or failures % 600 == 0:
                    log.warning(
                        "edge metrics: cannot write %s (%d times): %r", self._path, failures, exc
                    )
            await asyncio.sleep(interval_s)

    async def text(self) -> bytes:
        """Every worker's samples merged: this one's now, the others' latest snapshots.

        This worker's samples are taken on the event loop (as a single gateway's are: its
        collectors read the loop's state) and written as its snapshot before the merge, so a
        later scrape answered by another worker never shows less than this one did: a counter
        summed over the workers never goes back (Prometheus would read that as a reset). The
        file work and the merge run on a thread, off the loop that carries this worker's calls.
        """
        if self.registry is None:
            return b""
        own = await exposition(self.registry)
        return await asyncio.to_thread(self._scrape, own)

    def _scrape(self, own: bytes) -> bytes:
        with contextlib.suppress(OSError):
            self.write(own)
        return self.merged(own.decode())

    def merged(self, own: str) -> bytes:
        """``own`` merged with the other workers' latest snapshots (blocking: file reads)."""
        texts = [own]
        now = time.time()
        for path in sorted(self.folder.glob("worker-*.prom")):
            if path == self._path:
                continue
            with contextlib.suppress(OSError):
                if now - path.stat().st_mtime > STALE_S:
                    continue
                texts.append(path.read_text())
        return merge_expositions(texts)

    def remove(self) -> None:
        with contextlib.suppress(OSError):
            self._path.unlink()
