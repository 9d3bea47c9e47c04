"""A Twilio stand-in: places a call on the gateway the way Twilio's cloud does, byte for byte.

It POSTs the signed voice webhook, reads the TwiML, opens the signed Media Streams WebSocket,
sends ``connected`` and ``start`` (with the TwiML's ``<Parameter>``s), streams caller audio as
20 ms mu-law ``media`` messages at real time on a monotonic clock, sends ``dtmf`` and ``stop``,
and POSTs signed stream status callbacks. On the way back it keeps a simulated playout clock:
agent ``media`` is queued and "played" in real time, a ``mark`` is echoed only once the audio
queued before it would have played, and ``clear`` drops the queue and returns every pending mark
at once. It records what the caller would have heard and how far the gateway ran ahead.

After the stream, ``follow`` does what Twilio documents for ``<Connect action>`` and ``<Dial>``
(https://www.twilio.com/docs/voice/twiml/connect, .../dial): once the socket is closed it POSTs
the signed action URL with the standard parameters (``CallSid``, ``AccountSid``, ``From``,
``To``, ``CallStatus``, ...), runs the TwiML answer verb by verb (``Say``, ``Pause``,
``Hangup``, ``Reject``, ``Redirect``, ``Dial``), and for ``<Dial>`` plays the called party's
outcome given to it (``completed``, ``busy``, ``no-answer``, ``failed``, ``canceled``): on
``completed`` it requests a ``<Number url>`` whisper as the person's side would, then POSTs the
``<Dial action>`` with ``DialCallStatus``, ``DialCallSid`` (and ``DialCallDuration`` when
connected) and runs that answer; without an action it goes on with the document. Everything
it ran is in a ``FlowReport``.

Used by ``voicegate demo``, the Twilio leg's tests and ``bench/load_bench.py``; Twilio's cloud
cannot run here, so this is the only peer those can talk to.

Owns: ``TwilioSimulator``, ``SimulatedStream``. Must not import the gateway app or engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
import xml.etree.ElementTree as ET
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx
import numpy as np
import numpy.typing as npt
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from voicegate.audio import mulaw_decode, mulaw_encode
from voicegate.errors import TwilioError, TwilioProtocolError
from voicegate.legs.twilio.protocol import (
    Clear,
    Connected,
    Dtmf,
    Mark,
    Media,
    OutboundMark,
    OutboundMedia,
    Start,
    Stop,
    parse_command,
)
from voicegate.legs.twilio.security import SIGNATURE_HEADER, SignatureChecker

__all__ = [
    "DIAL_OUTCOMES",
    "DialRecord",
    "FlowReport",
    "PlacedCall",
    "SimulatedStream",
    "StreamReport",
    "TwilioSimulator",
]

RATE_HZ = 8000
FRAME_MS = 20
FRAME_SAMPLES = RATE_HZ * FRAME_MS // 1000
SAMPLES_PER_MS = RATE_HZ // 1000
MULAW_SILENCE = 0xFF
DIAL_OUTCOMES = ("completed", "busy", "no-answer", "failed", "canceled")
MAX_TWIML_DOCUMENTS = 10  # a call that keeps redirecting is a loop: Twilio gives up too
_SIP_RESPONSE = {"completed": 200, "busy": 486, "no-answer": 480, "failed": 404, "canceled": 487}


def _sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


@dataclass(frozen=True, slots=True)
class PlacedCall:
    """The voice webhook's answer: a stream to open, or a rejection."""

    status_code: int
    twiml: str
    call_sid: str
    from_: str
    to: str
    stream_url: str = ""
    status_callback: str = ""
    parameters: dict[str, str] = field(default_factory=dict)
    reject_reason: str = ""
    connect_action: str = ""  # <Connect action>: requested once the stream ends

    @property
    def is_connect(self) -> bool:
        return bool(self.stream_url)


@dataclass(slots=True)
class DialRecord:
    """One ``<Dial>`` Twilio ran: its attributes, nouns, the simulated outcome."""

    action: str
    timeout_s: int
    answer_on_bridge: bool
    numbers: list[tuple[str, str]] = field(default_factory=list)  # (number, whisper url)
    sips: list[str] = field(default_factory=list)
    outcome: str = ""
    whisper_said: list[str] = field(default_factory=list)  # said to the person who answered


@dataclass(slots=True)
class FlowReport:
    """What Twilio ran after the voice webhook or the stream: verbs in order, and requests."""

    verbs: list[str] = field(default_factory=list)  # tags in execution order
    said: list[str] = field(default_factory=list)  # <Say> texts the caller heard
    dials: list[DialRecord] = field(default_factory=list)
    requests: list[tuple[str, int]] = field(default_factory=list)  # (public URL, status code)
    errors: list[str] = field(default_factory=list)
    is_hung_up: bool = False  # a <Hangup/> (or the end of the document) ended the call
    reject_reason: str = ""


@dataclass(slots=True)
class StreamReport:
    """What the simulated Twilio side saw of the gateway's output on one stream."""

    media_messages: int = 0
    media_bytes: int = 0
    marks_received: int = 0
    marks_echoed: int = 0
    clears: int = 0
    cleared_ms: float = 0.0  # audio dropped from the playout queue by clear
    max_ahead_ms: float = 0.0  # the longest the playout queue ever got (at a media arrival)
    ahead_samples_ms: list[float] = field(default_factory=list)  # queue length at each arrival
    protocol_errors: list[str] = field(default_factory=list)
    close_code: int | None = None
    close_reason: str = ""
    wrong_stream_sid: int = 0
    # arrival time (monotonic) of each media message and its sample offset on the playout timeline
    arrivals: list[tuple[float, int]] = field(default_factory=list)


class SimulatedStream:
    """One open Media Stream. Start with ``TwilioSimulator.open_stream``; close with ``stop()``."""

    def __init__(
        self, ws: ClientConnection, call: PlacedCall, stream_sid: str, account_sid: str
    ) -> None:
        self._ws = ws
        self.call = call
        self.stream_sid = stream_sid
        self.account_sid = account_sid
        self.report = StreamReport()
        self._seq = 0
        self._chunk = 0
        self._t0 = time.monotonic()
        self._queue_end = self._t0  # monotonic time at which queued agent audio runs out
        self._heard = bytearray()  # agent mu-law on the playout timeline (what the caller hears)
        self._pending_marks: deque[tuple[float, str]] = deque()  # (due time, name)
        self._mark_wakeup = asyncio.Event()
        self._closed = asyncio.Event()
        self._recv_task = asyncio.create_task(self._receive(), name=f"sim-recv-{stream_sid[-6:]}")
        self._mark_task = asyncio.create_task(
            self._echo_marks(), name=f"sim-marks-{stream_sid[-6:]}"
        )
        self._send_lock = asyncio.Lock()
        # network conditions on the way back: each mark echo is delayed by this much, or lost
        self.mark_delay_s = 0.0
        self.is_echoing_marks = True

    # -- caller side ------------------------------------------------------------------------

    @property
    def t0(self) -> float:
        """Monotonic time the stream started (media timestamps count from here)."""
        return self._t0

    @property
    def is_closed(self) -> bool:
        return self._closed.is_set()

    async def wait_closed(self, timeout_s: float | None = None) -> None:
        """Wait until the gateway (or we) closed the socket."""
        await asyncio.wait_for(self._closed.wait(), timeout_s)

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    async def send_text(self, text: str) -> None:
        """Send one raw text frame (tests use it for malformed messages)."""
        async with self._send_lock:
            await self._ws.send(text)

    async def send_start(self) -> None:
        """Send ``connected`` + ``start`` (for a stream opened with ``send_start=False``)."""
        await self._send_start()

    async def _send_start(self) -> None:
        await self.send_text(Connected().to_wire())
        start = Start(
            stream_sid=self.stream_sid,
            account_sid=self.account_sid,
            call_sid=self.call.call_sid,
            tracks=("inbound",),
            custom_parameters=dict(self.call.parameters),
            sequence_number=self._next_seq(),
        )
        await self.send_text(start.to_wire())
        self._t0 = time.monotonic()
        self._queue_end = self._t0

    async def send_mulaw(self, payload: bytes) -> float:
        """Send one ``media`` message now; returns its monotonic send time."""
        self._chunk += 1
        media = Media(
            stream_sid=self.stream_sid,
            payload=payload,
            track="inbound",
            chunk=self._chunk,
            timestamp_ms=int((time.monotonic() - self._t0) * 1000),
            sequence_number=self._next_seq(),
        )
        text = media.to_wire()
        async with self._send_lock:
            sent_at = time.monotonic()
            await self._ws.send(text)
        return sent_at

    async def play(
        self,
        pcm: npt.NDArray[np.int16],
        *,
        realtime: bool = True,
        on_frame: Callable[[int, float], None] | None = None,
    ) -> int:
        """Stream 8 kHz PCM as 20 ms frames at real time; returns how many frames were sent.

        Frame k leaves at ``start + k * 20 ms`` on the monotonic clock (no drift); stops early if
        the gateway closes the stream. ``on_frame(k, sent_at)`` runs after each send.
        """
        mulaw = mulaw_encode(np.asarray(pcm, dtype=np.int16))
        start = time.monotonic()
        frames = 0
        for k, offset in enumerate(range(0, len(mulaw), FRAME_SAMPLES)):
            if self.is_closed:
                break
            if realtime:
                delay = start + k * FRAME_MS / 1000 - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            try:
                sent_at = await self.send_mulaw(mulaw[offset : offset + FRAME_SAMPLES])
            except ConnectionClosed:
                break
            frames += 1
            if on_frame is not None:
                on_frame(k, sent_at)
        return frames

    async def play_silence(self, duration_ms: int) -> int:
        """Stream ``duration_ms`` of caller silence at real time."""
        return await self.play(np.zeros(duration_ms * SAMPLES_PER_MS, dtype=np.int16))

    async def dtmf(self, digit: str) -> None:
        """The caller presses a key."""
        await self.send_text(
            Dtmf(self.stream_sid, digit, sequence_number=self._next_seq()).to_wire()
        )

    async def stop(self) -> None:
        """The caller hangs up: ``stop``, then Twilio closes the socket."""
        if not self.is_closed:
            with contextlib.suppress(ConnectionClosed):
                stop = Stop(
                    self.stream_sid,
                    self.account_sid,
                    self.call.call_sid,
                    sequence_number=self._next_seq(),
                )
                await self.send_text(stop.to_wire())
        await self.close()

    async def drop(self) -> None:
        """The socket dies without a ``stop`` (network loss)."""
        self._ws.transport.abort()
        await self.close()

    async def close(self) -> None:
        """Close the socket and end this stream's tasks."""
        with contextlib.suppress(ConnectionClosed):
            await self._ws.close()
        self._closed.set()
        for task in (self._recv_task, self._mark_task):
            task.cancel()
        for task in (self._recv_task, self._mark_task):
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # -- Twilio's playout side --------------------------------------------------------------

    def heard_pcm(self) -> npt.NDArray[np.int16]:
        """What the caller heard of the agent (8 kHz), on the stream's playout timeline."""
        return mulaw_decode(bytes(self._heard))

    def queued_ms(self, now: float | None = None) -> float:
        """Agent audio in the simulated playout queue now."""
        now = time.monotonic() if now is None else now
        return max(0.0, self._queue_end - now) * 1000

    def _on_media(self, payload: bytes) -> None:
        now = time.monotonic()
        start = max(now, self._queue_end)
        duration_s = len(payload) / RATE_HZ
        self._queue_end = start + duration_s
        ahead_ms = (self._queue_end - now) * 1000
        report = self.report
        report.media_messages += 1
        report.media_bytes += len(payload)
        report.ahead_samples_ms.append(ahead_ms)
        if ahead_ms > report.max_ahead_ms:
            report.max_ahead_ms = ahead_ms
        offset = int(round((start - self._t0) * RATE_HZ))
        report.arrivals.append((now, offset))
        heard = self._heard
        if len(heard) < offset:
            heard.extend(bytes([MULAW_SILENCE]) * (offset - len(heard)))
        heard[offset : offset + len(payload)] = payload

    def _on_mark(self, name: str) -> None:
        self.report.marks_received += 1
        if not self.is_echoing_marks:
            return
        self._pending_marks.append((self._queue_end + self.mark_delay_s, name))
        self._mark_wakeup.set()

    def _on_clear(self) -> None:
        now = time.monotonic()
        report = self.report
        report.clears += 1
        cut_s = max(0.0, self._queue_end - now)
        report.cleared_ms += cut_s * 1000
        self._queue_end = now
        keep = max(0, int(round((now - self._t0) * RATE_HZ)))
        del self._heard[keep:]
        # every pending mark comes back at once
        for index in range(len(self._pending_marks)):
            due, name = self._pending_marks[index]
            self._pending_marks[index] = (0.0, name)
        self._mark_wakeup.set()

    async def _echo_marks(self) -> None:
        pending = self._pending_marks
        while True:
            if not pending:
                self._mark_wakeup.clear()
                await self._mark_wakeup.wait()
                continue
            due, name = pending[0]
            delay = due - time.monotonic()
            if delay > 0:
                self._mark_wakeup.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._mark_wakeup.wait(), delay)
                continue
            pending.popleft()
            echo = Mark(self.stream_sid, name, sequence_number=self._next_seq())
            try:
                await self.send_text(echo.to_wire())
            except ConnectionClosed:
                return
            self.report.marks_echoed += 1

    async def _receive(self) -> None:
        report = self.report
        try:
            async for message in self._ws:
                if isinstance(message, bytes):
                    report.protocol_errors.append("binary frame from the gateway")
                    continue
                try:
                    command = parse_command(message)
                except TwilioProtocolError as exc:
                    report.protocol_errors.append(str(exc))
                    continue
                if command.stream_sid != self.stream_sid:
                    report.wrong_stream_sid += 1
                    continue
                if isinstance(command, OutboundMedia):
                    self._on_media(command.payload)
                elif isinstance(command, OutboundMark):
                    self._on_mark(command.name)
                elif isinstance(command, Clear):
                    self._on_clear()
        except ConnectionClosed:
            pass
        finally:
            if self._ws.close_code is not None:
                report.close_code = self._ws.close_code
                report.close_reason = self._ws.close_reason or ""
            self._closed.set()


class TwilioSimulator:
    """Twilio's cloud for one gateway: signs with ``auth_token`` against ``public_url``.

    ``base_url`` is where the gateway really listens (``http://127.0.0.1:PORT``); URLs in the
    TwiML are public ones and are mapped back onto ``base_url`` before connecting.
    """

    def __init__(self, base_url: str, public_url: str, auth_token: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.public_url = public_url.rstrip("/")
        self.account_sid = "AC" + "0" * 30 + "01"
        self._signer = SignatureChecker(auth_token, public_url)
        self._auth_token = auth_token
        self._http = httpx.AsyncClient(base_url=self.base_url, timeout=10.0, trust_env=False)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> TwilioSimulator:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def _local_path(self, public: str) -> str:
        parts = urlsplit(public)
        prefix = urlsplit(self.public_url).path.rstrip("/")
        path = parts.path
        if prefix and path.startswith(prefix):
            path = path[len(prefix) :]
        return path

    def voice_params(self, call_sid: str, from_: str, to: str) -> dict[str, str]:
        """The form Twilio POSTs to the voice URL of an inbound call."""
        return {
            "AccountSid": self.account_sid,
            "ApiVersion": "2010-04-01",
            "CallSid": call_sid,
            "CallStatus": "ringing",
            "Called": to,
            "Caller": from_,
            "Direction": "inbound",
            "From": from_,
            "To": to,
        }

    async def post_signed(
        self, path: str, params: dict[str, str], *, signature: str | None = "", query: str = ""
    ) -> httpx.Response:
        """POST a form as Twilio does; ``signature=""`` signs it, ``None`` sends none."""
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        if signature == "":
            signature = self._signer.sign_webhook(path, params, query)
        if signature is not None:
            headers[SIGNATURE_HEADER] = signature
        target = f"{path}?{query}" if query else path
        return await self._http.post(target, data=params, headers=headers)

    async def post_url(
        self, url: str, params: dict[str, str], *, signature: str | None = ""
    ) -> httpx.Response:
        """POST to a public URL from a TwiML document (signed over that URL with its query)."""
        parts = urlsplit(url)
        base = urlsplit(self.public_url)
        if (parts.scheme, parts.netloc) != (base.scheme, base.netloc):
            raise TwilioError(f"TwiML URL {url!r} is not under the public URL {self.public_url}")
        return await self.post_signed(
            self._local_path(url), params, signature=signature, query=parts.query
        )

    def call_params(self, call: PlacedCall, status: str = "in-progress") -> dict[str, str]:
        """Twilio's standard request parameters of ``call`` (action and Redirect requests)."""
        return {**self.voice_params(call.call_sid, call.from_, call.to), "CallStatus": status}

    async def follow(
        self,
        call: PlacedCall,
        *,
        dial_outcome: str = "completed",
        dial_duration_s: int = 7,
        twiml: str | None = None,
    ) -> FlowReport:
        """What Twilio does next: POST ``call``'s ``<Connect action>`` (the stream must be
        closed) and run the answer; or, with ``twiml``, run that document (a voice webhook's
        answer that is not a stream). ``<Dial>``s get ``dial_outcome``."""
        if dial_outcome not in DIAL_OUTCOMES:
            raise ValueError(f"dial outcome must be one of {DIAL_OUTCOMES}, got {dial_outcome!r}")
        report = FlowReport()
        document = twiml
        if document is None:
            if not call.connect_action:
                report.is_hung_up = True  # nothing follows </Connect>: the call ends
                return report
            document = await self._request(report, call.connect_action, self.call_params(call))
        for _ in range(MAX_TWIML_DOCUMENTS):
            if document is None:
                return report
            document = await self._run(report, call, document, dial_outcome, dial_duration_s)
        report.errors.append(f"more than {MAX_TWIML_DOCUMENTS} TwiML documents: a loop")
        return report

    async def _request(self, report: FlowReport, url: str, params: dict[str, str]) -> str | None:
        response = await self.post_url(url, params)
        report.requests.append((url, response.status_code))
        if response.status_code != 200:
            # Twilio would log an error and play its "application error" message
            report.errors.append(f"{url} answered {response.status_code}")
            report.is_hung_up = True
            return None
        return response.text

    async def _run(
        self, report: FlowReport, call: PlacedCall, twiml: str, outcome: str, duration_s: int
    ) -> str | None:
        """Run one document; returns the next document to run, None when the call is over."""
        try:
            root = ET.fromstring(twiml)
        except ET.ParseError as exc:
            report.errors.append(f"invalid TwiML: {exc}")
            report.is_hung_up = True
            return None
        if root.tag != "Response":
            report.errors.append(f"TwiML root is <{root.tag}>, not <Response>")
        for verb in root:
            report.verbs.append(verb.tag)
            if verb.tag == "Say":
                report.said.append((verb.text or "").strip())
            elif verb.tag == "Pause":
                continue
            elif verb.tag == "Hangup":
                report.is_hung_up = True
                return None
            elif verb.tag == "Reject":
                report.reject_reason = verb.attrib.get("reason", "rejected")
                report.is_hung_up = True
                return None
            elif verb.tag == "Redirect":
                return await self._request(
                    report, (verb.text or "").strip(), self.call_params(call)
                )
            elif verb.tag == "Dial":
                record = self._dial_record(verb)
                record.outcome = outcome
                report.dials.append(record)
                if outcome == "completed":
                    await self._whisper(report, call, record)
                if record.action:
                    params = self.call_params(call)
                    params.update(self._dial_params(record, outcome, duration_s))
                    return await self._request(report, record.action, params)
            else:
                report.errors.append(f"the simulator does not run <{verb.tag}>")
        report.is_hung_up = True  # the end of the document ends the call
        return None

    @staticmethod
    def _dial_record(verb: ET.Element) -> DialRecord:
        record = DialRecord(
            action=verb.attrib.get("action", ""),
            timeout_s=int(verb.attrib.get("timeout", "30")),
            answer_on_bridge=verb.attrib.get("answerOnBridge", "false") == "true",
        )
        for noun in verb:
            if noun.tag == "Number":
                record.numbers.append(((noun.text or "").strip(), noun.attrib.get("url", "")))
            elif noun.tag == "Sip":
                record.sips.append((noun.text or "").strip())
        if not verb.text or not verb.text.strip():
            return record
        record.numbers.append((verb.text.strip(), ""))  # <Dial>+1555...</Dial>
        return record

    def _dial_params(self, record: DialRecord, outcome: str, duration_s: int) -> dict[str, str]:
        params = {"DialCallStatus": outcome, "DialCallSid": _sid("CA")}
        if outcome == "completed":
            params["DialCallDuration"] = str(duration_s)
            params["DialBridged"] = "true"
        if record.sips:
            params["DialSipCallId"] = secrets.token_hex(8) + "@sip.twilio.test"
            params["DialSipResponseCode"] = str(_SIP_RESPONSE[outcome])
        return params

    async def _whisper(self, report: FlowReport, call: PlacedCall, record: DialRecord) -> None:
        """The person answered: run each ``<Number url>`` on their side (the first one)."""
        for number, url in record.numbers[:1]:
            if not url:
                continue
            params = {
                "AccountSid": self.account_sid,
                "ApiVersion": "2010-04-01",
                "CallSid": _sid("CA"),
                "ParentCallSid": call.call_sid,
                "CallStatus": "in-progress",
                "Direction": "outbound-dial",
                "From": call.from_,
                "To": number,
            }
            twiml = await self._request(report, url, params)
            report.is_hung_up = False  # a failed whisper is the person's side, not the caller's
            if twiml is None:
                continue
            with contextlib.suppress(ET.ParseError):
                record.whisper_said.extend(
                    (say.text or "").strip() for say in ET.fromstring(twiml).iter("Say")
                )

    async def place_call(
        self,
        from_: str = "+15550100",
        to: str = "+15550199",
        *,
        call_sid: str | None = None,
        query: str = "",
    ) -> PlacedCall:
        """POST the signed voice webhook (``query``: on the voice URL) and read the TwiML."""
        call_sid = call_sid or _sid("CA")
        params = self.voice_params(call_sid, from_, to)
        response = await self.post_signed("/twilio/voice", params, query=query)
        twiml = response.text
        placed = PlacedCall(response.status_code, twiml, call_sid, from_, to)
        if response.status_code != 200:
            return placed
        root = ET.fromstring(twiml)
        connect = root.find("./Connect")
        stream = root.find("./Connect/Stream")
        if connect is not None and stream is not None:
            params = {p.attrib["name"]: p.attrib["value"] for p in stream.findall("Parameter")}
            return PlacedCall(
                200,
                twiml,
                call_sid,
                from_,
                to,
                stream_url=stream.attrib["url"],
                status_callback=stream.attrib.get("statusCallback", ""),
                parameters=params,
                connect_action=connect.attrib.get("action", ""),
            )
        reject = root.find("./Reject")
        if reject is not None:
            return PlacedCall(
                200, twiml, call_sid, from_, to, reject_reason=reject.attrib.get("reason", "")
            )
        if root.find("./Dial") is not None:
            return placed  # e.g. the overflow: run it with ``follow(placed, twiml=placed.twiml)``
        raise TwilioError(
            "voice webhook answered TwiML with neither Connect/Stream, Dial nor Reject: "
            f"{twiml[:200]}"
        )

    async def open_stream(
        self,
        call: PlacedCall,
        *,
        signature: str | None = "",
        send_start: bool = True,
    ) -> SimulatedStream:
        """Open the signed WebSocket, send ``connected`` + ``start``; ``signature=None`` omits it."""
        if not call.is_connect:
            raise TwilioError(f"call {call.call_sid} has no stream to open: {call.twiml[:200]}")
        path = self._local_path(call.stream_url)
        headers: dict[str, str] = {}
        if signature == "":
            signature = self._signer.sign_upgrade(path)
        if signature is not None:
            headers[SIGNATURE_HEADER] = signature
        ws_base = "ws" + self.base_url[len("http") :]
        ws = await connect(
            ws_base + path,
            additional_headers=headers,
            compression=None,
            proxy=None,
            max_queue=None,
            ping_interval=None,
            user_agent_header="Twilio.TmeWs/1.0",
        )
        stream = SimulatedStream(ws, call, _sid("MZ"), self.account_sid)
        if send_start:
            try:
                await stream._send_start()
            except ConnectionClosed:
                await stream.wait_closed(5)  # refused at once: the report has the close code
                return stream
            if call.status_callback:
                await self.stream_status(call, stream.stream_sid, "stream-started")
        return stream

    async def stream_status(
        self, call: PlacedCall, stream_sid: str, event: str, error: str = ""
    ) -> int:
        """POST a signed stream status callback (``stream-started``/``-stopped``/``-error``)."""
        params = {
            "AccountSid": self.account_sid,
            "CallSid": call.call_sid,
            "StreamSid": stream_sid,
            "StreamName": stream_sid,
            "StreamEvent": event,
            "Timestamp": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
        }
        if error:
            params["StreamError"] = error
        response = await self.post_signed(self._local_path(call.status_callback), params)
        return response.status_code
