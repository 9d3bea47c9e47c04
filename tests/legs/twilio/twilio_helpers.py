"""The Twilio leg's gateway (tests/legs/gateway.py) with a public URL and an auth token, its
simulator, and the environment for ``voicegate serve`` in a subprocess."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx

from voicegate.legs.twilio.sim import TwilioSimulator

from ..gateway import MAX_CALLS, REPO, Gateway, gateway_settings, start_gateway

AUTH_TOKEN = "test-auth-token-0123456789abcdef"
PUBLIC_URL = "https://gw.test"


class TwilioGateway(Gateway):
    """The gateway with the Twilio leg's handles."""

    @property
    def twilio_stats(self) -> Any:
        return self.app.state.twilio.stats

    def simulator(
        self, auth_token: str = AUTH_TOKEN, public_url: str = PUBLIC_URL
    ) -> TwilioSimulator:
        return TwilioSimulator(self.base_url, public_url, auth_token)


def gateway_env(redis_url: str, tmp: Path, port: int, **overrides: str) -> dict[str, str]:
    """Environment for ``voicegate serve`` in a subprocess, like the ``gateway`` fixture's settings."""
    env = {
        **os.environ,
        "VOICEGATE_ENGINE": "echo",
        "VOICEGATE_HOST": "127.0.0.1",
        "VOICEGATE_PORT": str(port),
        "VOICEGATE_PUBLIC_URL": PUBLIC_URL,
        "VOICEGATE_TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        "VOICEGATE_REDIS_URL": redis_url,
        "VOICEGATE_PERSONAS_DIR": str(REPO / "personas"),
        "VOICEGATE_NUMBERS_FILE": str(REPO / "telephony" / "numbers.yaml"),
        "VOICEGATE_EVENTS_JOURNAL_DIR": str(tmp / "journal"),
        "VOICEGATE_SIP_ENABLED": "false",
        "VOICEGATE_MAX_CALLS": str(MAX_CALLS),
        "VOICEGATE_LOG_LEVEL": "INFO",
    }
    env.update(overrides)
    return env


def start_twilio_gateway(redis_url: str, tmp: Path, **overrides: Any) -> TwilioGateway:
    """The gateway with the Twilio leg's public URL and auth token, ``overrides`` on top."""
    values: dict[str, Any] = {"public_url": PUBLIC_URL, "twilio_auth_token": AUTH_TOKEN}
    values.update(overrides)
    return start_gateway(TwilioGateway, gateway_settings(redis_url, tmp, **values))


async def wait_ready(base: str, proc: subprocess.Popen[bytes], timeout_s: float = 120.0) -> None:
    """Until the gateway subprocess ``proc`` answers ``/readyz`` with 200 (fails if it exits)."""
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient(trust_env=False) as client:
        while True:
            assert proc.poll() is None, "the gateway exited during start-up"
            try:
                if (await client.get(base + "/readyz", timeout=2)).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the gateway did not become ready"
            await asyncio.sleep(0.1)
