"""Local fan-out of events to live consumers (the web page): bounded, lossy, never back-pressure.

Usage::

    async with event_log.subscribe(call_id="c1") as sub:
        async for event in sub:
            ...

A subscriber whose queue is full loses the new event (``sub.dropped`` counts it); the emitter
never waits for a subscriber.
Owns: Subscription and the fan-out set. Must not import redis.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from types import TracebackType

from voicegate.events.schema import Event

__all__ = ["Subscription"]

_CLOSED = object()


class Subscription:
    """A bounded queue of events for one live consumer, optionally for one call only."""

    def __init__(self, hub: FanOut, call_id: str | None, maxsize: int) -> None:
        if maxsize < 1:
            raise ValueError(f"subscription maxsize must be >= 1, got {maxsize}")
        self.call_id = call_id
        self.maxsize = maxsize
        self.dropped = 0
        self._hub = hub
        # one extra slot so the close marker always fits
        self._queue: asyncio.Queue[object] = asyncio.Queue(maxsize + 1)
        self._is_closed = False

    def _offer(self, event: Event) -> None:
        if self._queue.qsize() >= self.maxsize:
            self.dropped += 1
            self._hub.dropped += 1
            return
        self._queue.put_nowait(event)

    def close(self) -> None:
        """Stop receiving; iteration ends after the events already queued."""
        if self._is_closed:
            return
        self._is_closed = True
        self._hub.remove(self)
        self._queue.put_nowait(_CLOSED)

    async def get(self) -> Event | None:
        """The next event, or None once the subscription (or the EventLog) is closed."""
        item = await self._queue.get()
        if item is _CLOSED:
            self._queue.put_nowait(_CLOSED)  # later get() calls end too
            return None
        assert isinstance(item, Event)
        return item

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Event]:
        while (event := await self.get()) is not None:
            yield event

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class FanOut:
    """The set of live subscriptions; ``publish`` runs on the event loop thread."""

    def __init__(self) -> None:
        self._subs: list[Subscription] = []
        self.dropped = 0

    def subscribe(self, call_id: str | None, maxsize: int) -> Subscription:
        sub = Subscription(self, call_id, maxsize)
        self._subs.append(sub)
        return sub

    def remove(self, sub: Subscription) -> None:
        if sub in self._subs:
            self._subs.remove(sub)

    def publish(self, event: Event) -> None:
        for sub in self._subs:
            if sub.call_id is None or sub.call_id == event.call_id:
                sub._offer(event)

    def close_all(self) -> None:
        for sub in list(self._subs):
            sub.close()

    def __len__(self) -> int:
        return len(self._subs)
