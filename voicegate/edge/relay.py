"""The live call API across edge workers: ask the siblings what this worker does not hold.

With ``voicegate serve --workers N`` a call lives in one worker, while the kernel hands each
API connection to any of them. Each worker therefore also serves the app on a private Unix
socket (``worker-K.sock`` in the gateway's own temporary folder, mode 0700, so only this
host's gateway user reaches it). A ``/calls`` request for a call this worker does not hold is
passed on to the siblings' sockets, the caller's ``Authorization`` header with it (each
sibling checks it again) and the ``X-VoiceGate-Relayed`` header, so that a sibling answers
from its own calls only and never passes it on again. The list merges every worker's calls.

Owns: SiblingRelay, RELAYED_HEADER, socket_path. Imports httpx and starlette's responses.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
from starlette.background import BackgroundTask
from starlette.responses import Response, StreamingResponse

__all__ = ["RELAYED_HEADER", "SiblingRelay", "socket_path"]

log = logging.getLogger("voicegate.edge")

RELAYED_HEADER = "x-voicegate-relayed"
RELAY_TIMEOUT_S = 2.0  # a sibling on the same host answers in milliseconds, or is gone
_PASSED_HEADERS = ("authorization", "content-type")
_STREAM_TIMEOUT = httpx.Timeout(RELAY_TIMEOUT_S, read=None)


def socket_path(folder: Path | str, index: int) -> Path:
    """Worker ``index``'s private socket in the gateway's folder."""
    return Path(folder) / f"worker-{index}.sock"


class SiblingRelay:
    """This worker's way to the other workers' private sockets."""

    def __init__(self, folder: Path | str, index: int, workers: int) -> None:
        self.index = index
        self._clients = {
            k: httpx.AsyncClient(
                transport=httpx.AsyncHTTPTransport(uds=str(socket_path(folder, k))),
                base_url="http://worker",
                timeout=RELAY_TIMEOUT_S,
                trust_env=False,
            )
            for k in range(workers)
            if k != index
        }

    @staticmethod
    def is_relayed(headers: Any) -> bool:
        """A request a sibling passed on: answer from this worker's own calls."""
        return headers.get(RELAYED_HEADER) is not None

    def _headers(self, headers: Any) -> dict[str, str]:
        out = {name: headers[name] for name in _PASSED_HEADERS if name in headers}
        out[RELAYED_HEADER] = str(self.index)
        return out

    async def gather(self, path: str, headers: Any) -> list[Any]:
        """Every sibling's JSON answer to ``GET path`` (a sibling that fails is left out, and
        logged: a worker being restarted)."""

        async def one(k: int, client: httpx.AsyncClient) -> Any:
            try:
                answer = await client.get(path, headers=self._headers(headers))
                answer.raise_for_status()
                return answer.json()
            except (httpx.HTTPError, ValueError) as exc:
                log.warning("calls API: worker %d did not answer %s: %s", k, path, exc)
                return None

        answers = await asyncio.gather(*(one(k, c) for k, c in self._clients.items()))
        return [a for a in answers if a is not None]

    async def first(self, method: str, path: str, headers: Any, body: bytes = b"") -> Response:
        """The first sibling's answer that is not 404 (the one holding the call); 404 from
        every sibling gives the last 404, and none reachable gives 503."""
        last: Response | None = None
        for k, client in self._clients.items():
            try:
                answer = await client.request(
                    method, path, headers=self._headers(headers), content=body
                )
            except httpx.HTTPError as exc:
                log.warning("calls API: worker %d did not answer %s %s: %s", k, method, path, exc)
                continue
            relayed = _relayed(answer)
            if answer.status_code != 404:
                return relayed
            last = relayed
        return last or _unavailable()

    async def stream(self, path: str, headers: Any) -> Response:
        """As ``first`` for a streamed answer (server-sent events): passed on as it comes."""
        last: Response | None = None
        for k, client in self._clients.items():
            # no read timeout: a quiet feed sends a comment only every 15 s, and a sibling that
            # goes away closes the socket
            request = client.build_request(
                "GET", path, headers=self._headers(headers), timeout=_STREAM_TIMEOUT
            )
            try:
                answer = await client.send(request, stream=True)
            except httpx.HTTPError as exc:
                log.warning("calls API: worker %d did not answer GET %s: %s", k, path, exc)
                continue
            if answer.status_code == 404:
                await answer.aread()
                last = _relayed(answer)
                await answer.aclose()
                continue
            return StreamingResponse(
                _chunks(answer),
                status_code=answer.status_code,
                media_type=answer.headers.get("content-type"),
                background=BackgroundTask(answer.aclose),
            )
        return last or _unavailable()

    async def aclose(self) -> None:
        for client in self._clients.values():
            with contextlib.suppress(Exception):
                await client.aclose()


async def _chunks(answer: httpx.Response) -> AsyncIterator[bytes]:
    try:
        async for chunk in answer.aiter_raw():
            yield chunk
    except httpx.HTTPError:
        return  # the sibling went away mid-stream: the feed ends


def _relayed(answer: httpx.Response) -> Response:
    return Response(
        answer.content,
        status_code=answer.status_code,
        media_type=answer.headers.get("content-type"),
    )


def _unavailable() -> Response:
    return Response(
        b'{"detail":"the other edge workers did not answer"}',
        status_code=503,
        media_type="application/json",
    )
