"""Headless Debian chromium driven over the DevTools protocol (a WebSocket, no extra packages).

Usage::

    async with Chromium(url, fake_mic_wav=wav, workdir=tmp) as page:
        await page.wait_for("window.vg && window.vg.state === 'idle'")
        value = await page.evaluate("1 + 1")                 # awaits promises, returns JSON values

Flags from shared/reference/telephony.md: a fake microphone playing a WAV once, no permission
prompts, loopback ICE allowed and raw (not mDNS) host candidates; plus everything that would
make the browser reach the network on its own turned off.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import shutil
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import pytest
import websockets

CHROMIUM = "/usr/bin/chromium"


class PageError(AssertionError):
    """JavaScript threw, or a wait timed out (with the page's console in the message)."""


def chromium_path() -> str:
    path = shutil.which("chromium") or (CHROMIUM if Path(CHROMIUM).exists() else None)
    if path is None:
        pytest.fail("chromium is not installed: run scripts/install.sh (apt package chromium)")
    return path


class Chromium:
    """One headless chromium with one page at ``url``."""

    def __init__(self, url: str, *, fake_mic_wav: Path, workdir: Path) -> None:
        self.url = url
        self.fake_mic_wav = fake_mic_wav.resolve()
        self.workdir = workdir
        self.console: list[str] = []
        self._proc: subprocess.Popen[bytes] | None = None
        self._ws: Any = None
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._reader: asyncio.Task[None] | None = None
        self._log: Any = None

    async def start(self, timeout_s: float = 15.0) -> None:
        profile = self.workdir / "profile"
        profile.mkdir(parents=True, exist_ok=True)
        port_file = profile / "DevToolsActivePort"
        port_file.unlink(missing_ok=True)  # a previous run's port
        args = [
            chromium_path(),
            "--headless=new",
            "--no-sandbox",
            f"--user-data-dir={profile}",
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",
            "--use-fake-ui-for-media-stream",
            "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={self.fake_mic_wav}%noloop",
            "--autoplay-policy=no-user-gesture-required",
            "--allow-loopback-in-peer-connection",
            "--disable-features=WebRtcHideLocalIpsWithMdns",
            "--disable-gpu",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-default-apps",
            "--disable-extensions",
            "--metrics-recording-only",
            "--password-store=basic",
            "about:blank",
        ]
        self._log = (self.workdir / "chromium.log").open("wb")
        self._proc = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while not port_file.exists() or not port_file.read_text().strip():
            if self._proc.poll() is not None:
                raise RuntimeError(
                    f"chromium exited: {(self.workdir / 'chromium.log').read_text()}"
                )
            if time.monotonic() > deadline:
                raise TimeoutError("chromium did not open its DevTools port")
            await asyncio.sleep(0.05)
        port = int(port_file.read_text().split()[0])
        async with httpx.AsyncClient(timeout=5, trust_env=False) as http:
            targets = (await http.get(f"http://127.0.0.1:{port}/json/list")).json()
        page = next(t for t in targets if t.get("type") == "page")
        self._ws = await websockets.connect(
            page["webSocketDebuggerUrl"], max_size=1 << 24, ping_interval=None
        )
        self._reader = asyncio.get_running_loop().create_task(self._read())
        await self.send("Runtime.enable")
        await self.send("Page.enable")
        await self.navigate(self.url)

    async def navigate(self, url: str) -> None:
        await self.send("Page.navigate", url=url)
        await self.wait_for("document.readyState === 'complete'")

    async def _read(self) -> None:
        async for raw in self._ws:
            msg = json.loads(raw)
            if "id" in msg:
                fut = self._pending.pop(msg["id"], None)
                if fut is not None and not fut.done():
                    fut.set_result(msg)
            elif msg.get("method") == "Runtime.consoleAPICalled":
                args = msg["params"].get("args", [])
                text = " ".join(str(a.get("value", a.get("description", ""))) for a in args)
                self.console.append(f"{msg['params'].get('type')}: {text}")
            elif msg.get("method") == "Runtime.exceptionThrown":
                details = msg["params"]["exceptionDetails"]
                desc = details.get("exception", {}).get("description") or details.get("text")
                self.console.append(f"exception: {desc}")

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        msg_id = next(self._ids)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[msg_id] = fut
        await self._ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
        reply = await asyncio.wait_for(fut, 20)
        if "error" in reply:
            raise PageError(f"{method}: {reply['error']}")
        result: dict[str, Any] = reply.get("result", {})
        return result

    async def evaluate(self, expression: str) -> Any:
        """The JSON value of ``expression`` (promises awaited); PageError if it throws."""
        result = await self.send(
            "Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True
        )
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            desc = details.get("exception", {}).get("description") or details.get("text")
            raise PageError(f"{expression!r} threw: {desc}\nconsole: {self.console}")
        return result["result"].get("value")

    async def wait_for(self, expression: str, timeout_s: float = 10.0) -> Any:
        """Poll ``expression`` until it is truthy; returns its value."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                value = await self.evaluate(expression)
            except PageError:
                value = None
            if value:
                return value
            if time.monotonic() > deadline:
                raise PageError(f"timed out waiting for {expression!r}; console: {self.console}")
            await asyncio.sleep(0.05)

    async def close(self) -> None:
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            self._reader.cancel()
            try:
                await self._reader
            except (asyncio.CancelledError, Exception):
                pass
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                await asyncio.to_thread(self._proc.wait, 10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                await asyncio.to_thread(self._proc.wait, 5)
        if self._log is not None:
            self._log.close()

    async def __aenter__(self) -> Chromium:
        try:
            await self.start()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
