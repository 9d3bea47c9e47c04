"""Per-call context: the values of a persona's prompt variables for one call, and the
operator's call-start webhook that may set them, switch the persona or refuse the call.

Values, later sources overriding earlier ones: the persona's defaults, the numbers file's entry
for the called number (``variables:``), the call's own data (Twilio ``<Parameter>`` custom
parameters and WebRTC offer ``variables`` by variable name; SIP ``X-`` headers that the persona
names with ``sip_header``; ``caller_number``/``called_number`` from the leg), then the webhook's
answer. Every value is cleaned (``personas.template.clean_value``) and cut to its variable's
``max_chars`` when the prompt is rendered, whatever its source.

The webhook (``VOICEGATE_CALL_START_WEBHOOK_URL``): one POST per call before it joins the engine,
signed like the warm handoff (``VoiceGate-Signature``, ``calls.handoff.sign``), bounded by
``VOICEGATE_CALL_START_WEBHOOK_TIMEOUT_S``. Request body::

    {"type": "voicegate.call_start", "call_id": "...", "leg": "sip", "caller": "+1555...",
     "called": "+1415...", "persona": "bank_teller", "variables": {"caller_name": "..."}}

Answer (2xx, JSON object, every key optional)::

    {"action": "continue" | "refuse" | "overflow", "persona": "other_persona",
     "variables": {"caller_name": "Alice", "account_tier": "gold"}}

A timeout, a transport error, a non-2xx status or a malformed answer: the call goes on with
the values it has (``outcome`` says which), never refused because of the webhook.

Owns: ``CallStartWebhook``, ``WebhookAnswer``, ``call_values``. Imports httpx lazily; runs on
the event loop (``ask`` is a coroutine and never blocks it).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from voicegate.calls.handoff import SIGNATURE_HEADER, sign
from voicegate.contracts import CallInfo
from voicegate.http_out import post_bounded

__all__ = [
    "ACTIONS",
    "CallStartWebhook",
    "WebhookAnswer",
    "call_values",
]

log = logging.getLogger("voicegate.calls.context")

ACTIONS = ("continue", "refuse", "overflow")
DEFAULT_TIMEOUT_S = 0.5
MAX_ANSWER_BYTES = 16_384
MAX_VARIABLES = 32
MAX_RAW_VALUE_CHARS = 2000  # before cleaning; each variable's max_chars cuts further


@dataclass(frozen=True, slots=True)
class WebhookAnswer:
    """What the webhook decided; ``outcome`` is ``ok``, ``timeout``, ``error`` or ``off``."""

    outcome: str
    action: str = "continue"
    persona: str = ""
    variables: dict[str, str] = field(default_factory=dict)
    detail: str = ""


def call_values(
    persona: Any, info: CallInfo, number_values: Mapping[str, str]
) -> tuple[dict[str, str], dict[str, str]]:
    """The raw values (before cleaning) of ``persona``'s variables for a call, and where each
    came from (``numbers``, ``call``, ``webhook``; absent = the default).

    ``info.call_data`` is the leg's data (Twilio custom parameters, WebRTC offer variables, SIP
    ``X-`` headers); ``info.variables`` are the webhook's. Only declared variables (and the
    built-ins) are taken from them: anything else a caller sends is ignored.
    """
    declared: Mapping[str, Any] = getattr(persona, "variables", {}) or {}
    values: dict[str, str] = {}
    sources: dict[str, str] = {}
    if info.from_:
        values["caller_number"], sources["caller_number"] = info.from_, "call"
    if info.to:
        values["called_number"], sources["called_number"] = info.to, "call"
    for name in declared:
        if name in number_values:
            values[name], sources[name] = number_values[name], "numbers"
    data = info.call_data
    folded = {k.casefold(): v for k, v in data.items()}
    for name, spec in declared.items():
        header = getattr(spec, "sip_header", None)
        if info.leg == "sip":
            value = folded.get(header.casefold()) if header else None
        else:
            value = data.get(name)
        if value is not None:
            values[name], sources[name] = value, "call"
    for name, value in info.variables.items():
        if name in declared:
            values[name], sources[name] = value, "webhook"
    return values, sources


def _parse_answer(body: bytes) -> WebhookAnswer:
    """The webhook's JSON answer; raises ValueError saying what is wrong."""
    if len(body) > MAX_ANSWER_BYTES:
        raise ValueError(f"answer of {len(body)} bytes (at most {MAX_ANSWER_BYTES})")
    if not body.strip():
        return WebhookAnswer("ok")
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"answer is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"answer must be a JSON object, got {type(data).__name__}")
    action = data.get("action", "continue")
    if action not in ACTIONS:
        raise ValueError(f"action must be one of {', '.join(ACTIONS)}, got {action!r}")
    persona = data.get("persona", "")
    if not isinstance(persona, str) or len(persona) > 64:
        raise ValueError("persona must be a persona name (a string of at most 64 characters)")
    raw = data.get("variables", {})
    if not isinstance(raw, dict) or len(raw) > MAX_VARIABLES:
        raise ValueError(f"variables must be an object of at most {MAX_VARIABLES} strings")
    variables: dict[str, str] = {}
    for name, value in raw.items():
        if not isinstance(value, str):
            raise ValueError(f"variables.{name} must be a string, got {type(value).__name__}")
        variables[str(name)[:64]] = value[:MAX_RAW_VALUE_CHARS]
    return WebhookAnswer("ok", action, persona, variables)


class CallStartWebhook:
    """Asks the operator's endpoint about each call before it starts (bounded wait)."""

    def __init__(self, url: str, secret: str, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        if not secret:
            raise ValueError("the call-start webhook needs a secret to sign its requests")
        self.url = url
        self.secret = secret
        self.timeout_s = timeout_s
        self.asked = 0
        self.failed = 0
        self._client: Any = None

    async def ask(self, info: CallInfo, values: Mapping[str, str]) -> WebhookAnswer:
        """POST the call; the answer, or the outcome ``timeout``/``error`` (never raises)."""
        self.asked += 1
        document = {
            "type": "voicegate.call_start",
            "call_id": info.call_id,
            "leg": info.leg,
            "caller": info.from_,
            "called": info.to,
            "persona": info.persona,
            "variables": dict(values),
        }
        try:
            return await asyncio.wait_for(self._post(document), self.timeout_s)
        except TimeoutError:
            self.failed += 1
            detail = f"no answer within {self.timeout_s:g} s"
            log.warning("call %s: call-start webhook: %s", info.call_id, detail)
            return WebhookAnswer("timeout", detail=detail)
        except Exception as exc:  # down, refused, malformed: the call goes on
            self.failed += 1
            detail = f"{type(exc).__name__}: {exc}"[:500]
            log.warning("call %s: call-start webhook failed: %s", info.call_id, detail)
            return WebhookAnswer("error", detail=detail)

    async def _post(self, document: dict[str, Any]) -> WebhookAnswer:
        import httpx

        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.timeout_s, trust_env=False)
        body = json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()
        headers = {"Content-Type": "application/json", SIGNATURE_HEADER: sign(body, self.secret)}
        answer = await post_bounded(
            self._client, self.url, limit=MAX_ANSWER_BYTES, content=body, headers=headers
        )
        if not 200 <= answer.status_code < 300:
            raise RuntimeError(f"endpoint answered {answer.status_code}")
        if answer.is_truncated:
            raise ValueError(f"answer of more than {MAX_ANSWER_BYTES} bytes")
        return _parse_answer(answer.body)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
