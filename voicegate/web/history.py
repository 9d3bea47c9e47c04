"""Ended calls read back from Redis for the page: one call's events, a filtered list of calls, and
the persona comparison (per persona over a period: distributions a contact centre watches).

Usage::

    history = CallHistory(settings.redis_url)
    events = await history.events("c1")                        # the call's stream, decoded
    calls = await history.ended_calls(Period.last(24 * 3600), persona="bank_teller")
    table = await history.compare(Period.last(7 * 24 * 3600))   # {"personas": [...], ...}
    history.close()

Where the figures come from: the global stream ``voicegate:events`` is read newest first between
the period's bounds (stream ids are wall-clock ms), keeping only ``call.ended`` entries (duration,
barge-ins, reason and the call's dynamics); the persona and numbers come from each call's hash
(``voicegate:call:{id}``, written by ``call.started``). A read stops after ``MAX_SCAN_ENTRIES``
entries of the stream and says so (``truncated``). Everything here is blocking redis-py run in a
worker thread: parsing thousands of entries on the event loop would delay the calls' frames.

Definitions (per call, then summarised per persona as p10/p25/p50/p75/p90):
``duration_s``; ``gap_p50_ms`` / ``gap_p90_ms`` (the call's own response-gap percentiles,
caller stops -> agent starts); ``bargeins_per_min`` (barge-ins / duration); ``overlap_share``
(both talking / anyone talking). Per persona: ``transfer_rate`` (calls that ended
``transferred`` / calls) and ``end_reasons`` (counts).

Owns: CallHistory, Period, summarise. Imports redis and events.schema; no FastAPI.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import redis

from voicegate.events.schema import (
    EVENT_TYPES,
    GLOBAL_EVENTS_KEY,
    Event,
    EventSchemaError,
    call_events_key,
    call_key,
    decode_fields,
)

__all__ = ["MAX_SCAN_ENTRIES", "CallHistory", "HistoryError", "Period", "event_json", "summarise"]

MAX_SCAN_ENTRIES = 200_000  # global stream entries one list or comparison may read
MAX_CALL_EVENTS = 20_000  # entries of one call's stream returned to the page
PAGE_ENTRIES = 2_000
MAX_PERIOD_S = 400 * 24 * 3600
QUANTILES = (0.10, 0.25, 0.50, 0.75, 0.90)
_HASH_FIELDS = ("persona", "from", "to", "leg")


class HistoryError(Exception):
    """Redis could not be read (down, wrong URL): the page says so instead of a 500."""


@dataclass(frozen=True, slots=True)
class Period:
    """Wall-clock bounds in ms since the epoch, ``since_ms <= until_ms``."""

    since_ms: int
    until_ms: int

    @classmethod
    def last(cls, seconds: float, now_ms: int | None = None) -> Period:
        now = now_ms if now_ms is not None else time.time_ns() // 1_000_000
        return cls(max(0, now - int(seconds * 1000)), now)

    @classmethod
    def parse(cls, since_ms: int | None, until_ms: int | None, default_s: float) -> Period:
        """The period a request asks for; ValueError with the reason when it makes no sense."""
        now = time.time_ns() // 1_000_000
        until = now if until_ms is None else until_ms
        since = until - int(default_s * 1000) if since_ms is None else since_ms
        if since < 0 or until < 0:
            raise ValueError("since_ms and until_ms are ms since the epoch (not negative)")
        if since > until:
            raise ValueError(f"since_ms {since} is after until_ms {until}")
        if until - since > MAX_PERIOD_S * 1000:
            raise ValueError(f"a period may span at most {MAX_PERIOD_S // 86400} days")
        return cls(since, until)


def event_json(event: Event) -> dict[str, Any]:
    """An event as the page gets it: its wire field names plus ``type``."""
    return {"type": event.type, **event.model_dump(mode="json", by_alias=True)}


def summarise(values: Sequence[float]) -> dict[str, float | int | None]:
    """``n`` and p10/p25/p50/p75/p90 (linear interpolation) of ``values``; None when empty."""
    xs = sorted(v for v in values if not math.isnan(v))
    out: dict[str, float | int | None] = {"n": len(xs)}
    for q in QUANTILES:
        key = f"p{round(q * 100)}"
        if not xs:
            out[key] = None
            continue
        pos = q * (len(xs) - 1)
        lo = math.floor(pos)
        hi = min(lo + 1, len(xs) - 1)
        out[key] = round(xs[lo] + (xs[hi] - xs[lo]) * (pos - lo), 4)
    return out


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


class CallHistory:
    """Reads calls back from Redis (blocking client in a worker thread; one per gateway)."""

    def __init__(self, redis_url: str, *, timeout_s: float = 5.0) -> None:
        self._url = redis_url
        self._timeout_s = timeout_s
        self._client: redis.Redis | None = None

    def _redis(self) -> redis.Redis:
        if self._client is None:
            self._client = redis.Redis.from_url(
                self._url,
                socket_timeout=self._timeout_s,
                socket_connect_timeout=self._timeout_s,
                decode_responses=False,
            )
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    async def _run(self, fn: Any, *args: Any) -> Any:
        try:
            return await asyncio.to_thread(fn, *args)
        except redis.RedisError as exc:
            raise HistoryError(f"cannot read the call history from Redis: {exc}") from exc

    # --- one call ------------------------------------------------------------------------------

    async def events(self, call_id: str) -> list[dict[str, Any]]:
        """The call's events in order, as the page gets them (``event_json``); empty when the
        call is unknown or has expired. An entry of a type this version does not know (a newer
        gateway wrote it) comes as its raw stream fields (text values); a malformed entry of a
        known type is left out."""
        result: list[dict[str, Any]] = await self._run(self._events, call_id)
        return result

    def _events(self, call_id: str) -> list[dict[str, Any]]:
        entries: Any = self._redis().xrange(call_events_key(call_id), count=MAX_CALL_EVENTS)
        out: list[dict[str, Any]] = []
        for _, fields in entries or []:
            try:
                out.append(event_json(decode_fields(fields)))
            except EventSchemaError:
                raw = {_text(k): _text(v) for k, v in fields.items()}
                if raw.get("type", "") not in EVENT_TYPES:
                    out.append(raw)
        return out

    # --- many calls ----------------------------------------------------------------------------

    async def ended_calls(
        self,
        period: Period,
        *,
        persona: str = "",
        number: str = "",
        reason: str = "",
        limit: int = 200,
    ) -> dict[str, Any]:
        """Calls that ended in ``period``, newest first, filtered (``number`` matches the
        caller's or the called number, digits anywhere): ``{"calls": [...], "truncated"}``."""
        result: dict[str, Any] = await self._run(
            self._ended_calls, period, persona, number, reason, limit
        )
        return result

    def _ended_calls(
        self, period: Period, persona: str, number: str, reason: str, limit: int
    ) -> dict[str, Any]:
        ended, truncated = self._scan_ended(period)
        out: list[dict[str, Any]] = []
        for row in ended:
            if persona and row["persona"] != persona:
                continue
            if reason and row["reason"] != reason:
                continue
            if number and number not in row["from"] and number not in row["to"]:
                continue
            out.append(row)
            if len(out) >= limit:
                break
        return {"calls": out, "truncated": truncated}

    def _scan_ended(self, period: Period) -> tuple[list[dict[str, Any]], bool]:
        """Every ``call.ended`` of the period (newest first) joined with its call's hash."""
        client = self._redis()
        rows: list[dict[str, Any]] = []
        truncated = False
        for fields, is_last in self._global_entries(period):
            if is_last:
                truncated = True
                break
            if fields.get(b"type") != b"call.ended":
                continue
            rows.append(_ended_row(fields))
        if rows:
            pipe = client.pipeline(transaction=False)
            for row in rows:
                pipe.hmget(call_key(row["call_id"]), *_HASH_FIELDS)
            for row, values in zip(rows, pipe.execute(), strict=True):
                for name, value in zip(_HASH_FIELDS, values, strict=True):
                    if value is not None and (name != "leg" or not row["leg"]):
                        row[name] = _text(value)
        return rows, truncated

    def _global_entries(self, period: Period) -> Iterator[tuple[dict[bytes, bytes], bool]]:
        """Global stream entries of the period, newest first; a last ``({}, True)`` when the
        scan stopped at ``MAX_SCAN_ENTRIES``."""
        client = self._redis()
        upper = f"{period.until_ms}-18446744073709551615"  # the whole last ms
        lower = f"{period.since_ms}-0"
        seen = 0
        while True:
            page: Any = client.xrevrange(GLOBAL_EVENTS_KEY, upper, lower, count=PAGE_ENTRIES)
            if not page:
                return
            for _entry_id, fields in page:
                seen += 1
                if seen > MAX_SCAN_ENTRIES:
                    yield {}, True
                    return
                yield fields, False
            last = _text(page[-1][0])
            if len(page) < PAGE_ENTRIES:
                return
            ms, _, seq = last.partition("-")
            upper = (
                f"{ms}-{int(seq) - 1}" if int(seq) > 0 else f"{int(ms) - 1}-18446744073709551615"
            )
            if int(ms) < period.since_ms:
                return

    # --- persona comparison --------------------------------------------------------------------

    async def compare(self, period: Period) -> dict[str, Any]:
        """Per persona: calls and the distributions named in the module docstring."""
        result: dict[str, Any] = await self._run(self._compare, period)
        return result

    def _compare(self, period: Period) -> dict[str, Any]:
        rows, truncated = self._scan_ended(period)
        by_persona: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            by_persona.setdefault(row["persona"] or "(unknown)", []).append(row)
        personas = []
        for name in sorted(by_persona):
            calls = by_persona[name]
            reasons: dict[str, int] = {}
            for row in calls:
                reasons[row["reason"]] = reasons.get(row["reason"], 0) + 1
            personas.append(
                {
                    "persona": name,
                    "calls": len(calls),
                    "duration_s": summarise([r["duration_ms"] / 1000 for r in calls]),
                    "gap_p50_ms": summarise(_present(r["gap_p50_ms"] for r in calls)),
                    "gap_p90_ms": summarise(_present(r["gap_p90_ms"] for r in calls)),
                    "bargeins_per_min": summarise(
                        [
                            r["bargeins"] * 60_000 / r["duration_ms"]
                            for r in calls
                            if r["duration_ms"] > 0
                        ]
                    ),
                    "overlap_share": summarise(_present(r["overlap_share"] for r in calls)),
                    "transfer_rate": round(reasons.get("transferred", 0) / len(calls), 4),
                    "end_reasons": dict(sorted(reasons.items(), key=lambda kv: -kv[1])),
                }
            )
        return {
            "since_ms": period.since_ms,
            "until_ms": period.until_ms,
            "calls": len(rows),
            "truncated": truncated,
            "personas": personas,
        }


def _present(values: Iterator[float | None]) -> list[float]:
    return [v for v in values if v is not None]


def _ended_row(fields: dict[bytes, bytes]) -> dict[str, Any]:
    """The list's and comparison's view of one ``call.ended`` entry (lenient: a field that is
    missing or malformed reads as absent, never fails the whole list)."""
    get = {_text(k): _text(v) for k, v in fields.items()}
    dynamics: dict[str, Any] = {}
    try:
        parsed = json.loads(get.get("dynamics", "{}"))
        if isinstance(parsed, dict):
            dynamics = parsed
    except ValueError:
        pass
    caller = _num(dynamics.get("caller_talk_ms"))
    agent = _num(dynamics.get("agent_talk_ms"))
    overlap = _num(dynamics.get("overlap_ms"))
    talk = (caller or 0) + (agent or 0) - (overlap or 0)
    return {
        "call_id": get.get("call_id", ""),
        "leg": get.get("leg", ""),
        "persona": "",
        "from": "",
        "to": "",
        "ended_ts": _int(get.get("ts")),
        "duration_ms": _int(get.get("duration_ms")),
        "reason": get.get("reason", ""),
        "result": get.get("result", ""),
        "detail": get.get("detail", ""),
        "bargeins": _int(get.get("bargeins")),
        "gap_p50_ms": _num(dynamics.get("response_gap_p50_ms")),
        "gap_p90_ms": _num(dynamics.get("response_gap_p90_ms")),
        "overlap_share": round((overlap or 0) / talk, 4) if talk > 0 else None,
    }


def _int(text: str | None) -> int:
    try:
        return max(0, int(text or 0))
    except ValueError:
        return 0


def _num(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None
