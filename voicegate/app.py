"""FastAPI wiring: builds the gateway's parts from Settings and serves the HTTP interface.

Only this module and ``cli`` wire concrete classes together. Parts register readiness checks
with ``Readiness`` so ``/readyz`` reports every reason the gateway is not ready.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from voicegate import __version__
from voicegate.config import Settings

__all__ = ["Readiness", "create_app"]

log = logging.getLogger("voicegate.app")


@dataclass
class Readiness:
    """Named checks; each returns None when fine or a short reason when not ready."""

    checks: dict[str, Callable[[], str | None]] = field(default_factory=dict)
    # informational: shown by /readyz but never make the gateway unready (e.g. a broken persona
    # edit while its last good version still serves)
    details: dict[str, Callable[[], object]] = field(default_factory=dict)

    def add(self, name: str, check: Callable[[], str | None]) -> None:
        self.checks[name] = check

    def add_detail(self, name: str, detail: Callable[[], object]) -> None:
        self.details[name] = detail

    def detail(self) -> dict[str, object]:
        out: dict[str, object] = {}
        for name, fn in self.details.items():
            try:
                value = fn()
            except Exception as exc:  # a broken detail must not take /readyz down
                value = f"detail failed: {exc!r}"
            if value:
                out[name] = value
        return out

    def problems(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for name, check in self.checks.items():
            try:
                reason = check()
            except Exception as exc:  # a broken check must not take /readyz down
                reason = f"check failed: {exc!r}"
            if reason:
                out[name] = reason
        return out


def create_app(settings: Settings | None = None, registry: CollectorRegistry | None = None) -> FastAPI:
    """Build the app; parts start in the lifespan so that tests can run it over real sockets."""
    settings = settings or Settings()
    registry = registry or CollectorRegistry()
    readiness = Readiness()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        readiness.add("starting", lambda: "starting")
        readiness.checks.pop("starting", None)
        yield

    app = FastAPI(title="VoiceGate", version=__version__, lifespan=lifespan)
    app.state.settings = settings
    app.state.registry = registry
    app.state.readiness = readiness

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "version": __version__}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        problems = readiness.problems()
        details = readiness.detail()
        if problems:
            return JSONResponse(
                {"ready": False, "problems": problems, "details": details}, status_code=503
            )
        return JSONResponse({"ready": True, "problems": {}, "details": details})

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return app
