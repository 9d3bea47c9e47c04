"""The recordings folder's retention: files older than the retention period are deleted.

A recording's age is its file's modification time, which the writer updates every second while
the call runs, so a file being written is never old. The gateway sweeps at start and then every
``interval_s`` (``RetentionSweeper``, its own task; the file system work on a worker thread).

Usage::

    removed = sweep(Path("var/recordings"), retention_s=30 * 86400)
    sweeper = RetentionSweeper(folder, retention_s, interval_s=3600); sweeper.start(); ...
    await sweeper.aclose()

Owns: sweep, RetentionSweeper. File system only; no voicegate imports.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from pathlib import Path

__all__ = ["RECORDING_SUFFIXES", "RetentionSweeper", "sweep"]

log = logging.getLogger("voicegate.recording")

RECORDING_SUFFIXES = (".wav",)


def sweep(folder: Path, retention_s: float, now_s: float | None = None) -> int:
    """Delete recordings under ``folder`` last modified more than ``retention_s`` ago, and the
    day folders left empty; returns how many files were deleted. Never follows symlinks."""
    if not folder.is_dir():
        return 0
    cutoff = (time.time() if now_s is None else now_s) - retention_s
    removed = 0
    for root, dirs, files in os.walk(folder, topdown=False):
        base = Path(root)
        for name in files:
            if not name.endswith(RECORDING_SUFFIXES):
                continue
            path = base / name
            try:
                st = path.lstat()
                if st.st_mtime < cutoff:
                    path.unlink()
                    removed += 1
            except OSError as exc:  # raced with another sweep or a delete: not ours to fix
                log.warning("recording %s: not swept: %s", path, exc.strerror or exc)
        if base != folder and not dirs and not any(base.iterdir()):
            with contextlib.suppress(OSError):
                base.rmdir()
    return removed


class RetentionSweeper:
    """Sweeps ``folder`` at start and every ``interval_s`` (0 retention: never)."""

    def __init__(self, folder: Path, retention_s: float, *, interval_s: float = 3600.0) -> None:
        self.folder = folder
        self.retention_s = retention_s
        self.interval_s = interval_s
        self.removed = 0
        self.sweeps = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.retention_s > 0 and self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="recording-retention"
            )

    async def _run(self) -> None:
        while True:
            try:
                n = await asyncio.to_thread(sweep, self.folder, self.retention_s)
                self.removed += n
                self.sweeps += 1
                if n:
                    log.info(
                        "recordings: %d older than %g s deleted from %s",
                        n,
                        self.retention_s,
                        self.folder,
                    )
            except Exception:
                log.exception("recordings: retention sweep of %s failed", self.folder)
            await asyncio.sleep(self.interval_s)

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
