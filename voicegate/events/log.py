"""EventLog: call events to Redis without ever blocking the caller, journaled to disk in outages.

Usage (on the event loop)::

    log = EventLog.from_settings(settings, registry)
    await log.start()                       # never fails because Redis is down
    log.emit(CallStarted(call_id="c1", leg="twilio", t_ms=0, persona="teller"))   # sync, O(us)
    async with log.subscribe(call_id="c1") as sub: ...                            # live fan-out
    await log.aclose(timeout_s=2.0)         # flush what it can; the rest stays journaled

Design (the budget: a Redis outage of 60 s mid-call leaves calls unaffected, loses no event and
keeps memory bounded):

* ``emit()`` encodes the event, stamps it with this writer's next sequence number, appends it to
  a bounded in-memory deque and wakes the writer. It never awaits, never does I/O, never raises.
* One writer task drains the deque in batches into one pipeline of EVALSHA calls. Each call runs
  a Lua script that atomically XADDs the event to the call's stream and the global stream
  (``MAXLEN ~``), updates the call hash, and sets TTLs: the retention TTL on ``call.ended``, and
  a safety TTL (retention + 1 day) on keys that have none yet, so a call whose end was never
  logged (a crashed process) does not live forever.
* Idempotency: the script keeps ``w:<writer_id> = <last seq>`` in the call hash and skips an
  event whose seq is not above it. A writer's events reach Redis in seq order (one connection,
  one pipeline at a time, journal replay in order) and each script runs atomically, so after a
  failure mid-batch the whole batch can be re-sent (or replayed from the journal after a
  crash): what was written is skipped, each event lands exactly once in both streams. Every
  entry also carries the event's unique ``id`` for consumers that dedupe their own processing.
* Outage: a connection error or timeout (1 s socket / 0.5 s connect by default; redis-py's own
  retries are off) moves the in-flight batch and then the queue to the on-disk journal
  (``_journal.py``: append-only segments, fsync per appended batch). While Redis is down the
  writer spills newly emitted events to the journal every ``spill_interval_s`` and retries the
  connection with jittered exponential backoff (``backoff_min_s`` .. ``backoff_max_s``). When
  Redis is back, the journal is replayed in order before anything newer; events emitted during
  the replay wait in memory (and are spilled behind the journal if the queue gets half full).
  The replay reads 64 events at a time and sleeps as long as each batch took, so catching up
  takes at most half of the loop's time and the calls' 20 ms frames keep their clock.
  A journal left by a process that died is adopted and replayed at ``start()``.
* Durability: with Redis up, events live only in memory until written (normally a few ms); a
  hard crash loses those. ``aclose()`` writes or journals everything. Journaled events survive
  a crash; a power cut can lose the last batch appended (fsync per batch, not per event).
* Live fan-out (``subscribe()``) sees every accepted event at emit time, whatever Redis does.
* Drop policy: the deque holds at most ``queue_max`` events and ``queue_max_bytes`` bytes
  (in-flight batches included). It only fills when the writer cannot empty it into either Redis
  or the journal (journal full or failing, or a burst larger than the bound emitted without
  yielding to the loop). Then the NEWEST event is dropped and counted: what is already queued
  is older, may be half-sent, and keeps its order; a call's log keeps a consistent prefix.
* Not supported: Redis Cluster (the script touches the call keys and the global stream).

* State: ``WriterState`` names where the writer is (connected, outage, replaying, closing, ...);
  ``_TRANSITIONS`` lists the changes allowed and ``_set_state()`` checks them.

Owns: emit(), the queue, the writer task and its connect / spill / replay cycle. Redis I/O is in
``_redis.py``, the journal files in ``_journal.py``, the metrics in ``_metrics.py``.
Must not import calls, legs or engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
import random
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry

from voicegate.errors import InvalidStateError
from voicegate.events._journal import Journal, Record
from voicegate.events._metrics import EventLogStats, StatsCollector
from voicegate.events._redis import BatchResult, Outage, RedisSink
from voicegate.events.fanout import FanOut, Subscription
from voicegate.events.schema import Event, encode_fields

if TYPE_CHECKING:
    from voicegate.config import Settings

__all__ = ["EventLog", "EventLogStats", "WriterState"]

log = logging.getLogger("voicegate.events")


REPLAY_BATCH_MAX = 64
_LOG_EVERY = 1000  # repeated problems (drops, malformed events) are logged once per this many


class WriterState(enum.Enum):
    """Where the writer is in its Redis connection cycle, or that it is closing."""

    NEW = "new"  # start() not called yet: events queue in memory
    STARTING = "starting"  # the writer task runs; the first connection is not tried yet
    CONNECTED = "connected"  # Redis up, nothing journaled: events are written as they come
    REPLAYING = "replaying"  # Redis up: the journal is replayed before anything newer
    OUTAGE = "outage"  # Redis down: events spill to the journal, reconnects back off
    CLOSING = "closing"  # aclose(): no new events; the writer ends once it wrote what it can
    CLOSED = "closed"  # aclose() is done


_S = WriterState
_TRANSITIONS: dict[WriterState, frozenset[WriterState]] = {
    _S.NEW: frozenset({_S.STARTING, _S.CLOSING}),
    _S.STARTING: frozenset({_S.CONNECTED, _S.REPLAYING, _S.OUTAGE, _S.CLOSING}),
    _S.CONNECTED: frozenset({_S.OUTAGE, _S.CLOSING}),
    _S.REPLAYING: frozenset({_S.CONNECTED, _S.OUTAGE, _S.CLOSING}),
    _S.OUTAGE: frozenset({_S.CONNECTED, _S.REPLAYING, _S.CLOSING}),
    _S.CLOSING: frozenset({_S.CLOSED}),
    _S.CLOSED: frozenset(),
}
_NOT_ACCEPTING = frozenset({_S.CLOSING, _S.CLOSED})


class EventLog:
    """Non-blocking writer of call events to Redis streams, with a disk journal for outages."""

    def __init__(
        self,
        redis_url: str,
        *,
        journal_dir: Path | str,
        registry: CollectorRegistry | None = None,
        retention_s: int = 7 * 24 * 3600,
        open_call_ttl_s: int | None = None,
        queue_max: int = 10_000,
        queue_max_bytes: int = 16 << 20,
        global_maxlen: int = 100_000,
        call_maxlen: int = 10_000,
        batch_max: int = 256,
        journal_max_bytes: int = 1 << 30,
        journal_segment_bytes: int = 1 << 20,
        socket_timeout_s: float = 1.0,
        connect_timeout_s: float = 0.5,
        backoff_min_s: float = 0.05,
        backoff_max_s: float = 2.0,
        spill_interval_s: float = 0.05,
    ) -> None:
        if queue_max < 2 or batch_max < 1:
            raise ValueError(
                f"queue_max must be >= 2 and batch_max >= 1 (got {queue_max}, {batch_max})"
            )
        self.redis_url = redis_url
        self.writer_id = f"{os.urandom(6).hex()}"
        self.retention_s = retention_s
        self.open_call_ttl_s = open_call_ttl_s or retention_s + 24 * 3600
        self.queue_max = queue_max
        self.queue_max_bytes = queue_max_bytes
        self.global_maxlen = global_maxlen
        self.call_maxlen = call_maxlen
        self.batch_max = batch_max
        self.socket_timeout_s = socket_timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.backoff_min_s = backoff_min_s
        self.backoff_max_s = backoff_max_s
        self.spill_interval_s = spill_interval_s
        self.journal_max_bytes = journal_max_bytes
        self._journal = Journal(
            Path(journal_dir),
            self.writer_id,
            max_bytes=journal_max_bytes,
            segment_bytes=journal_segment_bytes,
        )
        self._is_journal_ok = False
        self._queue: deque[Record] = deque()
        self._queue_bytes = 0
        self._held: list[Record] = []  # out of the queue, not yet safe (in flight or spilling)
        self._held_bytes = 0
        self._replay: list[Record] = []  # a chunk of the oldest journal segment, being replayed
        self._is_replay_eof = False  # that chunk ends the segment
        self._seq = 0
        self._fanout = FanOut()
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._task: asyncio.Task[None] | None = None
        self._executor: ThreadPoolExecutor | None = None
        # the writer's one connection (raises ConfigError for a URL that is not Redis's)
        self._sink = RedisSink(
            redis_url,
            socket_timeout_s=socket_timeout_s,
            connect_timeout_s=connect_timeout_s,
            call_maxlen=call_maxlen,
            global_maxlen=global_maxlen,
            retention_s=retention_s,
            open_call_ttl_s=self.open_call_ttl_s,
        )
        self._state = WriterState.NEW
        self._outage_since = 0.0  # monotonic start of the current outage (0.0: none)
        self._is_spill_failing = False
        # plain-int counters, published by the collector at scrape time
        self.n_emitted = 0
        self.n_written = 0
        self.n_batches = 0
        self.n_duplicates = 0
        self.n_journaled = 0
        self.n_replayed = 0
        self.n_dropped_full = 0
        self.n_dropped_malformed = 0
        self.n_dropped_rejected = 0
        self.n_dropped_closed = 0
        self.queue_peak = 0
        self._registry = registry
        self._collector: StatsCollector | None = None
        if registry is not None:
            self._collector = StatsCollector(self.stats)
            registry.register(self._collector)

    @classmethod
    def from_settings(
        cls, settings: Settings, registry: CollectorRegistry | None = None
    ) -> EventLog:
        """An EventLog configured from ``VOICEGATE_REDIS_URL`` and the ``events_*`` settings."""
        return cls(
            settings.redis_url,
            journal_dir=settings.events_journal_dir,
            registry=registry,
            retention_s=settings.events_retention_s,
            queue_max=settings.events_queue_max,
            global_maxlen=settings.events_stream_maxlen,
            journal_max_bytes=settings.events_journal_max_bytes,
        )

    # --- lifecycle ---

    @property
    def state(self) -> WriterState:
        return self._state

    @property
    def is_redis_up(self) -> bool:
        """The writer holds a connection to Redis."""
        return self._sink.is_connected

    def _set_state(self, state: WriterState) -> None:
        if state is self._state:
            return
        if state not in _TRANSITIONS[self._state]:
            raise InvalidStateError(
                f"event writer: cannot go from {self._state.value} to {state.value}"
            )
        log.debug("event writer: %s -> %s", self._state.value, state.value)
        self._state = state

    def _set_link(self, state: WriterState) -> None:
        """A change of the Redis link; while closing it changes what the writer does, not its
        state (the writer task then looks at the connection and the journal themselves)."""
        if self._state is not WriterState.CLOSING:
            self._set_state(state)

    def _begin_outage(self) -> bool:
        """Redis is down: enter OUTAGE; True when this starts a new outage."""
        if self._outage_since:
            return False
        self._outage_since = time.monotonic()
        self._set_link(WriterState.OUTAGE)
        return True

    def _is_closing(self) -> bool:
        return self._state is WriterState.CLOSING

    def _is_replay_pending(self) -> bool:
        return bool(self._replay) or self._journal.has_pending()

    async def start(self) -> None:
        """Open the journal (adopting any left by a dead process) and start the writer task."""
        if self._state is not WriterState.NEW:
            raise RuntimeError("EventLog.start() called twice")
        self._set_state(WriterState.STARTING)
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="voicegate-journal")
        try:
            await self._in_thread(self._journal.open)
            self._is_journal_ok = True
        except OSError as exc:
            log.error(
                "event journal %s unusable (%s): outages will drop events", self._journal.root, exc
            )
        self._task = asyncio.create_task(self._run(), name="voicegate-events-writer")

    async def aclose(self, timeout_s: float = 2.0) -> None:
        """Stop accepting events, write what can be written within ``timeout_s``, journal the rest."""
        if self._state in _NOT_ACCEPTING:
            return
        self._set_state(WriterState.CLOSING)
        self._wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout_s)
            except TimeoutError:
                self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        leftover = self._held + list(self._queue)
        self._held = []
        self._queue.clear()
        self._queue_bytes = self._held_bytes = 0
        if self._executor is not None:
            if leftover:
                n = 0
                if self._is_journal_ok:
                    with contextlib.suppress(OSError):
                        n = await self._in_thread(self._journal.append, leftover)
                self.n_journaled += n
                if n < len(leftover):
                    self.n_dropped_closed += len(leftover) - n
                    log.error(
                        "closing: %d event(s) lost, the journal took no more", len(leftover) - n
                    )
            with contextlib.suppress(OSError):
                await self._in_thread(self._journal.close)
            self._executor.shutdown(wait=True)
        await self._drop_client()
        self._fanout.close_all()
        if self._collector is not None and self._registry is not None:
            self._registry.unregister(self._collector)
            self._collector = None
        self._set_state(WriterState.CLOSED)

    # --- the hot path ---

    def emit(self, event: Event) -> None:
        """Queue ``event`` for Redis and the live subscribers. Sync, never blocks, never raises.

        Callable from the event loop; from another thread it hops onto the loop first.
        """
        if self._loop is not None and threading.get_ident() != self._loop_thread:
            try:
                self._loop.call_soon_threadsafe(self.emit, event)
            except RuntimeError:  # loop closed
                self.n_dropped_closed += 1
            return
        self.n_emitted += 1
        try:
            fields = encode_fields(event)
            hash_fields = event.hash_fields()
        except Exception as exc:  # never raise on the audio path: count, log now and then
            self.n_dropped_malformed += 1
            if self.n_dropped_malformed % _LOG_EVERY == 1:
                log.error("event dropped (%d so far): %s", self.n_dropped_malformed, exc)
            return
        if self._state in _NOT_ACCEPTING:
            self.n_dropped_closed += 1
            if self.n_dropped_closed % _LOG_EVERY == 1:
                log.warning("event emitted after EventLog.aclose() dropped: %s", fields["type"])
            return
        nbytes = 64
        for k, v in fields.items():
            nbytes += len(k) + len(v)
        n_held = len(self._queue) + len(self._held)
        if (
            n_held >= self.queue_max
            or self._queue_bytes + self._held_bytes + nbytes > self.queue_max_bytes
        ):
            self.n_dropped_full += 1
            if self.n_dropped_full % _LOG_EVERY == 1:
                log.error(
                    "event queue full (%d events), journal %s: dropped %s of call %s (%d so far)",
                    n_held,
                    "full or failing"
                    if self._is_spill_failing or not self._is_journal_ok
                    else "slow",
                    fields["type"],
                    event.call_id,
                    self.n_dropped_full,
                )
            self._fanout.publish(event)
            return
        self._seq += 1
        self._queue.append(
            Record(
                self.writer_id,
                self._seq,
                event.call_id,
                event.is_call_end,
                fields,
                hash_fields,
                nbytes,
            )
        )
        self._queue_bytes += nbytes
        if n_held + 1 > self.queue_peak:
            self.queue_peak = n_held + 1
        self._wake.set()
        if self._fanout._subs:
            self._fanout.publish(event)

    def subscribe(self, call_id: str | None = None, maxsize: int = 1024) -> Subscription:
        """A live feed of emitted events (all calls, or one); a slow consumer loses events."""
        return self._fanout.subscribe(call_id, maxsize)

    def stats(self) -> EventLogStats:
        """A snapshot of the counters."""
        return EventLogStats(
            emitted=self.n_emitted,
            queued=len(self._queue) + len(self._held),
            queued_bytes=self._queue_bytes + self._held_bytes,
            written=self.n_written,
            batches=self.n_batches,
            duplicates_skipped=self.n_duplicates,
            journaled=self.n_journaled,
            replayed=self.n_replayed,
            dropped_queue_full=self.n_dropped_full,
            dropped_malformed=self.n_dropped_malformed,
            dropped_redis_rejected=self.n_dropped_rejected,
            dropped_closed=self.n_dropped_closed,
            subscriber_dropped=self._fanout.dropped,
            journal_bytes=self._journal.pending_bytes,
            journal_corrupt_lines=self._journal.corrupt_lines,
            queue_peak=self.queue_peak,
            is_redis_up=self.is_redis_up,
        )

    async def wait_idle(self, timeout_s: float = 5.0) -> bool:
        """Wait until everything emitted so far reached Redis (queue and journal empty).

        For tests, the demo and shutdown paths; False if that did not happen in ``timeout_s``.
        """
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if (
                not self._queue
                and not self._held
                and not self._journal.has_pending()
                and self.is_redis_up
            ):
                return True
            await asyncio.sleep(0.005)
        return False

    # --- the writer task ---

    async def _run(self) -> None:
        backoff = self.backoff_min_s
        while True:
            try:
                state = self._state
                is_closing = state is WriterState.CLOSING
                if not self._sink.is_connected:
                    if is_closing and self._outage_since:
                        return  # known down: aclose() journals the rest
                    if state is WriterState.OUTAGE:  # not STARTING: start() with Redis up
                        await self._spill()
                        if await self._sleep_spilling(backoff * random.uniform(0.5, 1.0)):
                            return
                    if await self._connect():
                        backoff = self.backoff_min_s
                    else:
                        backoff = min(backoff * 2, self.backoff_max_s)
                        self._begin_outage()
                    continue
                if state is WriterState.REPLAYING or (is_closing and self._is_replay_pending()):
                    if is_closing:
                        return  # the queue is journaled behind the pending segments
                    await self._replay_step()
                    if len(self._queue) >= self.queue_max // 2:
                        await self._spill()
                    if not self._is_replay_pending():
                        self._set_link(WriterState.CONNECTED)
                    continue
                if not self._queue:
                    if is_closing:
                        return
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                batch = self._take_batch()
                await self._write(batch, is_replay=False)
                self._release(batch)
            except Outage as exc:
                await self._on_outage(exc)
            except Exception:  # a bug or a journal failure must not end the writer
                log.exception("event writer error; reconnecting")
                self._begin_outage()
                await self._drop_client()
                await asyncio.sleep(self.backoff_max_s)

    def _take_batch(self) -> list[Record]:
        n = min(len(self._queue), self.batch_max)
        batch = [self._queue.popleft() for _ in range(n)]
        nbytes = sum(r.nbytes for r in batch)
        self._queue_bytes -= nbytes
        self._held.extend(batch)
        self._held_bytes += nbytes
        return batch

    def _release(self, batch: list[Record]) -> None:
        # batches are taken and released in order, so they are always the head of _held
        del self._held[: len(batch)]
        self._held_bytes -= sum(r.nbytes for r in batch)

    async def _connect(self) -> bool:
        try:
            await self._sink.connect()
        except Outage as exc:
            if not self._outage_since:
                log.warning("redis %s unreachable (%s); journaling events", self.redis_url, exc)
            return False
        if self._outage_since:
            log.warning(
                "redis %s back after %.1f s; replaying %d journaled bytes",
                self.redis_url,
                time.monotonic() - self._outage_since,
                self._journal.pending_bytes,
            )
            self._outage_since = 0.0
        pending = self._is_replay_pending()
        self._set_link(WriterState.REPLAYING if pending else WriterState.CONNECTED)
        return True

    async def _drop_client(self) -> None:
        await self._sink.close()

    async def _on_outage(self, exc: BaseException) -> None:
        if self._begin_outage():
            log.warning("redis %s failed (%s); journaling events", self.redis_url, exc)
        await self._drop_client()
        await self._spill()

    async def _write(self, batch: list[Record], *, is_replay: bool) -> None:
        """Write ``batch``; raises Outage if Redis did not take all of it."""
        try:
            result = await self._sink.write(batch)
        except Outage as exc:
            self._count(exc.partial, is_replay)
            raise
        self.n_batches += 1
        self._count(result, is_replay)

    def _count(self, result: BatchResult, is_replay: bool) -> None:
        self.n_written += result.written
        self.n_duplicates += result.duplicates
        self.n_dropped_rejected += result.rejected
        if is_replay:
            self.n_replayed += result.written

    async def _replay_step(self) -> None:
        # small chunks, small batches and a yield between them: a replay after a long outage
        # is thousands of events, and the calls' 20 ms frames must keep their clock
        if not self._replay:
            try:
                self._replay, self._is_replay_eof = await self._in_thread(
                    self._journal.read_chunk, REPLAY_BATCH_MAX
                )
            except OSError as exc:
                log.error("journal segment unreadable, skipped and left on disk: %s", exc)
                self._replay, self._is_replay_eof = [], False
                await self._in_thread(self._journal.drop_oldest, False)
                return
        if self._replay:
            t0 = time.perf_counter()
            await self._write(self._replay, is_replay=True)
            self._replay = []
            # at most half of the loop's time goes to catching up (a 60 s outage of 100 calls
            # replays in a few seconds); live events wait in memory meanwhile
            await asyncio.sleep(time.perf_counter() - t0)
        if self._is_replay_eof:
            self._is_replay_eof = False
            await self._in_thread(self._journal.drop_oldest)

    async def _spill(self) -> None:
        """Move everything held in memory to the journal, oldest first."""
        if not self._is_journal_ok or not (self._queue or self._held):
            return
        # _held first: a failed in-flight batch is older than anything still queued
        self._held.extend(self._queue)
        self._held_bytes += self._queue_bytes
        self._queue.clear()
        self._queue_bytes = 0
        batch = list(self._held)
        try:
            n = await self._in_thread(self._journal.append, batch)
        except OSError as exc:
            n = 0
            error: BaseException | None = exc
        else:
            error = None
        self._release(batch)
        self.n_journaled += n
        rest = batch[n:]
        if rest:
            # put them back in front of anything emitted meanwhile; emit() drops when full
            self._queue.extendleft(reversed(rest))
            self._queue_bytes += sum(r.nbytes for r in rest)
            if not self._is_spill_failing:
                self._is_spill_failing = True
                log.error(
                    "event journal cannot take more (%s); %d events held in memory",
                    error or "at its byte limit",
                    len(rest),
                )
        elif self._is_spill_failing:
            self._is_spill_failing = False
            log.warning("event journal writable again")

    async def _sleep_spilling(self, delay_s: float) -> bool:
        """Wait ``delay_s`` while journaling what is emitted meanwhile; True if closing."""
        assert self._loop is not None
        deadline = self._loop.time() + delay_s
        while not self._is_closing():
            remaining = deadline - self._loop.time()
            if remaining <= 0:
                return False
            if not self._queue:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), remaining)
                # gather a few before paying for an fsync, unless the queue is filling up
                if len(self._queue) < self.queue_max // 4 and not self._is_closing():
                    await asyncio.sleep(
                        min(self.spill_interval_s, max(0.0, deadline - self._loop.time()))
                    )
            await self._spill()
        return True

    async def _in_thread(self, fn: Any, *args: Any) -> Any:
        assert self._loop is not None and self._executor is not None
        return await self._loop.run_in_executor(self._executor, fn, *args)
