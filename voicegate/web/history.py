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
from dataclasses import dataclass, field
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


# One page of the global stream walked inside Redis: only its ``call.ended`` entries come back,
# joined with their call's hash, as one text of tab-separated rows: redis-py's pure-Python reply
# parser would otherwise cost ~0.5 ms per entry here, holding the GIL the calls' event loop needs.
# (Like the EventLog's script it reads keys it is not passed: not for Redis Cluster.)
# A page of PAGE_ENTRIES entries takes Redis about a millisecond.
ENDED_FIELDS = ("call_id", "ts", "leg", "duration_ms", "reason", "result", "bargeins", "dynamics")
ENDED_PAGE_SCRIPT = r"""
local page = redis.call('XREVRANGE', KEYS[1], ARGV[1], ARGV[2], 'COUNT', tonumber(ARGV[3]))
local names = {'call_id', 'ts', 'leg', 'duration_ms', 'reason', 'result', 'bargeins', 'dynamics'}
local rows = {}
for _, entry in ipairs(page) do
  local f = entry[2]
  local kind = nil
  for j = 1, #f, 2 do
    if f[j] == 'type' then kind = f[j + 1]; break end
  end
  if kind == 'call.ended' then
    local v = {}
    for j = 1, #f, 2 do v[f[j]] = f[j + 1] end
    local cells = {}
    for k, name in ipairs(names) do cells[k] = v[name] or '' end
    local h = redis.call('HMGET', ARGV[4] .. (v['call_id'] or ''), 'persona', 'from', 'to')
    for k = 1, 3 do cells[#cells + 1] = h[k] or '' end
    for k = 1, #cells do cells[k] = string.gsub(cells[k], '[\t\n]', ' ') end
    rows[#rows + 1] = table.concat(cells, '\t')
  end
end
local last = ''
if #page > 0 then last = page[#page][1] end
return {last, #page, table.concat(rows, '\n')}
"""


@dataclass(slots=True)
class _Scan:
    entries: int = 0
    truncated: bool = False


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
        self._ended_page: Any = None  # ENDED_PAGE_SCRIPT registered on the client

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
            self._ended_page = None

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
        scan = _Scan()
        out: list[dict[str, Any]] = []
        for page in self._ended_pages(period, scan):
            for row in page:
                if persona and row["persona"] != persona:
                    continue
                if reason and row["reason"] != reason:
                    continue
                if number and number not in row["from"] and number not in row["to"]:
                    continue
                out.append(row)
                if len(out) >= limit:
                    return {"calls": out, "truncated": False}
        return {"calls": out, "truncated": scan.truncated}

    def _ended_pages(self, period: Period, scan: _Scan) -> Iterator[list[dict[str, Any]]]:
        """The period's ``call.ended`` entries, newest first, a page at a time, each row joined
        with its call's hash; ``scan.truncated`` once ``MAX_SCAN_ENTRIES`` were read."""
        client = self._redis()
        if self._ended_page is None:
            self._ended_page = client.register_script(ENDED_PAGE_SCRIPT)
        upper = f"{period.until_ms}-18446744073709551615"  # the whole last ms
        lower = f"{period.since_ms}-0"
        while scan.entries < MAX_SCAN_ENTRIES:
            count = min(PAGE_ENTRIES, MAX_SCAN_ENTRIES - scan.entries)
            reply: Any = self._ended_page(
                keys=[GLOBAL_EVENTS_KEY], args=[upper, lower, count, call_key("")]
            )
            last, n, text = _text(reply[0]), int(reply[1]), _text(reply[2])
            scan.entries += n
            rows = [_ended_row(line.split("\t")) for line in text.split("\n") if line]
            if rows:
                yield rows
            if n < count:
                return  # the period is read to its start
            ms, _, seq = last.partition("-")
            upper = (
                f"{ms}-{int(seq) - 1}" if int(seq) > 0 else f"{int(ms) - 1}-18446744073709551615"
            )
        scan.truncated = True

    # --- persona comparison --------------------------------------------------------------------

    async def compare(self, period: Period) -> dict[str, Any]:
        """Per persona: calls and the distributions named in the module docstring."""
        result: dict[str, Any] = await self._run(self._compare, period)
        return result

    def _compare(self, period: Period) -> dict[str, Any]:
        # figures go into per-persona lists of floats as the pages come: the rows are dropped at
        # once (thousands of live dicts would make the collector scan the gateway's whole heap)
        scan = _Scan()
        acc: dict[str, _PersonaFigures] = {}
        calls = 0
        for page in self._ended_pages(period, scan):
            for row in page:
                calls += 1
                name = row["persona"] or "(unknown)"
                figures = acc.get(name)
                if figures is None:
                    figures = acc[name] = _PersonaFigures()
                figures.add(row)
        return {
            "since_ms": period.since_ms,
            "until_ms": period.until_ms,
            "calls": calls,
            "truncated": scan.truncated,
            "personas": [acc[name].summary(name) for name in sorted(acc)],
        }


@dataclass(slots=True)
class _PersonaFigures:
    """One persona's per-call figures, collected for ``summarise``."""

    duration_s: list[float] = field(default_factory=list)
    gap_p50_ms: list[float] = field(default_factory=list)
    gap_p90_ms: list[float] = field(default_factory=list)
    bargeins_per_min: list[float] = field(default_factory=list)
    overlap_share: list[float] = field(default_factory=list)
    reasons: dict[str, int] = field(default_factory=dict)

    def add(self, row: dict[str, Any]) -> None:
        duration_ms = row["duration_ms"]
        self.duration_s.append(duration_ms / 1000)
        if duration_ms > 0:
            self.bargeins_per_min.append(row["bargeins"] * 60_000 / duration_ms)
        for name in ("gap_p50_ms", "gap_p90_ms", "overlap_share"):
            value = row[name]
            if value is not None:
                getattr(self, name).append(value)
        self.reasons[row["reason"]] = self.reasons.get(row["reason"], 0) + 1

    def summary(self, persona: str) -> dict[str, Any]:
        calls = len(self.duration_s)
        return {
            "persona": persona,
            "calls": calls,
            "duration_s": summarise(self.duration_s),
            "gap_p50_ms": summarise(self.gap_p50_ms),
            "gap_p90_ms": summarise(self.gap_p90_ms),
            "bargeins_per_min": summarise(self.bargeins_per_min),
            "overlap_share": summarise(self.overlap_share),
            "transfer_rate": round(self.reasons.get("transferred", 0) / calls, 4) if calls else 0,
            "end_reasons": dict(sorted(self.reasons.items(), key=lambda kv: -kv[1])),
        }


def _ended_row(cells: list[str]) -> dict[str, Any]:
    """The list's and comparison's view of one ``call.ended`` row of ENDED_PAGE_SCRIPT
    (lenient: a field that is missing or malformed reads as absent, never fails the list)."""
    cells = cells + [""] * (len(ENDED_FIELDS) + 3 - len(cells))
    get = dict(zip(ENDED_FIELDS, cells, strict=False))
    dynamics: dict[str, Any] = {}
    try:
        parsed = json.loads(get["dynamics"] or "{}")
        if isinstance(parsed, dict):
            dynamics = parsed
    except ValueError:
        pass
    caller = _num(dynamics.get("caller_talk_ms"))
    agent = _num(dynamics.get("agent_talk_ms"))
    overlap = _num(dynamics.get("overlap_ms"))
    talk = (caller or 0) + (agent or 0) - (overlap or 0)
    persona, from_, to = cells[len(ENDED_FIELDS) : len(ENDED_FIELDS) + 3]
    return {
        "call_id": get["call_id"],
        "leg": get["leg"],
        "persona": persona,
        "from": from_,
        "to": to,
        "ended_ts": _int(get["ts"]),
        "duration_ms": _int(get["duration_ms"]),
        "reason": get["reason"],
        "result": get["result"],
        "bargeins": _int(get["bargeins"]),
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
