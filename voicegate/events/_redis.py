"""The Redis side of the EventLog: one connection that writes batches of records atomically.

Each record becomes one EVALSHA of ``WRITE_SCRIPT``, which (atomically, per event) skips the
event if this writer already wrote its sequence number to that call (or it is a second
``call.ended`` of a call that has ended), else XADDs it to the
call's stream and the global stream (``MAXLEN ~``), updates the call hash and sets the TTLs.
redis-py parses the URL (auth, db, TLS, unix sockets) and owns the socket; the commands are
packed here (redis-py's per-argument packing cost ~10x more) and its own retries are off: the
EventLog decides when to retry.
Owns: the Lua script, RESP packing, reply classification. Must not import asyncio tasks or
anything of the journal.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

from redis.asyncio import Connection, ConnectionPool
from redis.backoff import NoBackoff
from redis.exceptions import (
    ClusterDownError,
    MasterDownError,
    NoScriptError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisError,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from voicegate.errors import ConfigError
from voicegate.events._journal import Record
from voicegate.events.schema import GLOBAL_EVENTS_KEY, call_events_key, call_key

__all__ = ["WRITE_SCRIPT", "BatchResult", "Outage", "RedisSink"]

log = logging.getLogger("voicegate.events")

# Per Lua call: KEYS = call hash, call stream, global stream.
# ARGV = writer, seq, call maxlen, global maxlen, is_end, retention s, open-call ttl s,
#        n hash pairs, n field pairs, hash pairs..., field pairs...
WRITE_SCRIPT = """
local mark = 'w:' .. ARGV[1]
local seq = tonumber(ARGV[2])
local last = redis.call('HGET', KEYS[1], mark)
if last and tonumber(last) >= seq then return 0 end
if ARGV[5] == '1' and redis.call('HGET', KEYS[1], 'status') == 'ended' then
  -- a call ends once: a second call.ended (a fleet survivor closed it as gateway_lost and the
  -- pod turned out alive, or a dead pod's journal replayed later) is a duplicate
  redis.call('HSET', KEYS[1], mark, ARGV[2])
  return 0
end
local nh = tonumber(ARGV[8])
local nf = tonumber(ARGV[9])
local h_end = 9 + 2 * nh
redis.call('HSET', KEYS[1], mark, ARGV[2], unpack(ARGV, 10, h_end))
local f_end = h_end + 2 * nf
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', unpack(ARGV, h_end + 1, f_end))
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[4], '*', unpack(ARGV, h_end + 1, f_end))
if ARGV[5] == '1' then
  redis.call('EXPIRE', KEYS[1], ARGV[6])
  redis.call('EXPIRE', KEYS[2], ARGV[6])
else
  for k = 1, 2 do
    if redis.call('TTL', KEYS[k]) == -1 then redis.call('EXPIRE', KEYS[k], ARGV[7]) end
  end
end
return 1
"""

# Server replies that mean "not now" rather than "never": handled like an outage. redis-py turns
# the error code into the exception class and strips it from the text (an OOM raised inside the
# script arrives as OutOfMemoryError "command not allowed when used memory > 'maxmemory'...").
TRANSIENT_ERRORS = (
    OutOfMemoryError,
    ReadOnlyError,
    NoScriptError,
    TryAgainError,
    MasterDownError,
    ClusterDownError,
)
TRANSIENT_PREFIXES = ("OOM", "LOADING", "BUSY", "READONLY", "MASTERDOWN", "TRYAGAIN", "NOSCRIPT")
OUTAGE_ERRORS = (RedisConnectionError, RedisTimeoutError, OSError, TimeoutError)


@dataclass(slots=True)
class BatchResult:
    """What Redis answered for (a prefix of) a batch."""

    written: int = 0
    duplicates: int = 0
    rejected: int = 0


class Outage(Exception):
    """Redis cannot take writes now; ``partial`` counts the replies read before it failed."""

    def __init__(self, reason: str, partial: BatchResult | None = None) -> None:
        super().__init__(reason)
        self.partial = partial or BatchResult()


class RedisSink:
    """One Redis connection writing batches of events (not thread-safe; one writer task)."""

    def __init__(
        self,
        url: str,
        *,
        socket_timeout_s: float,
        connect_timeout_s: float,
        call_maxlen: int,
        global_maxlen: int,
        retention_s: int,
        open_call_ttl_s: int,
    ) -> None:
        self.url = url
        self.socket_timeout_s = socket_timeout_s
        self.connect_timeout_s = connect_timeout_s
        try:
            self._pool = ConnectionPool.from_url(
                url,
                socket_timeout=socket_timeout_s,
                socket_connect_timeout=connect_timeout_s,
                retry=Retry(NoBackoff(), 0),
                health_check_interval=0,
            )
        except ValueError as exc:
            raise ConfigError(f"VOICEGATE_REDIS_URL {url!r} is not a Redis URL: {exc}") from exc
        self._conn: Connection | None = None
        self._call_maxlen_s = str(call_maxlen)
        self._global_maxlen_s = str(global_maxlen)
        self._retention_s_s = str(retention_s)
        self._open_ttl_s_s = str(open_call_ttl_s)
        self._packed_head = b""

    @property
    def is_connected(self) -> bool:
        return self._conn is not None

    async def connect(self) -> None:
        """Connect and load the script; raises Outage when Redis is not there."""
        conn = self._pool.make_connection()  # type: ignore[no-untyped-call]
        try:
            await asyncio.wait_for(
                self._connect_and_load(conn), self.connect_timeout_s + self.socket_timeout_s
            )
        except (RedisError, *OUTAGE_ERRORS) as exc:
            with contextlib.suppress(Exception):
                await conn.disconnect()
            raise Outage(repr(exc)) from exc
        self._conn = conn

    async def _connect_and_load(self, conn: Connection) -> None:
        await conn.connect()  # type: ignore[no-untyped-call]
        await conn.send_command("SCRIPT", "LOAD", WRITE_SCRIPT, check_health=False)
        reply = await conn.read_response()
        sha = reply.decode() if isinstance(reply, bytes) else str(reply)
        # the first three items of every EVALSHA, packed once per connection
        self._packed_head = b"".join(
            b"$%d\r\n%s\r\n" % (len(a), a) for a in (b"EVALSHA", sha.encode(), b"3")
        )

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.disconnect(nowait=True), 1.0)

    async def write(self, batch: list[Record]) -> BatchResult:
        """Send ``batch`` as one pipeline; raises Outage if Redis did not take all of it."""
        conn = self._conn
        if conn is None:
            raise Outage("not connected")
        payload = b"".join([self._pack_record(r) for r in batch])
        replies: list[object] = []
        try:
            await asyncio.wait_for(
                self._round_trip(conn, payload, len(batch), replies),
                self.socket_timeout_s * 2 + 1.0,
            )
        except (RedisError, *OUTAGE_ERRORS) as exc:
            # replies already read are facts: count them; the rest is re-sent (deduped) later
            raise Outage(repr(exc), _tally(batch, replies)) from exc
        return _tally(batch, replies)

    @staticmethod
    async def _round_trip(conn: Connection, payload: bytes, n: int, replies: list[object]) -> None:
        await conn.send_packed_command(payload, check_health=False)
        for _ in range(n):
            try:
                replies.append(await conn.read_response())
            except ResponseError as exc:  # an error reply; the connection is still in step
                replies.append(exc)

    def _pack_record(self, r: Record) -> bytes:
        args = [
            call_key(r.call_id),
            call_events_key(r.call_id),
            GLOBAL_EVENTS_KEY,
            r.writer,
            str(r.seq),
            self._call_maxlen_s,
            self._global_maxlen_s,
            "1" if r.is_end else "0",
            self._retention_s_s,
            self._open_ttl_s_s,
            str(len(r.hash_fields)),
            str(len(r.fields)),
        ]
        for k, v in r.hash_fields.items():
            args.append(k)
            args.append(v)
        for k, v in r.fields.items():
            args.append(k)
            args.append(v)
        return _pack_args([a.encode() for a in args], head=self._packed_head, extra=3)


def _tally(batch: list[Record], replies: list[object]) -> BatchResult:
    """Count the replies; raises Outage (with the counts so far) at a transient error reply."""
    result = BatchResult()
    for r, reply in zip(batch, replies, strict=False):
        if isinstance(reply, ResponseError):
            text = str(reply)
            if isinstance(reply, TRANSIENT_ERRORS) or text.startswith(TRANSIENT_PREFIXES):
                raise Outage(f"{type(reply).__name__}: {text}", result)
            result.rejected += 1
            log.error("redis rejected %s of call %s: %s", r.fields.get("type"), r.call_id, text)
        elif reply == 1:
            result.written += 1
        else:
            result.duplicates += 1
    return result


def _pack_args(args: list[bytes], head: bytes = b"", extra: int = 0) -> bytes:
    """RESP2 array of bulk strings; ``head`` holds ``extra`` already-packed leading items."""
    parts = [b"*%d\r\n" % (len(args) + extra), head]
    for a in args:
        parts.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(parts)
