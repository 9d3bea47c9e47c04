"""Shared pytest fixtures for the whole suite (owned by the events area; additive edits welcome).

Redis (a real ``redis-server`` from the Debian package, started by the tests themselves):

* ``redis_server`` (session): a ``RedisServer`` on a free 127.0.0.1 port, started once for the
  session with ``--save "" --appendonly no`` in a temporary folder, stopped at the end. Shared
  by every test: use unique key names (e.g. a fresh call_id per test) rather than FLUSHALL.
* ``redis_url`` (session): ``redis_server.url``, e.g. ``redis://127.0.0.1:40123/0``.
* ``redis_factory`` (function): ``redis_factory(is_durable=False) -> RedisServer``, a private
  server for a test that kills or restarts it (outage tests); each is stopped when the test ends.
  ``is_durable=True`` turns on an append-only file fsynced before every reply, so whatever
  Redis acknowledged survives ``kill()`` + ``start()``.

``RedisServer`` has ``.port``, ``.url``, ``.start()`` (blocks until it answers PING),
``.kill()`` (SIGKILL: an abrupt outage), ``.stop()`` (SIGTERM), ``.restart()`` (same port; data
is kept only by a durable server) and ``.is_running``.

``free_port()`` returns a TCP port that was free a moment ago (bind to port 0, then close).
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REDIS_START_TIMEOUT_S = 10.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free when this returned."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """A ``redis-server`` child process on a fixed port, which can be killed and restarted."""

    def __init__(self, workdir: Path, port: int | None = None, *, is_durable: bool = False) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail(
                "redis-server is not on PATH: run scripts/install.sh (apt package redis-server)"
            )
        self.binary = binary
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        # durable: an append-only file fsynced before each reply, so data survives kill/restart
        self.is_durable = is_durable
        self._proc: subprocess.Popen[bytes] | None = None
        self._log = self.workdir / "redis.log"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        """Start it (on the same port as before) and wait until it answers PING."""
        if self.is_running:
            return
        cmd = [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "yes" if self.is_durable else "no",
            "--appendfsync", "always",
            "--dir", str(self.workdir),
            "--daemonize", "no",
        ]  # fmt: skip
        with open(self._log, "ab") as log:
            self._proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + REDIS_START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                break
            if self._ping():
                return
            time.sleep(0.02)
        self.kill()
        tail = self._log.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"redis-server on port {self.port} did not start:\n{tail}")

    def _ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL: connections drop at once, data is gone (an abrupt outage)."""
        self._end(signal.SIGKILL)

    def stop(self) -> None:
        """SIGTERM and wait (SIGKILL after 5 s)."""
        self._end(signal.SIGTERM)

    def restart(self) -> None:
        """Kill, then start on the same port (data kept only when durable)."""
        self.kill()
        self.start()

    def _end(self, sig: signal.Signals) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(5.0)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_url(redis_server: RedisServer) -> str:
    return redis_server.url


@pytest.fixture
def redis_factory(tmp_path: Path) -> Iterator[Callable[..., RedisServer]]:
    servers: list[RedisServer] = []

    def make(*, is_durable: bool = False) -> RedisServer:
        server = RedisServer(tmp_path / f"redis{len(servers)}", is_durable=is_durable)
        server.start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()
