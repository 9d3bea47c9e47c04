"""The capacity registry of a fleet of gateways, in Redis: who is alive, where, with how many free
slots; atomic placement of a new call; the calls of a gateway that died.

Keys (one hash tag, ``{fleet}``, so that a Redis Cluster keeps them in one slot and the Lua
scripts may touch them together):

* ``voicegate:{fleet}:pods`` set of pod ids (the index; an id whose hash expired is a lost pod).
* ``voicegate:{fleet}:pod:<id>`` hash ``url sip slots active draining ts``, with a TTL renewed
  by every heartbeat: a killed pod's hash is gone ``ttl_s`` after its last beat.
* ``voicegate:{fleet}:pod:<id>:resv`` sorted set of reservations (call id -> expiry ms): a slot
  placement took and no media connection claimed yet. Expired members are dropped by the next
  placement; a heartbeat that lists the call as active claims (removes) it.
* ``voicegate:{fleet}:pod:<id>:calls`` hash call id -> leg of the pod's active calls (rewritten
  by each heartbeat), read by a survivor when the pod is lost.
* ``voicegate:{fleet}:grant:<token>`` JSON of a call token issued for another pod (``GETDEL``).

free slots of a pod = ``slots - active - live reservations``; a draining pod is never chosen.
Placement (``place``): this pod when it has a free slot, else the pod with the most; one Lua
script, so two webhooks on two pods cannot take the same last slot.

Owns: ``FleetRegistry``, ``Placement``, ``LostCall``. Must not import legs, calls or the engine:
what it reports (slots, active calls) comes from callables that ``app`` wires in.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from redis.asyncio import BlockingConnectionPool, Redis
from redis.exceptions import RedisError

from voicegate.errors import ConfigError

__all__ = [
    "FLEET_PREFIX",
    "FleetRegistry",
    "LostCall",
    "LostPod",
    "PodState",
    "Placement",
    "pod_key",
]

log = logging.getLogger("voicegate.fleet")

FLEET_PREFIX = "voicegate:{fleet}:"
PODS_KEY = FLEET_PREFIX + "pods"
CALLS_RETENTION_MS = 24 * 3600 * 1000  # a lost pod's calls list, if no survivor ever reads it
REDIS_TIMEOUT_S = 1.0  # a placement waits this long for Redis, then the pod decides alone
MAX_RELEASED = 10_000  # released call ids held for the next beat (bounded during an outage)
_PLACEMENT_ERRORS = (RedisError, OSError, TimeoutError, ConnectionError)


def pod_key(pod_id: str, part: str = "") -> str:
    """``voicegate:{fleet}:pod:<id>`` (``part``: ``resv`` or ``calls``)."""
    return f"{FLEET_PREFIX}pod:{pod_id}" + (f":{part}" if part else "")


def grant_key(token: str) -> str:
    return f"{FLEET_PREFIX}grant:{token}"


# KEYS: pods index. ARGV: self id, call id (the reservation), reservation ms.
# Returns {} when no pod has a free slot, else {pod id, url, free slots left on it}.
PLACE_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local prefix = string.sub(KEYS[1], 1, -5)
local best, best_free, best_url = nil, 0, nil
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local h = redis.call('HMGET', prefix .. 'pod:' .. id, 'slots', 'active', 'draining', 'url')
  if h[1] and h[3] ~= '1' then
    local resv = prefix .. 'pod:' .. id .. ':resv'
    redis.call('ZREMRANGEBYSCORE', resv, '-inf', now)
    local free = tonumber(h[1]) - tonumber(h[2]) - redis.call('ZCARD', resv)
    if free > 0 and id == ARGV[1] then
      best, best_free, best_url = id, free + 1e9, h[4]
    elseif free > best_free then
      best, best_free, best_url = id, free, h[4]
    end
  end
end
if not best then return {} end
local resv = prefix .. 'pod:' .. best .. ':resv'
redis.call('ZADD', resv, now + tonumber(ARGV[3]), ARGV[2])
redis.call('PEXPIRE', resv, tonumber(ARGV[3]) * 4)
if best_free > 1e8 then best_free = best_free - 1e9 end
return {best, best_url, tostring(best_free - 1)}
"""

# KEYS: pods index, pod hash, its reservations, its calls. ARGV: id, ttl ms, url, sip, slots,
# draining (0/1), calls retention ms, n, then n call id, leg pairs (the pod's active calls),
# then the ids of calls that ended here since the last beat (their reservations are released).
HEARTBEAT_SCRIPT = """
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[4])
local n = tonumber(ARGV[8])
for i = 9, 8 + 2 * n, 2 do
  redis.call('HSET', KEYS[4], ARGV[i], ARGV[i + 1])
  redis.call('ZREM', KEYS[3], ARGV[i])
end
for i = 9 + 2 * n, #ARGV do redis.call('ZREM', KEYS[3], ARGV[i]) end
if n > 0 then redis.call('PEXPIRE', KEYS[4], ARGV[7]) end
local t = redis.call('TIME')
redis.call('HSET', KEYS[2], 'url', ARGV[3], 'sip', ARGV[4], 'slots', ARGV[5],
  'active', n, 'draining', ARGV[6], 'ts', t[1])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return n
"""

# KEYS: pods index. ARGV: the caller's own id (never reaped: it is alive, it is asking). Takes
# every other pod whose hash expired out of the index (only one caller gets a given pod) and
# returns {id, n, call id, leg, ...} per lost pod, its calls list deleted.
REAP_SCRIPT = """
local prefix = string.sub(KEYS[1], 1, -5)
local out = {}
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local pod = prefix .. 'pod:' .. id
  if id ~= ARGV[1] and redis.call('EXISTS', pod) == 0 then
    redis.call('SREM', KEYS[1], id)
    local calls = redis.call('HGETALL', pod .. ':calls')
    redis.call('DEL', pod .. ':calls', pod .. ':resv')
    table.insert(out, id)
    table.insert(out, #calls / 2)
    for _, v in ipairs(calls) do table.insert(out, v) end
  end
end
return out
"""

# KEYS: the pod's calls list. A pod starting under an id whose calls list is still there (the
# same StatefulSet pod restarted within the TTL) takes the list: none of those calls are its own.
PREVIOUS_SCRIPT = """
local calls = redis.call('HGETALL', KEYS[1])
redis.call('DEL', KEYS[1])
return calls
"""

# KEYS: pods index, pod hash, reservations, calls. ARGV: id. The pod leaves for good.
LEAVE_SCRIPT = """
redis.call('SREM', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4])
return 1
"""


@dataclass(frozen=True, slots=True)
class Placement:
    """Where a new call goes: ``pod_id`` at ``url`` (its public https base)."""

    pod_id: str
    url: str
    free_after: int
    is_self: bool


@dataclass(frozen=True, slots=True)
class LostCall:
    """An active call of a pod that disappeared."""

    call_id: str
    leg: str


@dataclass(frozen=True, slots=True)
class LostPod:
    pod_id: str
    calls: tuple[LostCall, ...]


@dataclass(frozen=True, slots=True)
class PodState:
    """What one heartbeat publishes."""

    slots: int  # most simultaneous calls now (0 while admission is held)
    is_draining: bool
    calls: Sequence[tuple[str, str]]  # (call id, leg) of the active calls


class FleetRegistry:
    """This pod's entry in the fleet registry: heartbeat, placement, grants, lost pods.

    Usage: ``await start()`` (first beat, then a beat every ``heartbeat_s``), ``place()`` per
    new call, ``begin_drain()`` on SIGTERM, ``await leave()`` once its calls ended, ``aclose()``.
    ``state`` is called on the event loop for every beat; ``on_lost`` gets each lost pod this
    pod took over (at most one survivor gets a given pod).
    """

    def __init__(
        self,
        redis_url: str,
        *,
        pod_id: str,
        url: str,
        sip: str,
        state: Callable[[], PodState],
        on_lost: Callable[[LostPod], Awaitable[None]] | None = None,
        heartbeat_s: float = 1.0,
        ttl_s: float = 3.0,
        reservation_s: float = 5.0,
    ) -> None:
        if not pod_id or ":" in pod_id or "{" in pod_id or "}" in pod_id:
            raise ConfigError(f"fleet: pod id must be non-empty without ':{{}}', got {pod_id!r}")
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"fleet: pod URL must be http(s)://..., got {url!r}")
        if not 0 < heartbeat_s < ttl_s:
            raise ConfigError(
                f"fleet: heartbeat ({heartbeat_s} s) must be shorter than the TTL ({ttl_s} s)"
            )
        if reservation_s <= 0:
            raise ConfigError(f"fleet: reservation time must be > 0, got {reservation_s}")
        self.pod_id = pod_id
        self.url = url.rstrip("/")
        self.sip = sip
        self.heartbeat_s = heartbeat_s
        self.ttl_s = ttl_s
        self.reservation_s = reservation_s
        self._state = state
        self._on_lost = on_lost
        # one connection: commands reach Redis in the order they were issued, so a heartbeat's
        # snapshot of the active calls is never applied after a later one
        self._pool = BlockingConnectionPool.from_url(
            redis_url, max_connections=1, timeout=REDIS_TIMEOUT_S, decode_responses=True,
            socket_timeout=REDIS_TIMEOUT_S, socket_connect_timeout=REDIS_TIMEOUT_S,
        )  # fmt: skip
        self._redis = Redis(connection_pool=self._pool, decode_responses=True)
        self._place = self._redis.register_script(PLACE_SCRIPT)
        self._beat = self._redis.register_script(HEARTBEAT_SCRIPT)
        self._reap = self._redis.register_script(REAP_SCRIPT)
        self._leave = self._redis.register_script(LEAVE_SCRIPT)
        self._previous = self._redis.register_script(PREVIOUS_SCRIPT)
        self._task: asyncio.Task[None] | None = None
        self._poke = asyncio.Event()
        self._is_draining = False
        self._has_left = False
        self._released: list[str] = []
        self.beats = 0
        self.beat_failures = 0
        self.placements_local = 0
        self.placements_remote = 0
        self.placements_none = 0
        self.placement_failures = 0
        self.lost_pods_taken = 0

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Publish the first heartbeat, then keep beating (a Redis outage is logged and retried:
        meanwhile the pod is not placeable by others and decides its own calls alone)."""
        try:
            await self._close_previous()
            await self.heartbeat()
        except _PLACEMENT_ERRORS as exc:
            self.beat_failures += 1
            log.warning("fleet: first heartbeat of pod %s failed: %r", self.pod_id, exc)
        self._task = asyncio.get_running_loop().create_task(self._run(), name="fleet-heartbeat")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._redis.aclose()
        await self._pool.disconnect()

    def begin_drain(self) -> None:
        """No new call is placed here from now on (published at once, then by every beat)."""
        self._is_draining = True
        self.poke()

    def poke(self) -> None:
        """Beat now (a call started or ended, or the pod began draining)."""
        self._poke.set()

    async def leave(self) -> None:
        """Remove this pod's entry, reservations and calls list (its calls are over)."""
        self._has_left = True
        task, self._task = self._task, None
        if task is not None:
            # let the current beat finish (cancelling a command mid-flight would spoil the one
            # connection), then the loop sees _has_left and ends
            self.poke()
            try:
                await asyncio.wait_for(asyncio.shield(task), REDIS_TIMEOUT_S * 3)
            except TimeoutError:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        try:
            await self._leave(keys=self._keys(), args=[self.pod_id])
        except _PLACEMENT_ERRORS as exc:
            log.warning("fleet: pod %s could not leave the registry: %r", self.pod_id, exc)

    def _keys(self) -> list[str]:
        pod = self.pod_id
        return [PODS_KEY, pod_key(pod), pod_key(pod, "resv"), pod_key(pod, "calls")]

    async def _run(self) -> None:
        # no reaping until this pod has beaten for a whole TTL: after a Redis outage (or at
        # start) every other live pod's entry may have lapsed, and each needs one heartbeat
        # period to re-register before a missing entry can mean a dead pod
        healthy_since: float | None = None
        loop = asyncio.get_running_loop()
        while not self._has_left:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._poke.wait(), self.heartbeat_s)
            self._poke.clear()
            if self._has_left:
                return
            try:
                await self.heartbeat()
                if healthy_since is None:
                    healthy_since = loop.time()
                if loop.time() - healthy_since >= self.ttl_s + self.heartbeat_s:
                    await self.reap()
            except _PLACEMENT_ERRORS as exc:
                healthy_since = None
                self.beat_failures += 1
                if self.beat_failures == 1 or self.beat_failures % 60 == 0:
                    log.warning("fleet: heartbeat of pod %s failed: %r", self.pod_id, exc)

    async def heartbeat(self) -> int:
        """Publish this pod's slots, draining flag and active calls; renew its TTL."""
        if self._has_left:
            return 0
        state = self._state()
        args: list[str | int] = [
            self.pod_id,
            int(self.ttl_s * 1000),
            self.url,
            self.sip,
            state.slots,
            1 if (self._is_draining or state.is_draining) else 0,
            CALLS_RETENTION_MS,
            len(state.calls),
        ]
        for call_id, leg in state.calls:
            args += [call_id, leg]
        released, self._released = self._released, []
        args += released
        try:
            n = int(await self._beat(keys=self._keys(), args=args))
        except BaseException:
            self._released = released + self._released
            raise
        self.beats += 1
        return n

    def release(self, call_id: str) -> None:
        """``call_id``'s media came and went here (or was refused): drop its reservation at the
        next beat, even when no beat saw the call active."""
        if call_id and len(self._released) < MAX_RELEASED:
            self._released.append(call_id)

    async def _close_previous(self) -> None:
        """Calls listed under this id by a previous process (restarted before its TTL ran out):
        they died with it, so they go to ``on_lost`` like a lost pod's."""
        flat = await self._previous(keys=[pod_key(self.pod_id, "calls")])
        if not flat:
            return
        calls = tuple(LostCall(str(flat[k]), str(flat[k + 1])) for k in range(0, len(flat), 2))
        log.warning(
            "fleet: pod %s restarted; %d calls of its previous process to close",
            self.pod_id,
            len(calls),
        )
        if self._on_lost is not None:
            await self._on_lost(LostPod(self.pod_id, calls))

    async def reap(self) -> list[LostPod]:
        """Take over every pod whose entry expired: its calls go to ``on_lost``."""
        reply = await self._reap(keys=[PODS_KEY], args=[self.pod_id])
        lost: list[LostPod] = []
        i = 0
        while i < len(reply):
            pod_id, n = str(reply[i]), int(reply[i + 1])
            flat = reply[i + 2 : i + 2 + 2 * n]
            calls = tuple(LostCall(str(flat[k]), str(flat[k + 1])) for k in range(0, 2 * n, 2))
            lost.append(LostPod(pod_id, calls))
            i += 2 + 2 * n
        for pod in lost:
            self.lost_pods_taken += 1
            log.warning(
                "fleet: pod %s is gone (no heartbeat for %.1f s); %d of its calls to close",
                pod.pod_id,
                self.ttl_s,
                len(pod.calls),
            )
            if self._on_lost is not None:
                try:
                    await self._on_lost(pod)
                except Exception:
                    log.exception("fleet: closing the calls of pod %s failed", pod.pod_id)
        return lost

    # --- placement ---------------------------------------------------------------------------

    async def place(self, call_id: str) -> Placement | None:
        """Reserve a slot for ``call_id``: here when free, else on the pod with the most free.

        None: no pod has a free slot. Raises ``RedisError``/``OSError`` when Redis cannot answer
        (the caller then decides with local admission alone).
        """
        if self._is_draining:
            reply = await self._place(keys=[PODS_KEY], args=["", call_id, self._resv_ms()])
        else:
            reply = await self._place(keys=[PODS_KEY], args=[self.pod_id, call_id, self._resv_ms()])
        if not reply:
            self.placements_none += 1
            return None
        pod_id, url, free = str(reply[0]), str(reply[1]), int(reply[2])
        is_self = pod_id == self.pod_id
        if is_self:
            self.placements_local += 1
        else:
            self.placements_remote += 1
        return Placement(pod_id, url, free, is_self)

    def _resv_ms(self) -> int:
        return int(self.reservation_s * 1000)

    async def put_grant(self, token: str, pod_id: str, grant: dict[str, str]) -> None:
        """Store a call token issued for ``pod_id`` (expires with the reservation)."""
        body = json.dumps({**grant, "pod": pod_id}, separators=(",", ":"))
        await self._redis.set(grant_key(token), body, px=self._resv_ms())

    async def take_grant(self, token: str) -> dict[str, str] | None:
        """The grant of ``token`` when it was issued for this pod (used up); None otherwise.

        A grant issued for another pod is left in place for that pod.
        """
        if not token or len(token) > 128:
            return None
        key = grant_key(token)
        raw = await self._redis.get(key)
        if raw is None:
            return None
        try:
            grant = json.loads(raw)
        except ValueError:
            return None
        if not isinstance(grant, dict) or grant.get("pod") != self.pod_id:
            log.warning(
                "fleet: a call token issued for pod %s was presented to pod %s: refused",
                grant.get("pod") if isinstance(grant, dict) else "?",
                self.pod_id,
            )
            return None
        if not await self._redis.delete(key):
            return None  # another stream redeemed it first
        return {str(k): str(v) for k, v in grant.items()}

    async def pods(self) -> dict[str, dict[str, str]]:
        """Every live pod's hash (operations and tests)."""
        out: dict[str, dict[str, str]] = {}
        for pod_id in sorted(await self._redis.smembers(PODS_KEY)):
            fields = await self._redis.hgetall(pod_key(str(pod_id)))
            if fields:
                out[str(pod_id)] = {str(k): str(v) for k, v in fields.items()}
        return out

    async def call_record(self, key: str) -> dict[str, str]:
        """A call's metadata hash (``voicegate:call:<id>``), to see whether it has ended."""
        fields = await self._redis.hgetall(key)
        return {str(k): str(v) for k, v in fields.items()}

    def stats(self) -> dict[str, int]:
        return {
            "beats": self.beats,
            "beat_failures": self.beat_failures,
            "placements_local": self.placements_local,
            "placements_remote": self.placements_remote,
            "placements_none": self.placements_none,
            "placement_failures": self.placement_failures,
            "lost_pods_taken": self.lost_pods_taken,
        }
