"""One /metrics for every edge worker: each writes its samples to a shared folder once a second,
and whichever worker is scraped merges its live samples with the others' latest.

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
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

__all__ = ["MetricsShare", "merge_expositions"]

log = logging.getLogger("voicegate.edge")

WRITE_S = 1.0
STALE_S = 5.0
_TAKE_MAX = ("voicegate_engine_", "voicegate_capacity_", "voicegate_edge_")


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def merge_expositions(texts: list[str]) -> bytes:
    """Prometheus text expositions merged as the module says (HELP/TYPE from the first)."""
    families: dict[str, tuple[str, str, dict[tuple[str, tuple[tuple[str, str], ...]], float]]] = {}
    for text in texts:
        for family in text_string_to_metric_families(text):
            entry = families.get(family.name)
            if entry is None:
                entry = (family.type, family.documentation, {})
                families[family.name] = entry
            samples = entry[2]
            take_max = family.name.startswith(_TAKE_MAX)
            for sample in family.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                is_max = take_max and not (
                    family.name == "voicegate_capacity_calls"
                    and sample.labels.get("limit") == "edge"
                )
                old = samples.get(key)
                if old is None:
                    samples[key] = sample.value
                elif sample.name.endswith("_created"):
                    samples[key] = min(old, sample.value)
                elif is_max:
                    samples[key] = max(old, sample.value)
                else:
                    samples[key] = old + sample.value
    lines: list[str] = []
    for name, (kind, doc, samples) in families.items():
        lines.append(f"# HELP {name} {doc.replace(chr(92), chr(92) * 2).replace(chr(10), '')}")
        lines.append(f"# TYPE {name} {kind}")
        for (sample_name, labels), value in samples.items():
            if labels:
                inner = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
                lines.append(f"{sample_name}{{{inner}}} {_number(value)}")
            else:
                lines.append(f"{sample_name} {_number(value)}")
    return ("\n".join(lines) + "\n").encode()


class MetricsShare:
    """This worker's samples in ``folder`` (``worker-K.prom``), and the merged view of all."""

    def __init__(self, folder: Path, worker: int) -> None:
        self.folder = folder
        self.worker = worker
        self._path = folder / f"worker-{worker}.prom"
        self.registry: CollectorRegistry | None = None

    def write(self) -> None:
        if self.registry is None:
            return
        tmp = self._path.with_suffix(".tmp")
        tmp.write_bytes(generate_latest(self.registry))
        os.replace(tmp, self._path)

    async def run(self, interval_s: float = WRITE_S) -> None:
        """Write the snapshot every ``interval_s`` until cancelled (off the loop: a file write)."""
        while True:
            try:
                await asyncio.to_thread(self.write)
            except OSError as exc:
                log.warning("edge metrics: cannot write %s: %s", self._path, exc)
            await asyncio.sleep(interval_s)

    def text(self) -> bytes:
        """Every worker's samples merged: this one's live, the others' latest snapshots."""
        if self.registry is None:
            return b""
        texts = [generate_latest(self.registry).decode()]
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
