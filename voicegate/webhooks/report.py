"""The post-call report: built from what Redis holds of a call (its hash and its event stream).

Usage::

    report = build_report(call_hash, entries)       # entries: the call stream's field dicts
    body = encode_report(report)                    # the exact bytes every attempt sends

The report is built once, from Redis (never from a Call's memory), and stored with its delivery
state so that every retry and a replay send the same bytes. Event types it does not know are
ignored; the caller's transcript (``transcript.caller``) and the recording (``recording.ended``,
and ``recording.uploaded``'s outcome as ``recording.upload``) are read from their stream fields
as written, so they appear as soon as those events are logged (the delivery waits a bounded
time for a recorded call's: see ``delivery``).
Owns: ``build_report``, ``encode_report``, ``idempotency_key``. Pure: no I/O, no asyncio.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["MAX_ITEMS", "REPORT_TYPE", "build_report", "encode_report", "idempotency_key"]

REPORT_TYPE = "call.ended"
REPORT_VERSION = 1
MAX_ITEMS = 2000  # per list (transcript segments, barge-ins, ...): bounds a very long call's report


def idempotency_key(call_id: str) -> str:
    """The report's idempotency key: the same for every attempt and replay of one call's report,
    and the same again if the delivery state is rebuilt (it depends on the call id only)."""
    return "vg_" + hashlib.sha256(f"{REPORT_TYPE}\n{call_id}".encode()).hexdigest()[:32]


def _int(value: str | None) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        try:
            return int(float(value))
        except ValueError:
            return None


def _bool(value: str | None, default: bool) -> bool:
    if value is None:
        return default
    return value == "true"


def _json(value: str | None) -> Any:
    if not value:
        return None
    try:
        return json.loads(value)
    except ValueError:
        return value


def _agent(f: Mapping[str, str]) -> dict[str, Any]:
    return {
        "text": f.get("text", ""),
        "start_ms": _int(f.get("start_ms")),
        "end_ms": _int(f.get("end_ms")),
        "heard": _bool(f.get("is_heard"), True),
        "cut_text": f.get("cut_text", ""),
    }


def _caller(f: Mapping[str, str]) -> dict[str, Any]:
    return {
        "text": f.get("text", ""),
        "start_ms": _int(f.get("start_ms")),
        "end_ms": _int(f.get("end_ms")),
        "words": _json(f.get("words")),
    }


def _bargein(f: Mapping[str, str]) -> dict[str, Any]:
    return {
        "caller_onset_ms": _int(f.get("caller_onset_ms")),
        "agent_stop_ms": _int(f.get("agent_stop_ms")),
        "latency_ms": _int(f.get("latency_ms")),
        "discarded_ms": _int(f.get("discarded_ms")),
        "cut_text": f.get("cut_text", ""),
        "caller_text": f.get("caller_text", ""),  # the caller's interrupting words (caller STT)
    }


def _transfer(f: Mapping[str, str]) -> dict[str, Any]:
    return {
        "t_ms": _int(f.get("t")),
        "result": f.get("result", ""),
        "trigger": f.get("trigger", ""),
        "destination": f.get("destination", ""),
        "to": f.get("to", ""),
        "handoff_id": f.get("handoff_id", ""),
        "detail": f.get("detail", ""),
        "latency_ms": _int(f.get("latency_ms")),
    }


_SKIP_RECORDING = frozenset({"type", "id", "ts", "t", "call_id", "leg"})


def _recording(f: Mapping[str, str]) -> dict[str, Any]:
    """A ``recording.ended`` event's own fields (path, duration, ...), numbers as numbers."""
    out: dict[str, Any] = {}
    for k, v in f.items():
        if k in _SKIP_RECORDING:
            continue
        number = _int(v) if v.lstrip("-").isdigit() else None
        out[k] = number if number is not None else _json(v) if v[:1] in "{[" else v
    return out


def build_report(call: Mapping[str, str], entries: Sequence[Mapping[str, str]]) -> dict[str, Any]:
    """The report of one ended call: ``call`` is its Redis hash, ``entries`` its stream's fields
    in order. Transcripts hold what was logged: the agent's segments (with what the caller did
    not hear), the caller's final segments when caller STT runs (else an empty list)."""
    agent: list[dict[str, Any]] = []
    caller: list[dict[str, Any]] = []
    bargeins: list[dict[str, Any]] = []
    transfers: list[dict[str, Any]] = []
    dtmf: list[str] = []
    ended: Mapping[str, str] = {}
    started: Mapping[str, str] = {}
    recording: dict[str, Any] | None = None
    upload: dict[str, Any] | None = None
    for f in entries:
        kind = f.get("type", "")
        if kind == "transcript.agent":
            agent.append(_agent(f))
        elif kind == "transcript.caller":
            if _bool(f.get("final"), True):
                caller.append(_caller(f))
        elif kind == "bargein":
            bargeins.append(_bargein(f))
        elif kind == "call.transfer":
            transfers.append(_transfer(f))
        elif kind == "dtmf":
            dtmf.append(f.get("digit", ""))
        elif kind == "call.ended":
            ended = f
        elif kind == "call.started":
            started = f
        elif kind == "recording.ended":
            recording = _recording(f)
        elif kind == "recording.uploaded":
            upload = _recording(f)
            upload.pop("path", None)
    if upload is None and call.get("recording_url"):  # the stream trimmed: the hash has it
        upload = {"status": call.get("recording_upload", "uploaded"), "url": call["recording_url"]}
    if upload is not None:
        recording = {**(recording or {"path": call.get("recording_path", "")}), "upload": upload}
    call_id = call.get("call_id") or ended.get("call_id") or started.get("call_id", "")
    return {
        "type": REPORT_TYPE,
        "version": REPORT_VERSION,
        "id": idempotency_key(call_id),
        "call_id": call_id,
        "leg": call.get("leg") or ended.get("leg", ""),
        "leg_call_ref": call.get("leg_call_ref", ""),
        "persona": call.get("persona") or started.get("persona", ""),
        "caller": call.get("from") or started.get("from", ""),
        "called": call.get("to") or started.get("to", ""),
        "started_ts": _int(call.get("started_ts") or started.get("ts")),
        "ended_ts": _int(call.get("ended_ts") or ended.get("ts")),
        "reason": call.get("reason") or ended.get("reason", ""),
        "result": call.get("result") or ended.get("result", ""),
        "detail": call.get("detail") or ended.get("detail", ""),
        "duration_ms": _int(call.get("duration_ms") or ended.get("duration_ms")),
        "dynamics": _json(call.get("dynamics") or ended.get("dynamics")),
        "counters": _json(ended.get("counters")) or {},
        "transcript": {"agent": agent[-MAX_ITEMS:], "caller": caller[-MAX_ITEMS:]},
        "bargeins": bargeins[-MAX_ITEMS:],
        "transfers": transfers[-MAX_ITEMS:],
        "dtmf": "".join(dtmf[-MAX_ITEMS:]),
        "recording": recording,
    }


def encode_report(report: Mapping[str, Any]) -> bytes:
    """The report's body: compact UTF-8 JSON."""
    return json.dumps(report, separators=(",", ":"), ensure_ascii=False).encode()
