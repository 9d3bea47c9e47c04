"""Polling for file edits: a stat signature per file and a small owned thread that polls.

Polling (not inotify) works the same on every file system, bind mount and ConfigMap volume,
and a persona folder holds a handful of small files.
Owns: ``FileSignature``, ``signature``, ``is_racy`` and ``ReloadLoop``. Imports nothing of voicegate.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

__all__ = ["RACY_WINDOW_NS", "FileSignature", "ReloadLoop", "is_racy", "signature"]

log = logging.getLogger("voicegate.personas")

# A file modified this recently may change again within the file system's mtime granularity
# without its size changing: while it is this young its bytes are hashed on every poll.
RACY_WINDOW_NS = 2_000_000_000

FileSignature = tuple[int, int, int]  # (mtime_ns, size, inode)


def signature(path: Path | None) -> FileSignature | None:
    """(mtime_ns, size, inode) of ``path`` following symlinks, or None when it is absent."""
    if path is None:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def is_racy(sig: FileSignature | None) -> bool:
    """True when ``sig``'s mtime is so recent that an edit could hide behind the same stat."""
    return sig is not None and time.time_ns() - sig[0] < RACY_WINDOW_NS


class ReloadLoop:
    """Calls ``poll()`` every ``interval_s`` on its own daemon thread until ``close()``.

    ``poll`` may block (file I/O, an engine reload); an exception from it is logged and the
    loop goes on: a reload problem must never stop reloading or reach the service.
    """

    def __init__(self, name: str, interval_s: float, poll: Callable[[], object]) -> None:
        self._name = name
        self._interval_s = interval_s
        self._poll = poll
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_failure = ""

    @property
    def is_running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop and join the thread (idempotent)."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout_s)

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                self._poll()
            except Exception as exc:  # never let the loop die; log each new failure once
                text = f"{type(exc).__name__}: {exc}"
                if text != self._last_failure:
                    log.exception("%s: poll failed", self._name)
                self._last_failure = text
            else:
                self._last_failure = ""
