"""Post-call webhooks, at least once: a Redis consumer group on the global events stream.

Usage (on the event loop; ``app.py`` wires it)::

    hooks = WebhookDelivery(redis_url, secret=..., resolve=lambda call: url_or_empty,
                            registry=registry, consumer="gw-1")
    await hooks.start()          # never fails because Redis is down
    ...
    await hooks.aclose()         # deliveries in flight stop; Redis keeps their state

How a report travels (every step's state is in Redis, none only in this process's memory):

1. The ``EventLog`` writes ``call.ended`` to ``voicegate:events`` (journaled on disk while Redis
   is down, replayed when it is back). This consumer reads that stream in the consumer group
   ``webhooks`` (``XREADGROUP``); every other event type is acknowledged at once.
2. For a ``call.ended`` entry, ``webhook_settle_s`` after the call ended, the call's hash and
   stream are read, ``resolve(call hash)`` names the URL (a number's entry, the persona's, the
   numbers file's default; "" = none: the entry is acknowledged and nothing is sent), and the
   report is built (a recorded call's report first waits up to ``recording_wait_s`` more,
   re-reading the stream, for ``recording.ended``, written by the recording writer thread a
   little after ``call.ended``, and, when uploads are on, for ``recording.uploaded``) and stored with its state in ``voicegate:webhook:{call_id}`` (url, body, key,
   attempts, next attempt, last error, status). Every attempt sends those same bytes, signed
   anew (``signing``), with the same ``Idempotency-Key``.
3. A 2xx answer marks the state ``delivered`` and then acknowledges the entry (``XACK``). Any
   other answer, a timeout or a refused connection schedules the next attempt after an
   exponential backoff with jitter (``backoff_min_s`` doubling up to ``backoff_max_s``; each
   delay is drawn in [d/2, d]; a ``Retry-After`` on 429/503 is honoured up to the maximum), kept
   in the state so a restarted gateway keeps the schedule. ``410 Gone`` or ``retry_for_s`` after
   the call ended without success: the report goes to the dead-letter stream
   ``voicegate:webhooks:dead`` with its last error, the state says ``dead``, the entry is
   acknowledged. ``voicegate webhooks replay CALL_ID`` (``replay``) sends it again by hand.

Survives: a gateway killed at any point (its entries stay pending in the group; at start it
reads its own pending entries first, and entries of a consumer idle for ``claim_idle_s`` are
claimed by another gateway's ``XAUTOCLAIM``: a job refreshes its claim while it waits); a Redis
outage (the consumer reconnects with backoff; jobs retry their Redis calls; a 2xx received
while Redis is down is remembered in memory and written when it is back, so it is not sent
again). Duplicates: a report a receiver acknowledged is never sent again, unless the process
dies in the milliseconds between the receiver's 2xx and the ``delivered`` mark reaching Redis
(it then goes once more, with the same idempotency key: receivers should dedupe on it).

Metrics: ``voicegate_webhook_delivered_total``, ``voicegate_webhook_retried_total`` (failed
attempts that will be retried), ``voicegate_webhook_dead_lettered_total`` and the histogram
``voicegate_webhook_delivery_seconds`` (call.ended to the receiver's 2xx).
Owns: ``WebhookDelivery``, ``post_report``, the webhook Redis keys. Imports events' key names and
``webhooks.report``/``signing``; must not import calls, legs or engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast

import httpx
from prometheus_client import CollectorRegistry, Counter, Histogram
from redis.asyncio import Redis
from redis.backoff import NoBackoff
from redis.exceptions import RedisError, ResponseError
from redis.retry import Retry

from voicegate.events.schema import GLOBAL_EVENTS_KEY, KEY_PREFIX, call_events_key, call_key
from voicegate.http_out import post_bounded
from voicegate.webhooks.report import build_report, encode_report, idempotency_key
from voicegate.webhooks.signing import signed_headers

__all__ = [
    "DEAD_LETTER_KEY",
    "GROUP",
    "Attempt",
    "WebhookDelivery",
    "delivery_key",
    "hgetall",
    "post_report",
    "redis_client",
]

log = logging.getLogger("voicegate.webhooks")

GROUP = "webhooks"
DEAD_LETTER_KEY = f"{KEY_PREFIX}webhooks:dead"
DEAD_LETTER_MAXLEN = 100_000
READ_COUNT = 100
RECORDING_POLL_S = 0.1  # re-read period while a recorded call's report waits for its recording
BLOCK_MS = 500
LATENCY_BUCKETS_S = (0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600, 24 * 3600)
_REDIS_ERRORS = (RedisError, OSError, TimeoutError)


def delivery_key(call_id: str) -> str:
    """``voicegate:webhook:{call_id}``: one call's report and its delivery state."""
    return f"{KEY_PREFIX}webhook:{call_id}"


ERROR_TEXT_BYTES = 1024  # of a failed attempt's answer, for its error message


@dataclass(frozen=True, slots=True)
class Attempt:
    """What one POST got: ``ok`` for a 2xx; ``error`` says what went wrong otherwise."""

    ok: bool
    status: int | None
    error: str
    retry_after_s: float | None = None

    @property
    def is_gone(self) -> bool:
        return self.status == 410


async def post_report(
    client: httpx.AsyncClient, url: str, body: bytes, secret: str, key: str
) -> Attempt:
    """One signed POST of ``body``; never raises for what the receiver or network does."""
    try:
        # the receiver's answer is read only as far as its error text needs
        response = await post_bounded(
            client, url, limit=ERROR_TEXT_BYTES, content=body,
            headers=signed_headers(body, secret, key),
        )  # fmt: skip
    except httpx.HTTPError as exc:
        return Attempt(False, None, f"{type(exc).__name__}: {exc}"[:500])
    status = response.status_code
    if 200 <= status < 300:
        return Attempt(True, status, "")
    retry_after: float | None = None
    if status in (429, 503):
        with contextlib.suppress(ValueError):
            retry_after = max(0.0, float(response.headers.get("retry-after", "")))
    return Attempt(False, status, f"HTTP {status}: {response.text[:200]}", retry_after)


@dataclass(slots=True)
class _Progress:
    """A job's schedule as it knows it (Redis has the same unless a write failed)."""

    attempts: int = 0
    next_at: float = 0.0
    last_error: str = ""


class _Metrics:
    def __init__(self, registry: CollectorRegistry | None) -> None:
        kw: dict[str, Any] = {"registry": registry}
        self.delivered = Counter(
            "voicegate_webhook_delivered", "Webhook reports a receiver acknowledged (2xx).", **kw
        )
        self.retried = Counter(
            "voicegate_webhook_retried", "Failed webhook attempts that will be retried.", **kw
        )
        self.dead_lettered = Counter(
            "voicegate_webhook_dead_lettered",
            "Webhook reports moved to the dead-letter stream.",
            **kw,
        )
        self.delivery_seconds = Histogram(
            "voicegate_webhook_delivery_seconds",
            "From call.ended to the receiver's acknowledgement.",
            buckets=LATENCY_BUCKETS_S,
            **kw,
        )
        self._registry = registry

    def unregister(self) -> None:
        if self._registry is None:
            return
        for m in (self.delivered, self.retried, self.dead_lettered, self.delivery_seconds):
            with contextlib.suppress(KeyError):
                self._registry.unregister(m)


async def hgetall(r: Redis, key: str) -> dict[str, str]:
    reply: Any = await r.hgetall(key)
    return {str(k): str(v) for k, v in (reply or {}).items()}


def redis_client(url: str, socket_timeout_s: float) -> Redis:
    return Redis.from_url(
        url,
        decode_responses=True,
        socket_timeout=socket_timeout_s,
        socket_connect_timeout=0.5,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=0,
    )


class WebhookDelivery:
    """Delivers post-call reports from the ``webhooks`` consumer group; see the module doc."""

    def __init__(
        self,
        redis_url: str,
        *,
        secret: str,
        resolve: Callable[[Mapping[str, str]], str],
        registry: CollectorRegistry | None = None,
        consumer: str = "",
        retry_for_s: float = 86400.0,
        backoff_min_s: float = 1.0,
        backoff_max_s: float = 600.0,
        timeout_s: float = 10.0,
        settle_s: float = 1.0,
        recording_wait_s: float = 5.0,
        is_upload_expected: bool = False,
        retention_s: int = 7 * 24 * 3600,
        claim_idle_s: float = 60.0,
        max_jobs: int = 1000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not secret:
            raise ValueError("webhooks need a signing secret (VOICEGATE_WEBHOOK_SECRET)")
        if backoff_min_s <= 0 or backoff_max_s < backoff_min_s:
            raise ValueError(
                f"webhook backoff: need 0 < min <= max (got {backoff_min_s}, {backoff_max_s})"
            )
        self.redis_url = redis_url
        self.secret = secret
        self.resolve = resolve
        self.consumer = consumer or socket.gethostname()
        self.retry_for_s = retry_for_s
        self.backoff_min_s = backoff_min_s
        self.backoff_max_s = backoff_max_s
        self.timeout_s = timeout_s
        self.settle_s = settle_s
        self.recording_wait_s = recording_wait_s
        self.is_upload_expected = is_upload_expected
        self.retention_s = retention_s
        self.claim_idle_s = claim_idle_s
        self.max_jobs = max_jobs
        self._clock = clock
        self._redis = redis_client(redis_url, BLOCK_MS / 1000 + 1.5)
        self._http: httpx.AsyncClient | None = None
        self._jobs: dict[str, asyncio.Task[None]] = {}  # stream entry id -> its delivery
        self._acked: dict[str, float] = {}  # call_id -> time of a 2xx not yet marked in Redis
        self._task: asyncio.Task[None] | None = None
        self._is_closing = False
        self._is_group_ok = False
        self.is_redis_up = False
        self._was_down = False
        self._metrics = _Metrics(registry)
        # plain counters for tests and benchmarks (the metrics show the same)
        self.delivered = 0
        self.attempts = 0
        self.retried = 0
        self.dead_lettered = 0
        self.skipped = 0  # ended calls with no webhook URL
        self.latencies_s: deque[float] = deque(maxlen=100_000)

    # --- lifecycle ---

    async def start(self) -> None:
        """Start the consumer task (it connects, and reconnects, by itself)."""
        if self._task is not None:
            raise RuntimeError("WebhookDelivery.start() called twice")
        self._http = httpx.AsyncClient(timeout=self.timeout_s, trust_env=False)
        self._task = asyncio.create_task(self._run(), name="voicegate-webhooks")

    async def aclose(self) -> None:
        """Stop reading and cancel deliveries in flight (their state stays in Redis)."""
        self._is_closing = True
        tasks = [t for t in (self._task, *self._jobs.values()) if t is not None]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        if self._http is not None:
            await self._http.aclose()
        with contextlib.suppress(Exception):
            await self._redis.aclose()
        self._metrics.unregister()

    @property
    def in_flight(self) -> int:
        """Reports being delivered (waiting for their next attempt included)."""
        return len(self._jobs)

    def backoff_s(self, attempt: int) -> float:
        """The delay after failed attempt number ``attempt`` (1-based): in [d/2, d] for
        d = min(backoff_max_s, backoff_min_s * 2 ** (attempt - 1))."""
        d = min(self.backoff_max_s, self.backoff_min_s * 2.0 ** min(attempt - 1, 60))
        return d / 2 + random.uniform(0.0, d / 2)

    # --- the consumer ---

    async def _run(self) -> None:
        backoff = 0.05
        is_pending_read = True  # own pending entries first: a restart picks up where it was
        last_claim = 0.0
        while not self._is_closing:
            try:
                if not self._is_group_ok:
                    await self._ensure_group()
                if self._acked:
                    await self._flush_acked()
                if is_pending_read:
                    await self._read("0")
                    is_pending_read = False
                if time.monotonic() - last_claim >= self.claim_idle_s / 3:
                    await self._claim_stale()
                    last_claim = time.monotonic()
                if len(self._jobs) >= self.max_jobs:
                    await asyncio.sleep(BLOCK_MS / 1000)
                    continue
                await self._read(">")
                if not self.is_redis_up and self._was_down:
                    log.warning("webhooks: redis %s back", self.redis_url)
                self.is_redis_up = True
                self._was_down = False
                backoff = 0.05
            except asyncio.CancelledError:
                raise
            except _REDIS_ERRORS as exc:
                if isinstance(exc, ResponseError) and "NOGROUP" in str(exc):
                    self._is_group_ok = False  # Redis lost the group (a restart without data)
                    continue
                if self.is_redis_up or backoff == 0.05:
                    log.warning(
                        "webhooks: redis %s unavailable (%s); retrying", self.redis_url, exc
                    )
                self.is_redis_up = False
                self._was_down = True
                self._is_group_ok = False
                is_pending_read = True
                with contextlib.suppress(Exception):
                    await self._redis.connection_pool.disconnect()
                await asyncio.sleep(backoff * random.uniform(0.5, 1.0))
                backoff = min(backoff * 2, 2.0)
            except Exception:
                log.exception("webhooks: consumer error; going on")
                await asyncio.sleep(1.0)

    async def _ensure_group(self) -> None:
        # a new group starts a minute back, not at "$": a call.ended replayed from the events
        # journal just before this connection must still be seen; not at "0": a first start
        # must not report every call the stream still holds
        start = f"{int(self._clock() * 1000) - 60_000}-0"
        try:
            await self._redis.xgroup_create(GLOBAL_EVENTS_KEY, GROUP, id=start, mkstream=True)
            log.info("webhooks: consumer group %s created on %s", GROUP, GLOBAL_EVENTS_KEY)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._is_group_ok = True

    async def _read(self, from_id: str) -> None:
        """Read entries after ``from_id`` (">" new ones, "0" this consumer's pending ones)."""
        while True:
            reply: Any = await self._redis.xreadgroup(
                GROUP,
                self.consumer,
                {GLOBAL_EVENTS_KEY: from_id},
                count=READ_COUNT,
                block=BLOCK_MS if from_id == ">" else None,
            )
            entries = reply[0][1] if reply else []
            await self._take(entries)
            if from_id == ">" or len(entries) < READ_COUNT:
                return
            from_id = entries[-1][0]

    async def _claim_stale(self) -> None:
        """Take over entries another consumer (a dead gateway) left idle for ``claim_idle_s``."""
        start = "0-0"
        while True:
            reply: Any = await self._redis.xautoclaim(
                GLOBAL_EVENTS_KEY,
                GROUP,
                self.consumer,
                int(self.claim_idle_s * 1000),
                start_id=start,
                count=READ_COUNT,
            )
            start, entries = reply[0], reply[1]
            await self._take([e for e in entries if e and e[0] not in self._jobs])
            if start in ("0-0", b"0-0"):
                return

    async def _take(self, entries: list[Any]) -> None:
        done: list[str] = []
        for entry_id, fields in entries:
            if not fields or fields.get("type") != "call.ended" or not fields.get("call_id"):
                done.append(entry_id)
            elif entry_id not in self._jobs:
                task = asyncio.create_task(self._job(entry_id, dict(fields)))
                self._jobs[entry_id] = task
                task.add_done_callback(self._job_done)
        if done:
            await self._redis.xack(GLOBAL_EVENTS_KEY, GROUP, *done)

    def _job_done(self, task: asyncio.Task[None]) -> None:
        for entry_id, t in list(self._jobs.items()):
            if t is task:
                del self._jobs[entry_id]

    async def _flush_acked(self) -> None:
        for call_id, at in list(self._acked.items()):
            await self._redis.hset(
                delivery_key(call_id), mapping={"status": "delivered", "delivered_ts": f"{at:.3f}"}
            )
            self._acked.pop(call_id, None)

    # --- one report ---

    async def _job(self, entry_id: str, fields: dict[str, str]) -> None:
        backoff = 0.05
        progress = _Progress()  # outlives a Redis error: the schedule holds while it is down
        while not self._is_closing:
            try:
                await self._deliver(entry_id, fields, progress)
                return
            except asyncio.CancelledError:
                raise
            except _REDIS_ERRORS as exc:  # Redis is down: the state waits there; try again
                log.debug("webhook %s: redis error %s; retrying", fields.get("call_id"), exc)
                await asyncio.sleep(backoff * random.uniform(0.5, 1.0))
                backoff = min(backoff * 2, 2.0)
            except Exception:
                log.exception("webhook %s: delivery failed; retrying", fields.get("call_id"))
                await asyncio.sleep(1.0)

    async def _deliver(self, entry_id: str, fields: dict[str, str], progress: _Progress) -> None:
        r = self._redis
        call_id = fields["call_id"]
        key = delivery_key(call_id)
        ended_s = int(fields.get("ts") or 0) / 1000 or self._clock()
        if call_id in self._acked:  # a 2xx came while Redis was down: record it, never resend
            await self._mark_delivered(entry_id, call_id, self._acked[call_id])
            return
        state: dict[str, str] = await hgetall(r, key)
        if state.get("status") in ("delivered", "dead"):
            await r.xack(GLOBAL_EVENTS_KEY, GROUP, entry_id)
            return
        if not state.get("body"):
            wait = ended_s + self.settle_s - self._clock()
            if wait > 0:
                await asyncio.sleep(wait)
            built = await self._build(call_id, fields, ended_s)
            if built is None:
                self.skipped += 1
                await r.xack(GLOBAL_EVENTS_KEY, GROUP, entry_id)
                return
            state = built
            await r.hset(key, mapping=cast(Any, state))
            await r.expire(key, self.retention_s)
        url, body, idem = state["url"], state["body"].encode(), state["key"]
        attempts = max(int(state.get("attempts") or 0), progress.attempts)
        next_at = max(float(state.get("next_at") or 0), progress.next_at)
        deadline = ended_s + self.retry_for_s
        last_error = progress.last_error or state.get("last_error", "")
        while True:
            now = self._clock()
            if now >= deadline:
                await self._dead_letter(entry_id, call_id, url, attempts, last_error or "expired")
                return
            if next_at > now:
                await self._wait(entry_id, min(next_at, deadline) - now)
                continue
            if not await self._still_mine(entry_id):
                log.info("webhook %s: claimed by another consumer", call_id)
                return
            if await r.hget(key, "status") == "delivered":  # a replay got there first
                await r.xack(GLOBAL_EVENTS_KEY, GROUP, entry_id)
                return
            assert self._http is not None
            attempts += 1
            self.attempts += 1
            result = await post_report(self._http, url, body, self.secret, idem)
            now = self._clock()
            if result.ok:
                self._acked[call_id] = now  # first in memory: a Redis failure now must not resend
                latency = max(0.0, now - ended_s)
                self.delivered += 1
                self.latencies_s.append(latency)
                self._metrics.delivered.inc()
                self._metrics.delivery_seconds.observe(latency)
                log.info(
                    "webhook %s delivered to %s (attempt %d, %.2f s after the call ended)",
                    call_id,
                    url,
                    attempts,
                    latency,
                )
                await r.hset(key, mapping={"attempts": str(attempts), "last_error": ""})
                await self._mark_delivered(entry_id, call_id, now)
                return
            last_error = result.error
            if result.is_gone:
                await self._dead_letter(entry_id, call_id, url, attempts, last_error)
                return
            delay = self.backoff_s(attempts)
            if result.retry_after_s is not None:
                delay = max(delay, min(result.retry_after_s, self.backoff_max_s))
            next_at = now + delay
            progress.attempts, progress.next_at, progress.last_error = attempts, next_at, last_error
            self.retried += 1
            self._metrics.retried.inc()
            log.info(
                "webhook %s attempt %d to %s failed (%s); next in %.1f s",
                call_id,
                attempts,
                url,
                last_error,
                delay,
            )
            await r.hset(
                key,
                mapping={
                    "attempts": str(attempts),
                    "last_error": last_error,
                    "last_attempt_ts": f"{now:.3f}",
                    "next_at": f"{next_at:.3f}",
                },
            )

    async def _build(
        self, call_id: str, fields: dict[str, str], ended_s: float
    ) -> dict[str, str] | None:
        r = self._redis
        call: dict[str, str] = await hgetall(r, call_key(call_id))
        if not call:
            call = {"call_id": call_id, "leg": fields.get("leg", "")}
        url = self.resolve(call)
        if not url:
            return None
        entries = await self._entries(call_id)
        if self._is_recording_due(entries):
            deadline = time.monotonic() + self.recording_wait_s
            while time.monotonic() < deadline:
                await asyncio.sleep(RECORDING_POLL_S)
                entries = await self._entries(call_id)
                if not self._is_recording_due(entries):
                    break
            call = await hgetall(r, call_key(call_id)) or call  # recording_url, when uploaded
        if not any(f.get("type") == "call.ended" for f in entries):
            entries.append(fields)  # the call's own stream expired or was trimmed
        body = encode_report(build_report(call, entries)).decode()
        return {
            "call_id": call_id,
            "url": url,
            "body": body,
            "key": idempotency_key(call_id),
            "ended_ts": f"{ended_s:.3f}",
            "attempts": "0",
            "status": "pending",
        }

    async def _entries(self, call_id: str) -> list[dict[str, str]]:
        raw: Any = await self._redis.xrange(call_events_key(call_id))
        return [f for _, f in raw or [] if f]

    def _is_recording_due(self, entries: list[dict[str, str]]) -> bool:
        """The call was recorded and its ``recording.ended`` (or, when uploads are on and the
        recording is complete, its ``recording.uploaded``) is not in its stream yet."""
        types = {f.get("type", ""): f for f in entries}
        if "recording.started" not in types:
            return False
        ended = types.get("recording.ended")
        if ended is None:
            return True
        return (
            self.is_upload_expected
            and ended.get("status") == "complete"
            and "recording.uploaded" not in types
        )

    async def _wait(self, entry_id: str, delay_s: float) -> None:
        """Sleep ``delay_s``, refreshing this consumer's claim on the entry meanwhile (another
        gateway's XAUTOCLAIM takes entries idle for ``claim_idle_s``)."""
        step = max(0.05, self.claim_idle_s / 3)
        while delay_s > 0:
            await asyncio.sleep(min(step, delay_s))
            delay_s -= step
            if delay_s > 0:
                await self._refresh(entry_id)

    async def _refresh(self, entry_id: str) -> None:
        await self._redis.xclaim(
            GLOBAL_EVENTS_KEY, GROUP, self.consumer, 0, [entry_id], justid=True
        )

    async def _still_mine(self, entry_id: str) -> bool:
        """The entry is still pending for this consumer (nobody claimed it); refreshes it."""
        info: Any = await self._redis.xpending_range(
            GLOBAL_EVENTS_KEY, GROUP, min=entry_id, max=entry_id, count=1
        )
        if not info:
            return False  # acknowledged by someone else (or the group was recreated)
        if info[0].get("consumer") != self.consumer:
            return False
        await self._refresh(entry_id)
        return True

    async def _mark_delivered(self, entry_id: str, call_id: str, at: float) -> None:
        await self._redis.hset(
            delivery_key(call_id), mapping={"status": "delivered", "delivered_ts": f"{at:.3f}"}
        )
        self._acked.pop(call_id, None)
        await self._redis.xack(GLOBAL_EVENTS_KEY, GROUP, entry_id)

    async def _dead_letter(
        self, entry_id: str, call_id: str, url: str, attempts: int, error: str
    ) -> None:
        r = self._redis
        now = self._clock()
        await r.xadd(
            DEAD_LETTER_KEY,
            {
                "call_id": call_id,
                "url": url,
                "attempts": str(attempts),
                "last_error": error,
                "key": idempotency_key(call_id),
                "ts": str(int(now * 1000)),
            },
            maxlen=DEAD_LETTER_MAXLEN,
            approximate=True,
        )
        await r.hset(
            delivery_key(call_id),
            mapping={"status": "dead", "dead_ts": f"{now:.3f}", "last_error": error},
        )
        await r.xack(GLOBAL_EVENTS_KEY, GROUP, entry_id)
        self.dead_lettered += 1
        self._metrics.dead_lettered.inc()
        log.warning(
            "webhook %s to %s dead-lettered after %d attempts: %s", call_id, url, attempts, error
        )
