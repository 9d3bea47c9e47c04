"""Call recordings: stereo WAV (caller left, agent right, as heard), written while the call runs.

Two parts. ``CallRecorder`` lives on the event loop with its Call: the Call hands it every chunk
of caller audio the leg fed (at the caller clock's position) and every block of agent audio the
leg pulled (at the playout clock's position), so both channels sit on the call's own clock. It
keeps a short ring per channel and, once a second of both channels is complete and older than
``HOLD_MS``, interleaves that second and hands it to the writer: one small allocation per call
and second, nothing per frame. The hold lets a barge-in silence agent audio that was pulled but
cleared at the far side before the caller heard it (Twilio's ``clear``): cut audio is not in
the recording.

``RecordingWriter`` is one thread per gateway that owns the files: it opens a recording, appends
each second and patches the two RIFF sizes after every append, so a process killed mid-call
leaves a valid WAV up to its last completed second (the page cache keeps what was written; a
power loss may lose more, nothing is fsynced). The loop never waits on it: hand-offs go through
a ``queue.SimpleQueue``; a recording's end is reported back through ``on_done`` on the writer's
thread, which the owner hops back to its loop.

Format: RIFF/WAVE, PCM 16-bit, 2 channels, the leg's rate (8 kHz Twilio and SIP, 48 kHz WebRTC);
see README "Recording" for why WAV rather than Ogg/Opus (``bench/recording_bench.py``).

Owns: CallRecorder, RecordingWriter, RecordingResult, wav_header. Imports numpy and the
standard library only; no asyncio.
"""

from __future__ import annotations

import logging
import os
import queue
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

__all__ = ["CallRecorder", "RecordingPlan", "RecordingResult", "RecordingWriter", "wav_header"]

log = logging.getLogger("voicegate.recording")

CHANNELS = 2
SAMPLE_BYTES = 2
HEADER_BYTES = 44
FLUSH_MS = 1000  # a second of audio per hand-off: the most a killed process loses
HOLD_MS = 500  # agent audio held back this long: a barge-in may still silence it (Twilio
# keeps at most ~300 ms sent ahead or held)
RING_MS = 8000  # per channel: flush + hold + a channel running this far ahead of the other
FILE_MODE = 0o600
DIR_MODE = 0o700


def wav_header(rate_hz: int, data_bytes: int) -> bytes:
    """The 44-byte header of a 16-bit stereo PCM WAV holding ``data_bytes`` of samples."""
    block = CHANNELS * SAMPLE_BYTES
    return struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF",
        36 + data_bytes,
        b"WAVE",
        b"fmt ",
        16,
        1,
        CHANNELS,
        rate_hz,
        rate_hz * block,
        block,
        SAMPLE_BYTES * 8,
        b"data",
        data_bytes,
    )


@dataclass(frozen=True, slots=True)
class RecordingPlan:
    """What to record for one call: the file, and the announcement (int16 at the leg's rate)
    that plays before the call joins its slot (None: the agent starts at once)."""

    path: Path
    announcement: npt.NDArray[np.int16] | None = None


@dataclass(frozen=True, slots=True)
class RecordingResult:
    """How a recording ended (reported on the writer thread)."""

    path: Path
    duration_ms: int
    size_bytes: int
    is_kept: bool  # False: discarded (deleted), or never written because of an error
    error: str = ""


class _File:
    __slots__ = ("data_bytes", "error", "fd", "path", "rate_hz")

    def __init__(self, path: Path, rate_hz: int) -> None:
        self.path = path
        self.rate_hz = rate_hz
        self.fd = -1
        self.data_bytes = 0
        self.error = ""


_Op = tuple[str, _File, bytes | None, Callable[[RecordingResult], None] | None]


class RecordingWriter:
    """The thread that writes every recording of a process.

    Usage::

        writer = RecordingWriter(); writer.start()
        rec = CallRecorder(writer, path, rate_hz=8000)   # opens the file on the writer thread
        ...                                              # the Call feeds it (see CallRecorder)
        rec.finish(end_samples, on_done=...)             # last second, header, close
        writer.close()                                   # finishes every queued write first
    """

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[_Op | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self.written_bytes = 0
        self.errors = 0

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="recording-writer", daemon=True)
            self._thread.start()

    def close(self) -> None:
        """Write what is queued, then stop the thread (blocking: call it off the loop)."""
        thread = self._thread
        if thread is not None:
            self._queue.put(None)
            thread.join()
            self._thread = None

    def submit(self, op: _Op) -> None:
        self._queue.put(op)

    def _run(self) -> None:
        while True:
            op = self._queue.get()
            if op is None:
                return
            kind, f, data, on_done = op
            try:
                if kind == "open":
                    self._open(f)
                elif kind == "data" and data is not None:
                    self._append(f, data)
                elif kind in ("close", "discard"):
                    self._close(f, kind == "discard", on_done)
            except Exception:  # never let one file stop the others
                log.exception("recording %s: writer failed on %s", f.path, kind)

    def _open(self, f: _File) -> None:
        try:
            f.path.parent.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
            f.fd = os.open(f.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
            os.write(f.fd, wav_header(f.rate_hz, 0))
        except OSError as exc:
            self.errors += 1
            f.error = f"cannot open: {exc.strerror or exc}"
            log.error("recording %s: %s", f.path, f.error)

    def _append(self, f: _File, data: bytes) -> None:
        if f.fd < 0:
            return
        try:
            os.write(f.fd, data)
            f.data_bytes += len(data)
            # the two sizes, so that the file is a valid WAV up to here if we are killed now
            os.pwrite(f.fd, struct.pack("<I", 36 + f.data_bytes), 4)
            os.pwrite(f.fd, struct.pack("<I", f.data_bytes), 40)
            self.written_bytes += len(data)
        except OSError as exc:
            self.errors += 1
            f.error = f"write failed: {exc.strerror or exc}"
            log.error("recording %s: %s", f.path, f.error)
            os.close(f.fd)
            f.fd = -1

    def _close(
        self, f: _File, is_discard: bool, on_done: Callable[[RecordingResult], None] | None
    ) -> None:
        if f.fd >= 0:
            os.close(f.fd)
            f.fd = -1
        if is_discard:
            try:
                f.path.unlink(missing_ok=True)
            except OSError as exc:
                log.error("recording %s: cannot delete: %s", f.path, exc)
        frames = f.data_bytes // (CHANNELS * SAMPLE_BYTES)
        result = RecordingResult(
            path=f.path,
            duration_ms=frames * 1000 // f.rate_hz,
            size_bytes=0 if is_discard else HEADER_BYTES + f.data_bytes,
            is_kept=not is_discard and not f.error,
            error=f.error,
        )
        if on_done is not None:
            on_done(result)


def _pow2_at_least(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


class CallRecorder:
    """One call's recording on the event loop: both channels on the call's clock.

    Usage (the Call)::

        rec.caller(pcm, at)          # caller audio fed by the leg; ``at`` = caller clock (samples)
        rec.agent(pcm, at)           # agent audio pulled by the leg; ``at`` = playout clock
        rec.cut(from_samples)        # barge-in: agent audio from there on was not heard
        rec.finish(end, on_done)     # the call ended at ``end`` samples: pad, write, close
    """

    def __init__(self, writer: RecordingWriter, path: Path, rate_hz: int) -> None:
        self.path = path
        self.rate_hz = rate_hz
        self._writer = writer
        cap = _pow2_at_least(rate_hz * RING_MS // 1000)
        self._ring = np.zeros((cap, CHANNELS), dtype=np.int16)  # interleaved rows
        self._mask = cap - 1
        self._flush = rate_hz * FLUSH_MS // 1000
        self._hold = rate_hz * HOLD_MS // 1000
        self._ends = [0, 0]  # next position per channel (0 caller, 1 agent)
        self.committed = 0  # positions handed to the writer
        self.is_finished = False
        self._file = _File(path, rate_hz)
        writer.submit(("open", self._file, None, None))

    def caller(self, pcm: npt.NDArray[np.int16], at: int) -> None:
        self._put(0, pcm, at)

    def agent(self, pcm: npt.NDArray[np.int16], at: int) -> None:
        self._put(1, pcm, at)

    def _put(self, ch: int, pcm: npt.NDArray[np.int16], at: int) -> None:
        if self.is_finished:
            return
        n = len(pcm)
        end = at + n
        cap = self._mask + 1
        if end - self.committed > cap:  # the other channel lags too far: it gets silence there
            self._commit(end - cap)
        skip = self.committed - at  # positions already written (as silence) stay so
        if skip > 0:
            if skip >= n:
                self._ends[ch] = max(self._ends[ch], end)
                return
            pcm = pcm[skip:]
            at = self.committed
            n = len(pcm)
        start = at & self._mask
        first = min(n, cap - start)
        ring = self._ring
        ring[start : start + first, ch] = pcm[:first]
        if first < n:
            ring[: n - first, ch] = pcm[first:]
        self._ends[ch] = max(self._ends[ch], end)
        ready = min(self._ends[0], self._ends[1] - self._hold)
        if ready - self.committed >= self._flush:
            self._commit(ready)

    def cut(self, from_samples: int) -> None:
        """Silence agent audio from ``from_samples`` (playout clock) on: cleared, never heard."""
        lo = max(from_samples, self.committed)
        hi = self._ends[1]
        if self.is_finished or hi <= lo:
            return
        start = lo & self._mask
        n = hi - lo
        first = min(n, self._mask + 1 - start)
        self._ring[start : start + first, 1] = 0
        if first < n:
            self._ring[: n - first, 1] = 0

    def _commit(self, up_to: int) -> None:
        lo = self.committed
        if up_to <= lo:
            return
        n = up_to - lo
        start = lo & self._mask
        first = min(n, self._mask + 1 - start)
        ring = self._ring
        if first == n:
            data = ring[start : start + n].tobytes()
            ring[start : start + n] = 0
        else:
            data = ring[start:].tobytes() + ring[: n - first].tobytes()
            ring[start:] = 0
            ring[: n - first] = 0
        self.committed = up_to
        self._writer.submit(("data", self._file, data, None))

    @property
    def end_samples(self) -> int:
        return max(self._ends)

    def finish(
        self,
        end_samples: int,
        on_done: Callable[[RecordingResult], None] | None = None,
        *,
        is_discard: bool = False,
    ) -> None:
        """The call ended at ``end_samples`` on its clock: write the rest (silence where a
        channel stopped early), close the file (or delete it: ``is_discard``); idempotent."""
        if self.is_finished:
            return
        if not is_discard:
            end = max(end_samples, self.committed)
            cap = self._mask + 1
            while end - self.committed > cap:  # a channel far behind: silence, a ring at a time
                self._commit(self.committed + cap // 2)
            self._commit(end)
        self.is_finished = True
        self._writer.submit(("discard" if is_discard else "close", self._file, None, on_done))
