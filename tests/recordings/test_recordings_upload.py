"""Upload of recordings to a real S3-compatible server (moto's, started here) with retries: a
front that fails the first attempts, a server that never answers, and the Redis consumer that
uploads what the events stream says was recorded (again after a restart)."""

from __future__ import annotations

import asyncio
import http.client
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from voicegate.demo import free_port
from voicegate.errors import RecordingError
from voicegate.events.schema import (
    GLOBAL_EVENTS_KEY,
    Event,
    RecordingEnded,
    RecordingUploaded,
    decode_fields,
    encode_fields,
)
from voicegate.recordings import RecordingUploads, S3Target, S3Uploader

BUCKET = "calls"
KEYS = {"access_key_id": "testing", "secret_access_key": "testing"}


@pytest.fixture(scope="module")
def s3_url() -> Iterator[str]:
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    boto3.client("s3", endpoint_url=url, region_name="us-east-1", **_keys()).create_bucket(
        Bucket=BUCKET
    )
    yield url
    server.stop()


def _keys() -> dict[str, str]:
    return {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


def get_object(s3_url: str, key: str) -> bytes:
    client = boto3.client("s3", endpoint_url=s3_url, region_name="us-east-1", **_keys())
    body: Any = client.get_object(Bucket=BUCKET, Key=key)["Body"]
    return bytes(body.read())


class FlakyFront:
    """An HTTP front for the S3 server that answers 503 to the first ``fail`` requests."""

    def __init__(self, upstream: str, fail: int) -> None:
        self.fail = fail
        self.requests = 0
        host, port = upstream.removeprefix("http://").split(":")
        front = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _forward(self) -> None:
                front.requests += 1
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if front.requests <= front.fail:
                    self.send_response(503)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                conn = http.client.HTTPConnection(host, int(port), timeout=10)
                conn.request(self.command, self.path, body, dict(self.headers))
                reply = conn.getresponse()
                data = reply.read()
                self.send_response(reply.status)
                for k, v in reply.getheaders():
                    if k.lower() not in ("content-length", "transfer-encoding", "connection"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                conn.close()

            do_PUT = do_GET = do_HEAD = _forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def recording(tmp_path: Path, name: str = "CAupload.wav") -> Path:
    path = tmp_path / "recordings" / "2026-12-03" / name
    path.parent.mkdir(parents=True)
    path.write_bytes(b"RIFF" + bytes(range(256)) * 40)
    return path


def test_upload_retries_with_backoff_until_the_server_takes_it(s3_url: str, tmp_path: Path) -> None:
    front = FlakyFront(s3_url, fail=3)
    delays: list[float] = []
    try:
        uploader = S3Uploader(
            S3Target(front.url, BUCKET, "rec/", **KEYS),
            base_delay_s=0.5,
            max_delay_s=1.5,
            sleep=delays.append,
            rand=lambda: 1.0,  # the jitter's upper bound: the exponential cap itself
        )
        path = recording(tmp_path)
        assert uploader.upload(path, "rec/2026-12-03/CAupload.wav") == 4
    finally:
        front.close()
    assert front.requests == 4  # 3 refused, then one that went through: no duplicate PUT
    assert delays == [0.5, 1.0, 1.5]  # exponential, capped
    assert get_object(s3_url, "rec/2026-12-03/CAupload.wav") == path.read_bytes()
    assert (uploader.attempts, uploader.uploaded, uploader.failed) == (4, 1, 0)


def test_upload_gives_up_after_its_retry_time(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens
    uploader = S3Uploader(
        S3Target(dead, BUCKET, **KEYS), retry_for_s=1.5, base_delay_s=0.05, timeout_s=1
    )
    with pytest.raises(RecordingError, match="failed after [0-9]+ attempts"):
        uploader.upload(recording(tmp_path), "x.wav")
    # retried, then given up (how many attempts fit depends on the machine's load)
    assert uploader.attempts >= 2 and uploader.failed == 1


def test_a_missing_file_is_not_retried(tmp_path: Path) -> None:
    uploader = S3Uploader(S3Target("http://127.0.0.1:9", BUCKET, **KEYS))
    with pytest.raises(RecordingError, match="is gone"):
        uploader.upload(tmp_path / "none.wav", "x.wav")
    assert uploader.attempts == 1


async def _group_ready(client: Redis, group: str) -> None:
    for _ in range(200):
        with_groups: Any = []
        try:
            with_groups = await client.xinfo_groups(GLOBAL_EVENTS_KEY)
        except Exception:
            pass
        if any(g["name"] == group for g in with_groups):
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the upload consumer group was never created")


async def _wait_object(s3_url: str, key: str) -> bytes:
    for _ in range(300):
        try:
            return await asyncio.to_thread(get_object, s3_url, key)
        except Exception:
            await asyncio.sleep(0.05)
    raise AssertionError(f"{key} was never uploaded")


async def test_the_consumer_uploads_what_was_recorded_even_after_a_restart(
    s3_url: str, redis_url: str, tmp_path: Path
) -> None:
    folder = tmp_path / "recordings"
    path = recording(tmp_path, "CArestart.wav")
    group = "recording-upload:test-restart"
    client = Redis.from_url(redis_url, decode_responses=True)
    # the first gateway's storage is down: it reads the event and is stopped mid-retry
    down = S3Uploader(
        S3Target(f"http://127.0.0.1:{free_port()}", BUCKET, **KEYS),
        retry_for_s=0.5,
        base_delay_s=0.05,
        timeout_s=0.5,
    )
    first = RecordingUploads(redis_url, down, folder, group=group, block_ms=100)
    first.start()
    try:
        await _group_ready(client, group)
        ended = RecordingEnded(
            call_id="CArestart",
            leg="twilio",
            t_ms=5000,
            path=str(path),
            duration_ms=5000,
            size_bytes=path.stat().st_size,
            status="complete",
        )
        await client.xadd(GLOBAL_EVENTS_KEY, encode_fields(ended))  # type: ignore[arg-type]
        for _ in range(200):
            if down.attempts:
                break
            await asyncio.sleep(0.02)
        assert down.attempts >= 1
        await first.aclose()  # killed before it acknowledged: the entry stays pending
        pending: Any = await client.xpending(GLOBAL_EVENTS_KEY, group)
        assert pending["pending"] == 1
        # the gateway is back, and so is the storage: the pending entry is uploaded
        up = S3Uploader(S3Target(s3_url, BUCKET, "rec/", **KEYS))
        second = RecordingUploads(redis_url, up, folder, group=group, block_ms=100)
        second.start()
        try:
            body = await _wait_object(s3_url, "rec/2026-12-03/CArestart.wav")
            assert body == path.read_bytes()
            for _ in range(100):
                pending = await client.xpending(GLOBAL_EVENTS_KEY, group)
                if pending["pending"] == 0:
                    break
                await asyncio.sleep(0.05)
            assert pending["pending"] == 0
        finally:
            await second.aclose()
    finally:
        await first.aclose()
        await client.aclose()


async def _upload_one(
    redis_url: str, uploader: S3Uploader, folder: Path, path: Path
) -> tuple[RecordingUploaded, dict[str, float]]:
    """Run a consumer until it has logged ``path``'s outcome: (the event, its metrics)."""
    group = f"recording-upload:test-{path.stem}"
    client = Redis.from_url(redis_url, decode_responses=True)
    registry = CollectorRegistry()
    events: list[Event] = []
    uploads = RecordingUploads(
        redis_url,
        uploader,
        folder,
        group=group,
        block_ms=100,
        registry=registry,
        emit=events.append,
    )
    uploads.start()
    try:
        await _group_ready(client, group)
        ended = RecordingEnded(
            call_id=path.stem,
            leg="twilio",
            t_ms=5000,
            path=str(path),
            duration_ms=5000,
            size_bytes=path.stat().st_size,
            status="complete",
        )
        await client.xadd(GLOBAL_EVENTS_KEY, encode_fields(ended))  # type: ignore[arg-type]
        for _ in range(500):
            if events:
                break
            await asyncio.sleep(0.02)
        names = ("uploaded_total", "upload_retried_total", "upload_failed_total")
        values = {n: registry.get_sample_value(f"voicegate_recording_{n}") or 0.0 for n in names}
        values["seconds"] = (
            registry.get_sample_value("voicegate_recording_upload_seconds_count") or 0
        )
    finally:
        await uploads.aclose()
        await client.aclose()
    (event,) = events
    assert isinstance(event, RecordingUploaded)
    return event, values


async def test_uploads_are_counted_and_reported_as_events(
    s3_url: str, redis_url: str, tmp_path: Path
) -> None:
    """The consumer's metrics (uploaded, retried, failed, upload seconds) and the
    ``recording.uploaded`` event it logs: the object's URL, or the failure with its error."""
    folder = tmp_path / "recordings"
    good = recording(tmp_path, "CAgood.wav")
    lost = folder / "2026-12-03" / "CAlost.wav"
    lost.write_bytes(b"RIFF" + bytes(100))
    front = FlakyFront(s3_url, fail=2)
    try:
        flaky = S3Uploader(
            S3Target(front.url, BUCKET, "rec/", **KEYS), base_delay_s=0.05, max_delay_s=0.1
        )
        done, counted = await _upload_one(redis_url, flaky, folder, good)
    finally:
        front.close()
    assert done.call_id == "CAgood" and done.status == "uploaded" and done.attempts == 3
    assert done.key == "rec/2026-12-03/CAgood.wav" and done.bucket == BUCKET
    assert done.url == f"{front.url}/{BUCKET}/rec/2026-12-03/CAgood.wav"
    assert done.hash_fields()["recording_url"] == done.url
    assert decode_fields(encode_fields(done)) == done
    assert counted == {
        "uploaded_total": 1,
        "upload_retried_total": 2,
        "upload_failed_total": 0,
        "seconds": 1,
    }
    gone = S3Uploader(
        S3Target(f"http://127.0.0.1:{free_port()}", BUCKET, "rec/", **KEYS),
        retry_for_s=0.3,
        base_delay_s=0.05,
        timeout_s=1,
    )
    failed, counted = await _upload_one(redis_url, gone, folder, lost)
    assert failed.call_id == "CAlost" and failed.status == "failed" and failed.url == ""
    assert "failed after" in failed.detail and failed.attempts == gone.attempts >= 1
    assert failed.hash_fields() == {"recording_upload": "failed"}
    assert counted == {
        "uploaded_total": 0,
        "upload_retried_total": gone.attempts - 1,
        "upload_failed_total": 1,
        "seconds": 0,
    }
