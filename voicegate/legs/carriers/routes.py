"""``CarrierLegs``: the WebSocket routes ``/{carrier}/media`` of the carriers that are enabled,
their authentication and their Prometheus counters.

Usage (``voicegate.app``, only when ``VOICEGATE_CARRIERS`` names some)::

    carriers = CarrierLegs(["telnyx", "plivo"], public_url=..., token=..., plivo_auth_token=...)
    app.include_router(carriers.router())
    registry.register(carriers.collector())
    carriers.calls, carriers.numbers = parts.calls, parts.numbers     # in the lifespan

Owns: ``CarrierLegs``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import fields
from urllib.parse import urlsplit

from fastapi import APIRouter, WebSocket
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from voicegate.contracts import CallAdmission, PersonaRouter
from voicegate.errors import ConfigError
from voicegate.legs.carriers.control import CarrierControl
from voicegate.legs.carriers.protocols import CARRIERS, CarrierProtocol
from voicegate.legs.carriers.security import check_plivo_signature, check_token
from voicegate.legs.carriers.stream import DEFAULT_SEND_MS, CarrierMediaStream, CarrierStats

__all__ = ["CarrierLegs"]

log = logging.getLogger("voicegate.legs.carriers")


class CarrierLegs:
    """The enabled carriers' media routes. ``token``: the shared secret every carrier's stream
    URL carries as ``?token=`` (Telnyx has no other); ``plivo_auth_token``: Plivo's signature
    of the upgrade is checked with it. A carrier with neither is refused (fail closed)."""

    def __init__(
        self,
        names: Iterable[str],
        *,
        public_url: str,
        token: str = "",
        plivo_auth_token: str = "",
        send_ms: int = DEFAULT_SEND_MS,
        controls: dict[str, CarrierControl] | None = None,
    ) -> None:
        self.controls = dict(controls or {})
        self.protocols: dict[str, CarrierProtocol] = {}
        for name in names:
            protocol = CARRIERS.get(name)
            if protocol is None:
                raise ConfigError(
                    f"VOICEGATE_CARRIERS: unknown carrier {name!r} (have: {sorted(CARRIERS)})"
                )
            self.protocols[name] = protocol
        self._public = urlsplit(public_url)
        self._token = token
        self._plivo_auth_token = plivo_auth_token
        self._send_ms = send_ms
        self.stats = {name: CarrierStats() for name in self.protocols}
        self.calls: CallAdmission | None = None
        self.numbers: PersonaRouter | None = None

    def _ws_url(self, ws: WebSocket) -> str:
        """The URL the carrier called: the public base's host, ws(s), this path and query."""
        scheme = "wss" if self._public.scheme == "https" else "ws"
        query = ws.url.query
        return f"{scheme}://{self._public.netloc}{ws.url.path}" + (f"?{query}" if query else "")

    def auth_problem(self, name: str, ws: WebSocket) -> str | None:
        """None when the upgrade may open a stream of carrier ``name``, else why not."""
        if name == "plivo" and self._plivo_auth_token:
            headers = {k.lower(): v for k, v in ws.headers.items()}
            return check_plivo_signature(self._plivo_auth_token, self._ws_url(ws), headers)
        if self._token:
            return check_token(self._token, ws.query_params.get("token"))
        return f"no credential configured for {name} (VOICEGATE_CARRIER_TOKEN)"

    def router(self) -> APIRouter:
        router = APIRouter()
        for name in self.protocols:
            router.add_api_websocket_route(f"/{name}/media", self._endpoint(name))
        return router

    def _endpoint(self, name: str) -> Callable[[WebSocket], Awaitable[None]]:
        protocol = self.protocols[name]
        stats = self.stats[name]

        async def media(ws: WebSocket) -> None:
            if self.calls is None or self.numbers is None:
                await ws.close(1013, "starting")
                return
            stream = CarrierMediaStream(
                ws,
                protocol,
                calls=self.calls,
                router=self.numbers,
                stats=stats,
                query=dict(ws.query_params),
                send_ms=self._send_ms,
                control=self.controls.get(name),
            )
            await stream.run(self.auth_problem(name, ws))

        media.__name__ = f"{name}_media"
        return media

    async def aclose(self) -> None:
        for control in self.controls.values():
            await control.aclose()

    def collector(self) -> Collector:
        return _StatsCollector(self.stats)


class _StatsCollector(Collector):
    def __init__(self, stats: dict[str, CarrierStats]) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        for f in fields(CarrierStats):
            if f.name == "streams_active":
                gauge = GaugeMetricFamily(
                    "voicegate_carrier_streams_active",
                    "Open carrier media streams.",
                    labels=["carrier"],
                )
                for name, s in self._stats.items():
                    gauge.add_metric([name], s.streams_active)
                yield gauge
                continue
            counter = CounterMetricFamily(
                f"voicegate_carrier_{f.name}",
                f"Carrier leg: {f.name.replace('_', ' ')}.",
                labels=["carrier"],
            )
            for name, s in self._stats.items():
                counter.add_metric([name], getattr(s, f.name))
            yield counter
