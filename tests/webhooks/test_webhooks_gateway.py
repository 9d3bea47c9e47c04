"""Post-call webhooks from a whole gateway: simulated Twilio calls, a real redis-server of the
test's own (killed and restarted), the gateway as its own process (SIGKILLed), and a real HTTP
receiver. The webhook URL comes from the numbers file (``webhooks: default``)."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import httpx
import numpy as np

from tests.legs.gateway import REPO, read_events
from tests.legs.twilio.twilio_helpers import (
    AUTH_TOKEN,
    PUBLIC_URL,
    gateway_env,
    start_twilio_gateway,
    wait_ready,
)
from voicegate.demo import free_port
from voicegate.legs.twilio.sim import TwilioSimulator
from voicegate.webhooks import idempotency_key, verify

from .receiver import Receiver, eventually

SECRET = "whsec-gateway-test"
CALLED = "+14155550100"  # bank_teller
CALLER = "+15005550006"


def numbers_with_webhook(tmp: Path, url: str) -> Path:
    text = (REPO / "telephony" / "numbers.yaml").read_text()
    path = tmp / "numbers.yaml"
    path.write_text(text + f'webhooks:\n  default: {{call_ended: "{url}"}}\n')
    return path


def tone(seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * 8000)) / 8000
    return (8000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)


async def one_call(base: str) -> str:
    """A short Twilio call that the caller hangs up; its CallSid."""
    async with TwilioSimulator(base, PUBLIC_URL, AUTH_TOKEN) as twilio:
        placed = await twilio.place_call(CALLER, CALLED)
        stream = await twilio.open_stream(placed)
        await stream.play(tone(0.5))
        await stream.stop()
        return placed.call_sid


async def test_a_gateway_killed_before_delivery_delivers_after_restart(
    redis_factory: Callable[..., Any], tmp_path: Path
) -> None:
    redis = redis_factory()
    with Receiver() as rx:
        rx.is_failing = True  # 500 until the gateway is dead
        port = free_port()
        env = gateway_env(
            redis.url,
            tmp_path,
            port,
            VOICEGATE_NUMBERS_FILE=str(numbers_with_webhook(tmp_path, rx.url)),
            VOICEGATE_WEBHOOK_SECRET=SECRET,
            VOICEGATE_WEBHOOK_CONSUMER="gw-a",
            VOICEGATE_WEBHOOK_SETTLE_S="0.2",
            VOICEGATE_WEBHOOK_BACKOFF_MIN_S="0.5",
            VOICEGATE_WEBHOOK_BACKOFF_MAX_S="1.0",
        )
        base = f"http://127.0.0.1:{port}"
        cmd = [sys.executable, "-m", "voicegate", "serve"]
        proc = subprocess.Popen(cmd, env=env, cwd=REPO)
        try:
            await wait_ready(base, proc)
            call_id = await one_call(base)
            await read_events(redis.url, call_id)  # call.ended is in Redis
            await eventually(lambda: len(rx.attempts) >= 1, 20, "no attempt before the kill")
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            n_before = len(rx.attempts)
            assert rx.acked == []

            rx.is_failing = False
            proc = subprocess.Popen(cmd, env=env, cwd=REPO)
            await wait_ready(base, proc)
            await eventually(lambda: len(rx.acked) == 1, 30, f"not delivered: {rx.attempts}")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        hits = rx.attempts
        assert len(hits) > n_before  # the restarted gateway sent it
        assert {h.key for h in hits} == {idempotency_key(call_id)}
        assert len({h.body for h in hits}) == 1  # the report stored before the kill
        assert all(verify(h.body, h.headers["voicegate-signature"], SECRET) for h in hits)
        report = json.loads(hits[-1].body)
        assert report["call_id"] == call_id and report["persona"] == "bank_teller"
        assert report["caller"] == CALLER and report["called"] == CALLED
        assert report["reason"] == "caller_hangup" and report["duration_ms"] > 0


async def test_redis_down_during_the_call_is_delivered_after_it_is_back(
    redis_factory: Callable[..., Any], tmp_path: Path
) -> None:
    redis = redis_factory(is_durable=True)
    with Receiver() as rx:
        # this time the persona names the URL (the numbers file has no webhooks)
        personas = tmp_path / "personas"
        shutil.copytree(REPO / "personas", personas)
        with (personas / "bank_teller.yaml").open("a") as f:
            f.write(f'\nwebhooks: {{call_ended: "{rx.url}"}}\n')
        gw = start_twilio_gateway(
            redis.url,
            tmp_path,
            personas_dir=personas,
            webhook_secret=SECRET,
            webhook_settle_s=0.2,
            webhook_backoff_min_s=0.2,
        )
        try:
            async with gw.simulator() as twilio:
                placed = await twilio.place_call(CALLER, CALLED)
                stream = await twilio.open_stream(placed)
                await stream.play(tone(0.3))
                redis.kill()  # mid-call
                await stream.play(tone(0.5))
                await stream.stop()
            await gw.wait_idle()
            hooks = gw.app.state.parts.webhooks
            await eventually(lambda: not hooks.is_redis_up, 10, "outage not seen")
            assert rx.attempts == []
            redis.start()
            await eventually(lambda: len(rx.acked) == 1, 30, f"not delivered: {rx.attempts}")
        finally:
            gw.server.stop()
        (hit,) = rx.attempts
        report = json.loads(hit.body)
        assert report["call_id"] == placed.call_sid and report["reason"] == "caller_hangup"
        assert hit.key == idempotency_key(placed.call_sid)


async def test_a_recorded_calls_report_carries_the_recording_and_its_upload(
    redis_factory: Callable[..., Any], tmp_path: Path
) -> None:
    """A recorded call end to end: the report (built right at call.ended, settle 0) waits for
    the recording writer's recording.ended and the upload's recording.uploaded (a real
    S3-compatible server, moto's), and carries the file's path and the object's URL."""
    from moto.server import ThreadedMotoServer

    from tests.legs.twilio.test_recording import RECORDED, _noise, make_config

    redis = redis_factory()
    s3_port = free_port()
    s3 = ThreadedMotoServer(ip_address="127.0.0.1", port=s3_port, verbose=False)
    s3.start()
    s3_url = f"http://127.0.0.1:{s3_port}"
    keys = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
    client = boto3.client("s3", endpoint_url=s3_url, region_name="us-east-1", **keys)
    client.create_bucket(Bucket="calls")
    try:
        with Receiver() as rx:
            personas, numbers = make_config(tmp_path)
            with numbers.open("a") as f:
                f.write(f'webhooks:\n  default: {{call_ended: "{rx.url}"}}\n')
            gw = start_twilio_gateway(
                redis.url,
                tmp_path,
                personas_dir=personas,
                numbers_file=numbers,
                recordings_dir=tmp_path / "recordings",
                recordings_s3_bucket="calls",
                recordings_s3_endpoint_url=s3_url,
                recordings_s3_prefix="rec/",
                recordings_s3_access_key_id="testing",
                recordings_s3_secret_access_key="testing",
                webhook_secret=SECRET,
                webhook_settle_s=0.0,
                webhook_recording_wait_s=30.0,
            )
            try:
                async with gw.simulator() as twilio:
                    placed = await twilio.place_call(CALLER, RECORDED)
                    stream = await twilio.open_stream(placed)
                    await stream.play(_noise(1.5, seed=7))
                    await stream.stop()
                await eventually(lambda: len(rx.acked) == 1, 40, f"not delivered: {rx.attempts}")
                async with httpx.AsyncClient(base_url=gw.base_url, trust_env=False) as http:
                    metrics = (await http.get("/metrics")).text
            finally:
                gw.server.stop()
        (hit,) = rx.attempts
        assert verify(hit.body, hit.headers["voicegate-signature"], SECRET)
        report = json.loads(hit.body)
        assert report["call_id"] == placed.call_sid
        recording = report["recording"]
        assert recording is not None, report
        path = Path(recording["path"])
        assert path.name == f"{placed.call_sid}.wav" and recording["status"] == "complete"
        assert abs(recording["duration_ms"] - report["duration_ms"]) <= 40
        upload = recording["upload"]
        key = f"rec/{path.parent.name}/{path.name}"
        assert upload["status"] == "uploaded" and upload["key"] == key
        assert upload["url"] == f"{s3_url}/calls/{key}"
        stored: Any = client.get_object(Bucket="calls", Key=key)["Body"]
        assert stored.read() == path.read_bytes()
        assert "voicegate_recording_uploaded_total 1.0" in metrics
        assert "voicegate_recording_upload_failed_total 0.0" in metrics
        assert "voicegate_recording_upload_seconds_count 1.0" in metrics
    finally:
        s3.stop()
