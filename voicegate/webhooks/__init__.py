"""Post-call webhooks: the report (``report``), its signature (``signing``) and at-least-once
delivery from a Redis consumer group (``delivery``). Above ``events`` (it reads the streams the
EventLog writes); knows nothing of calls, legs or the engine."""

from __future__ import annotations

from voicegate.webhooks.delivery import (
    DEAD_LETTER_KEY,
    GROUP,
    Attempt,
    WebhookDelivery,
    delivery_key,
)
from voicegate.webhooks.replay import ReplayResult, replay
from voicegate.webhooks.report import build_report, encode_report, idempotency_key
from voicegate.webhooks.signing import IDEMPOTENCY_HEADER, SIGNATURE_HEADER, sign, verify

__all__ = [
    "Attempt",
    "DEAD_LETTER_KEY",
    "GROUP",
    "IDEMPOTENCY_HEADER",
    "ReplayResult",
    "SIGNATURE_HEADER",
    "WebhookDelivery",
    "build_report",
    "delivery_key",
    "encode_report",
    "idempotency_key",
    "replay",
    "sign",
    "verify",
]
