"""A real webhook receiver for the tests: an HTTP server on a free 127.0.0.1 port (a thread),
answering each POST as told and recording every attempt (time, headers, body, answer).

Usage::

    with Receiver(fail_first=3) as rx:        # 500 three times, then 200
        ... rx.url ...
        rx.wait_acked(1, timeout_s=20)
        rx.attempts, rx.acked
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Hit:
    """One POST the receiver got."""

    at: float  # time.time() on arrival
    path: str
    headers: dict[str, str]
    body: bytes
    status: int

    @property
    def key(self) -> str:
        return self.headers.get("idempotency-key", "")


class Receiver:
    """Answers ``fail_status`` to the first ``fail_first`` POSTs (every POST while
    ``is_failing``), then 200; ``acked`` lists the POSTs it answered 2xx."""

    def __init__(self, fail_first: int = 0, fail_status: int = 500) -> None:
        self.fail_first = fail_first
        self.fail_status = fail_status
        self.is_failing = False
        self.hits: list[Hit] = []
        self._lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length)
                with owner._lock:
                    fail = owner.is_failing or owner.fail_first > 0
                    if owner.fail_first > 0:
                        owner.fail_first -= 1
                    status = owner.fail_status if fail else 200
                    owner.hits.append(
                        Hit(
                            time.time(),
                            self.path,
                            {k.lower(): v for k, v in self.headers.items()},
                            body,
                            status,
                        )
                    )
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok" if status == 200 else b"no")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    @property
    def attempts(self) -> list[Hit]:
        with self._lock:
            return list(self.hits)

    @property
    def acked(self) -> list[Hit]:
        return [h for h in self.attempts if 200 <= h.status < 300]

    def wait(self, condition: Any, timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while not condition():
            assert time.monotonic() < deadline, f"{what}: {self.attempts}"
            time.sleep(0.02)

    def wait_attempts(self, n: int, timeout_s: float = 20.0) -> None:
        self.wait(lambda: len(self.attempts) >= n, timeout_s, f"fewer than {n} attempts")

    def wait_acked(self, n: int, timeout_s: float = 20.0) -> None:
        self.wait(lambda: len(self.acked) >= n, timeout_s, f"fewer than {n} acknowledged")

    def __enter__(self) -> Receiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


async def eventually(condition: Any, timeout_s: float, what: str) -> None:
    """Poll ``condition()`` on the event loop until true; fail the test after ``timeout_s``."""
    import asyncio

    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.02)
