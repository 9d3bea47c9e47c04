"""``voicegate demo``: one whole phone call on this machine, through the real Twilio path.

Starts Redis (a local ``redis-server`` from PATH on a free port, or ``VOICEGATE_REDIS_URL``),
serves the gateway with the ``tiny`` engine (random weights, CPU) on a free port, and plays
Twilio's part with the simulator: the signed voice webhook, the signed Media Streams socket,
the bundled caller WAV as 20 ms mu-law frames at real time, then the key 0, which the bank
teller's call flow answers with a transfer to the branch: the stream closes, and the simulated
Twilio follows ``<Connect action>`` to the ``<Dial>`` and a person who answers. It prints the
call's events as stored in Redis and writes what the caller heard of the agent to a WAV.

Owns: ``run_demo``, ``ServerThread`` (uvicorn in a background thread; tests and the load
benchmark use it too) and ``LocalRedis``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import numpy as np
import numpy.typing as npt

__all__ = ["DEMO_AUTH_TOKEN", "DEMO_PUBLIC_URL", "LocalRedis", "ServerThread", "run_demo"]

DEMO_AUTH_TOKEN = "demo-auth-token-not-a-secret"
DEMO_PUBLIC_URL = "https://voicegate-demo.invalid"  # what Twilio would reach; mapped to localhost
DEMO_CALLED = "+14155550100"  # bank_teller in telephony/numbers.yaml
DEMO_CALLER = "+15005550006"
REPO_ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerThread:
    """The gateway app served by uvicorn on a background thread (its own event loop).

    Usage::

        server = ServerThread(create_app(settings)); server.start()   # returns once serving
        ... http://127.0.0.1:{server.port} ...
        server.stop()                                                   # runs the lifespan shutdown
    """

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0) -> None:
        import uvicorn

        from voicegate.app import SERVER_OPTIONS

        self._config = uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level="warning",
            lifespan="on",
            timeout_graceful_shutdown=5,
            **SERVER_OPTIONS,
        )
        self._server = uvicorn.Server(self._config)
        self._thread = threading.Thread(
            target=self._server.run, name="voicegate-server", daemon=True
        )
        self.port = port

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 120.0) -> None:
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError("the gateway failed to start (see the log above)")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the gateway did not start within {timeout_s:.0f} s")
            time.sleep(0.02)
        sockets = self._server.servers[0].sockets
        self.port = int(sockets[0].getsockname()[1])

    def stop(self, timeout_s: float = 30.0) -> None:
        self._server.should_exit = True
        self._thread.join(timeout_s)

    def __enter__(self) -> ServerThread:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class LocalRedis:
    """A throwaway ``redis-server`` on a free port (no persistence), stopped on ``close()``."""

    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise FileNotFoundError(
                "redis-server is not on PATH: install it (scripts/install.sh, or apt-get install "
                "redis-server) or set VOICEGATE_REDIS_URL to a Redis you run"
            )
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.05)

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()


def read_wav_8k(path: Path) -> npt.NDArray[np.int16]:
    """A mono 16-bit WAV as 8 kHz int16 (resampled with the gateway's own resampler)."""
    from voicegate.audio import StreamingResampler, float_to_int16, read_wav_int16

    pcm, rate = read_wav_int16(path)
    if rate == 8000:
        return pcm
    resampler = StreamingResampler(rate, 8000)
    return float_to_int16(resampler.process(np.concatenate([pcm, np.zeros(rate // 10, np.int16)])))


def write_wav(path: Path, pcm: npt.NDArray[np.int16], rate_hz: int) -> None:
    from voicegate.audio import write_wav as write_mono_wav

    path.parent.mkdir(parents=True, exist_ok=True)
    write_mono_wav(path, np.asarray(pcm, dtype=np.int16), rate_hz)


@contextlib.contextmanager
def _redis(workdir: Path) -> Iterator[str]:
    url = os.environ.get("VOICEGATE_REDIS_URL")
    if url:
        print(f"redis: using VOICEGATE_REDIS_URL={url}")
        yield url
        return
    local = LocalRedis(workdir)
    print(f"redis: started a local redis-server on {local.url}")
    try:
        yield local.url
    finally:
        local.close()


async def _call(
    base_url: str, caller: npt.NDArray[np.int16], max_caller_s: float
) -> tuple[str, Any]:
    from voicegate.legs.twilio.sim import TwilioSimulator

    async with TwilioSimulator(base_url, DEMO_PUBLIC_URL, DEMO_AUTH_TOKEN) as twilio:
        placed = await twilio.place_call(DEMO_CALLER, DEMO_CALLED)
        if not placed.is_connect:
            raise RuntimeError(f"the gateway did not connect the call: {placed.twiml}")
        print(f"twilio: POST /twilio/voice (signed) -> persona {placed.parameters.get('persona')}")
        stream = await twilio.open_stream(placed)
        print("twilio: media stream open (signed upgrade, call token accepted)")
        caller = caller[: int(max_caller_s * 8000)]
        await stream.play(caller)
        # the bank teller's call flow: 0 hands the caller to the branch (telephony README)
        await stream.dtmf("0")
        await stream.play_silence(3000)  # the agent's last words play out, then Twilio moves on
        print(
            f"twilio: played {len(caller) / 8000:.1f} s of caller audio, pressed 0; "
            f"received {stream.report.media_messages} media messages, most queued "
            f"{stream.report.max_ahead_ms:.0f} ms"
        )
        if stream.is_closed:
            flow = await twilio.follow(placed, dial_outcome="completed")
            for dial in flow.dials:
                numbers = ", ".join(n for n, _ in dial.numbers) or ", ".join(dial.sips)
                print(f"twilio: <Connect action> -> <Dial> {numbers}: the person answered")
            print(f"twilio: TwiML run after the stream: {' '.join(flow.verbs) or '(none)'}")
        else:
            print("twilio: the stream is still open (no transfer); hanging up")
            await stream.stop()
        await twilio.stream_status(placed, stream.stream_sid, "stream-stopped")
        return placed.call_sid, stream


async def _events(redis_url: str, call_id: str, timeout_s: float = 10.0) -> list[dict[str, str]]:
    from redis.asyncio import Redis

    from voicegate.events import call_events_key

    client = Redis.from_url(redis_url, decode_responses=True)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            entries = cast(
                "list[tuple[str, dict[str, str]]]", await client.xrange(call_events_key(call_id))
            )
            fields = [dict(f) for _, f in entries]
            # the call's end, and the stream's stopped status: the last thing the simulated
            # Twilio reported, written after the dial's outcome (the event writer keeps order)
            is_ended = any(f.get("type") == "call.ended" for f in fields)
            is_stopped = any(f.get("status") == "stream-stopped" for f in fields)
            if (is_ended and is_stopped) or time.monotonic() > deadline:
                return fields
            await asyncio.sleep(0.1)
    finally:
        await client.aclose()


def _print_event(fields: dict[str, str]) -> None:
    kind = fields.get("type", "?")
    skip = {"type", "id", "ts", "t", "call_id", "leg"}
    rest = " ".join(f"{k}={v}" for k, v in fields.items() if k not in skip)
    print(f"  t={fields.get('t', '?'):>6} ms  {kind:<17} {rest}")


def run_demo(
    out_wav: Path,
    caller_wav: Path | None = None,
    max_caller_s: float = 10.0,
    *,
    caller_words: bool = False,
) -> int:
    """Run the demo; returns a process exit code. ``caller_words``: the engine also runs the
    tiny caller STT (random weights, a release-layout folder made for the run)."""
    from voicegate.app import create_app
    from voicegate.config import Settings

    started = time.monotonic()
    if caller_wav is None:
        from voicegate.audio import load_caller

        caller = load_caller(8000)  # the bundled recording (espeak-ng speech)
    else:
        caller = read_wav_8k(caller_wav)
    with (
        tempfile.TemporaryDirectory(prefix="voicegate-demo-") as tmp,
        _redis(Path(tmp)) as redis_url,
    ):
        settings = Settings(
            engine="tiny",
            host="127.0.0.1",
            port=free_port(),
            public_url=DEMO_PUBLIC_URL,
            twilio_auth_token=DEMO_AUTH_TOKEN,
            redis_url=redis_url,
            personas_dir=Path(os.environ.get("VOICEGATE_PERSONAS_DIR") or REPO_ROOT / "personas"),
            numbers_file=Path(
                os.environ.get("VOICEGATE_NUMBERS_FILE") or REPO_ROOT / "telephony" / "numbers.yaml"
            ),
            events_journal_dir=Path(tmp) / "journal",
            sip_enabled=False,
            max_calls=4,
        )
        if caller_words:
            from voicegate.engine.synthetic import make_asr_dir

            settings.asr_model_dir = make_asr_dir(Path(tmp) / "asr").root
            print("gateway: with the tiny caller STT (random weights): transcript.caller events")
        print("gateway: starting with the tiny engine (random weights, CPU) ...")
        server = ServerThread(create_app(settings), port=settings.port)
        server.start()
        try:
            print(f"gateway: serving on {server.base_url} (public URL {DEMO_PUBLIC_URL})")
            call_sid, stream = asyncio.run(_call(server.base_url, caller, max_caller_s))
            events = asyncio.run(_events(redis_url, call_sid))
        finally:
            server.stop()
    print(f"\nevents of call {call_sid} in Redis (voicegate:call:{call_sid}:events):")
    for fields in events:
        _print_event(fields)
    heard = stream.heard_pcm()
    write_wav(out_wav, heard, 8000)
    print(
        f"\nwrote what the caller heard of the agent ({len(heard) / 8000:.1f} s, 8 kHz) to {out_wav}"
    )
    print(
        "\nNOTE: the tiny engine has RANDOM weights: the agent's audio is noise-like babble and its\n"
        "text is gibberish. This demo shows the telephony path, not the model. To talk to the real\n"
        "PersonaPlex-7B on a GPU machine: download the release files (model weights, Mimi, tokenizer,\n"
        "voices) into a folder and run\n"
        "    VOICEGATE_ENGINE=personaplex VOICEGATE_MODEL_DIR=/path/to/personaplex \\\n"
        "    VOICEGATE_PUBLIC_URL=https://your.host VOICEGATE_TWILIO_AUTH_TOKEN=... voicegate serve\n"
        "and point your Twilio number's voice webhook at https://your.host/twilio/voice (POST)."
    )
    print(f"demo finished in {time.monotonic() - started:.1f} s")
    return 0 if any(f.get("type") == "call.ended" for f in events) else 1
