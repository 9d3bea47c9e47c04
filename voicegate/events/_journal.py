"""On-disk journal of encoded events that could not be written to Redis yet.

Layout under the journal root (``settings.events_journal_dir``)::

    <root>/<writer_id>/lock               flock()ed by the live EventLog that owns the folder
    <root>/<writer_id>/000000000001.jnl   segments: one JSON array per line, append-only

Each EventLog owns one folder named after its writer id, created as ``.tmp-<id>`` and renamed
once locked so that no other process adopts a half-made folder. At open, every other folder
whose lock can be taken belongs to a process that is gone: it is adopted and replayed first
(its events are older than ours), then deleted. Segments are replayed oldest first and deleted
only after all their records reached Redis; a crash in between replays that segment again, and
the writer's per-call sequence mark in Redis skips what was already written (see ``log.py``).

fsync policy: every ``append()`` call (one writer batch) ends with ``flush`` + ``fsync``, so a
process crash loses nothing that was appended and a power cut at most the batch being written.
A torn last line (crash mid-write) is skipped and counted when read.

All methods are blocking and called from one worker thread, one at a time.
Owns: the journal files. Must not import asyncio or redis.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import IO

__all__: list[str] = []

log = logging.getLogger("voicegate.events.journal")

SEGMENT_SUFFIX = ".jnl"
LOCK_NAME = "lock"
TMP_PREFIX = ".tmp-"


@dataclass(slots=True)
class Record:
    """One encoded event as the writer sends it (and the journal stores it)."""

    writer: str
    seq: int
    call_id: str
    is_end: bool
    fields: dict[str, str]
    hash_fields: dict[str, str]
    nbytes: int

    def to_line(self) -> bytes:
        doc = [self.writer, self.seq, self.call_id, 1 if self.is_end else 0]
        doc.append(self.fields)
        doc.append(self.hash_fields)
        return json.dumps(doc, separators=(",", ":")).encode() + b"\n"

    @classmethod
    def from_line(cls, line: bytes) -> Record:
        writer, seq, call_id, is_end, fields, hash_fields = json.loads(line)
        if not (isinstance(fields, dict) and isinstance(hash_fields, dict)):
            raise ValueError("journal record: fields are not objects")
        return cls(
            str(writer), int(seq), str(call_id), bool(is_end), fields, hash_fields, len(line)
        )


class JournalFull(OSError):
    """Appending would take the journal past its byte limit."""


@dataclass(slots=True)
class _Segment:
    path: Path
    nbytes: int
    folder: _Folder


@dataclass(slots=True)
class _Folder:
    path: Path
    lock_fd: int
    is_own: bool
    is_kept: bool = False


class Journal:
    """The append-only segment files of one writer, plus adopted folders of dead writers."""

    def __init__(
        self, root: Path, writer_id: str, *, max_bytes: int, segment_bytes: int = 1 << 20
    ) -> None:
        self.root = root
        self.writer_id = writer_id
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.pending_bytes = 0  # bytes in segments not yet replayed (read from the loop thread)
        self.corrupt_lines = 0
        self._own: _Folder | None = None
        self._segments: list[_Segment] = []  # oldest first: adopted folders, then our own
        self._active: IO[bytes] | None = None
        self._active_seg: _Segment | None = None
        self._reader: IO[bytes] | None = None  # open on the oldest segment while replaying
        self._next_index = 1

    # --- lifecycle ---

    def open(self) -> None:
        """Create and lock our folder; adopt the folders of writers that are gone."""
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f"{TMP_PREFIX}{self.writer_id}"
        tmp.mkdir()
        fd = os.open(tmp / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        own_path = self.root / self.writer_id
        tmp.rename(own_path)
        self._own = _Folder(own_path, fd, is_own=True)
        for folder in sorted(self.root.iterdir(), key=_mtime):
            if folder.name.startswith(TMP_PREFIX) or folder == own_path or not folder.is_dir():
                continue
            self._adopt(folder)

    def _adopt(self, path: Path) -> None:
        try:
            fd = os.open(path / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # a live writer holds it
            os.close(fd)
            return
        folder = _Folder(path, fd, is_own=False)
        segs = sorted(p for p in path.iterdir() if p.suffix == SEGMENT_SUFFIX)
        for p in segs:
            n = p.stat().st_size
            self._segments.append(_Segment(p, n, folder))
            self.pending_bytes += n
        if segs:
            log.info(
                "adopting journal %s: %d segment(s), %d bytes", path, len(segs), self.pending_bytes
            )
        else:
            self._drop_folder(folder)

    def close(self) -> None:
        """Close the active segment and release our lock; pending segments stay on disk."""
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        if self._active is not None:
            self._active.close()
            self._active = None
            self._active_seg = None
        own = self._own
        self._own = None
        if own is not None and not any(s.folder is own for s in self._segments):
            # nothing pending: leave no folder behind
            self._drop_folder(own)
        elif own is not None:
            os.close(own.lock_fd)
        for folder in {id(s.folder): s.folder for s in self._segments}.values():
            if not folder.is_own and folder.lock_fd >= 0:
                os.close(folder.lock_fd)
        self._segments.clear()

    # --- writing ---

    def append(self, records: list[Record]) -> int:
        """Append records in order, then flush and fsync; returns how many were appended.

        Fewer than all only when the byte limit is reached (the rest is not written);
        raises OSError when nothing could be written.
        """
        if self._own is None:
            raise OSError("journal is closed")
        lines = [r.to_line() for r in records]
        room = self.max_bytes - self.pending_bytes
        n = 0
        size = 0
        for line in lines:
            if size + len(line) > room:
                break
            size += len(line)
            n += 1
        if n == 0:
            if not lines:
                return 0
            raise JournalFull(f"journal is at its limit of {self.max_bytes} bytes")
        if self._active is None or self._active_seg is None:
            self._open_segment()
        assert self._active is not None and self._active_seg is not None
        self._active.write(b"".join(lines[:n]))
        self._active.flush()
        os.fsync(self._active.fileno())
        self._active_seg.nbytes += size
        self.pending_bytes += size
        if self._active_seg.nbytes >= self.segment_bytes:
            self._rotate()
        return n

    def _open_segment(self) -> None:
        assert self._own is not None
        path = self._own.path / f"{self._next_index:012d}{SEGMENT_SUFFIX}"
        self._next_index += 1
        self._active = open(path, "ab")  # noqa: SIM115 - held open across calls
        self._active_seg = _Segment(path, 0, self._own)
        self._segments.append(self._active_seg)

    def _rotate(self) -> None:
        if self._active is not None:
            self._active.close()
        self._active = None
        self._active_seg = None

    # --- replay ---

    def has_pending(self) -> bool:
        return bool(self._segments)

    def read_chunk(self, max_records: int) -> tuple[list[Record], bool]:
        """Up to ``max_records`` next records of the oldest segment, and whether it is exhausted.

        Reads a little at a time so that parsing (which holds the GIL) never stalls the event
        loop for long. The active segment is rotated first when it is the oldest.
        """
        if not self._segments:
            return [], True
        seg = self._segments[0]
        if self._reader is None:
            if seg is self._active_seg:
                self._rotate()
            self._reader = open(seg.path, "rb")  # noqa: SIM115 - held across calls
        records: list[Record] = []
        while len(records) < max_records:
            line = self._reader.readline()
            if not line:
                return records, True
            if not line.strip():
                continue
            try:
                records.append(Record.from_line(line))
            except (ValueError, TypeError, KeyError) as exc:
                self.corrupt_lines += 1
                log.warning("journal %s: skipping a malformed line (%s)", seg.path, exc)
        return records, False

    def drop_oldest(self, delete: bool = True) -> None:
        """Forget the oldest segment, deleting it (every record of it reached Redis) or not."""
        seg = self._segments.pop(0)
        self.pending_bytes -= seg.nbytes
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        if seg is self._active_seg:
            self._rotate()
        if not delete:
            seg.folder.is_kept = True  # a person should look at it: never delete this folder
            return
        with contextlib.suppress(FileNotFoundError):
            seg.path.unlink()
        folder = seg.folder
        if not folder.is_own and not any(s.folder is folder for s in self._segments):
            self._drop_folder(folder)

    def _drop_folder(self, folder: _Folder) -> None:
        if not folder.is_kept:
            shutil.rmtree(folder.path, ignore_errors=True)
        if folder.lock_fd >= 0:
            os.close(folder.lock_fd)
            folder.lock_fd = -1


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0
