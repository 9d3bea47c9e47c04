"""Upload of finished recordings to S3-compatible storage, after the call, with retries.

``S3Uploader.upload`` PUTs one file with botocore's S3 client (signature v4; any S3-compatible
endpoint: AWS, MinIO, Ceph, moto), retrying a failed attempt with exponential backoff and full
jitter until ``retry_for_s`` has passed; botocore's own retries are off so that this one loop
decides. ``RecordingUploads`` feeds it from Redis, not from memory: it reads ``recording.ended``
events from the global events stream through a consumer group named after this host, so a
recording whose upload was cut short by a restart is retried when the gateway is back (its
entry stays pending until acknowledged). Events for files not on this host's disk are skipped.
Each upload's outcome is logged back as a ``recording.uploaded`` event (status ``uploaded`` with
the object's URL, or ``failed`` with the last error; the call's hash gets ``recording_url``), so
the post-call webhook report can carry the upload location.

Metrics: ``voicegate_recording_uploaded_total``, ``voicegate_recording_upload_retried_total``
(failed attempts that were retried), ``voicegate_recording_upload_failed_total`` (uploads given
up) and the histogram ``voicegate_recording_upload_seconds`` (first attempt to the stored object).

Usage (wired by ``app`` when ``VOICEGATE_RECORDINGS_S3_BUCKET`` is set)::

    uploader = S3Uploader(S3Target(endpoint_url, bucket, prefix, key_id, secret, region))
    uploads = RecordingUploads(redis_url, uploader, folder, registry=registry, emit=events.emit)
    uploads.start(); ...
    await uploads.aclose()

Owns: S3Target, S3Uploader, RecordingUploads. boto3/botocore are imported only when an upload
is configured (the ``s3`` extra).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from prometheus_client import CollectorRegistry, Counter, Histogram

from voicegate.errors import RecordingError
from voicegate.events.schema import (
    GLOBAL_EVENTS_KEY,
    Event,
    RecordingEnded,
    RecordingUploaded,
    decode_fields,
)

__all__ = ["RecordingUploads", "S3Target", "S3Uploader"]

log = logging.getLogger("voicegate.recording")

CONTENT_TYPE = "audio/wav"
CLOSE_GRACE_S = 1.0
UPLOAD_BUCKETS_S = (0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 900)


@dataclass(frozen=True, slots=True)
class S3Target:
    """Where recordings go: ``s3://bucket/prefix<YYYY-MM-DD>/<call_id>.wav`` at ``endpoint_url``
    (empty: AWS). Credentials empty: botocore's usual chain (environment, instance role)."""

    endpoint_url: str
    bucket: str
    prefix: str = ""
    access_key_id: str = ""
    secret_access_key: str = ""
    region: str = "us-east-1"


class S3Uploader:
    """Blocking PUT of one file with retries (run it on a worker thread)."""

    def __init__(
        self,
        target: S3Target,
        *,
        retry_for_s: float = 600.0,
        base_delay_s: float = 1.0,
        max_delay_s: float = 60.0,
        timeout_s: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.target = target
        self.retry_for_s = retry_for_s
        self.base_delay_s = base_delay_s
        self.max_delay_s = max_delay_s
        self._sleep = sleep
        self._rand = rand
        self._timeout_s = timeout_s
        self._client: Any = None
        self.attempts = 0
        self.uploaded = 0
        self.failed = 0

    def _s3(self) -> Any:
        if self._client is None:
            import boto3
            from botocore.config import Config

            t = self.target
            self._client = boto3.session.Session().client(
                "s3",
                endpoint_url=t.endpoint_url or None,
                region_name=t.region or None,
                aws_access_key_id=t.access_key_id or None,
                aws_secret_access_key=t.secret_access_key or None,
                config=Config(
                    retries={"total_max_attempts": 1, "mode": "standard"},
                    connect_timeout=self._timeout_s,
                    read_timeout=self._timeout_s,
                    s3={"addressing_style": "path"},
                ),
            )
        return self._client

    def object_url(self, key: str) -> str:
        """The uploaded object's URL: path-style on a configured endpoint, else AWS's own."""
        t = self.target
        if t.endpoint_url:
            return f"{t.endpoint_url.rstrip('/')}/{t.bucket}/{quote(key)}"
        return f"https://{t.bucket}.s3.{t.region or 'us-east-1'}.amazonaws.com/{quote(key)}"

    def delay_s(self, attempt: int) -> float:
        """Backoff before retry ``attempt`` (1-based): full jitter over an exponential cap."""
        cap = min(self.max_delay_s, self.base_delay_s * float(2 ** (attempt - 1)))
        return cap * self._rand()

    def upload(self, path: Path, key: str, on_retry: Callable[[], None] | None = None) -> int:
        """PUT ``path`` as ``key``; returns the attempts it took, raises RecordingError with the
        last error once ``retry_for_s`` has passed (or at once when the file is gone).
        ``on_retry`` is called (on this thread) before each retry."""
        from botocore.exceptions import BotoCoreError, ClientError

        deadline = time.monotonic() + self.retry_for_s
        attempt = 0
        while True:
            attempt += 1
            self.attempts += 1
            try:
                body = path.read_bytes()
            except FileNotFoundError as exc:
                self.failed += 1
                raise RecordingError(f"recording {path} is gone; not uploaded") from exc
            try:
                self._s3().put_object(
                    Bucket=self.target.bucket, Key=key, Body=body, ContentType=CONTENT_TYPE
                )
                self.uploaded += 1
                return attempt
            except (BotoCoreError, ClientError, OSError) as exc:
                error = f"{type(exc).__name__}: {exc}"
            delay = self.delay_s(attempt)
            if time.monotonic() + delay > deadline:
                self.failed += 1
                raise RecordingError(
                    f"recording {path}: upload to s3://{self.target.bucket}/{key} failed after "
                    f"{attempt} attempts: {error}"
                )
            log.warning(
                "recording %s: upload attempt %d failed (%s); retrying in %.1f s",
                path,
                attempt,
                error,
                delay,
            )
            if on_retry is not None:
                on_retry()
            self._sleep(delay)


class _Metrics:
    def __init__(self, registry: CollectorRegistry | None) -> None:
        kw: dict[str, Any] = {"registry": registry}
        self.uploaded = Counter(
            "voicegate_recording_uploaded", "Recordings stored in S3-compatible storage.", **kw
        )
        self.retried = Counter(
            "voicegate_recording_upload_retried",
            "Failed recording upload attempts that were retried.",
            **kw,
        )
        self.failed = Counter(
            "voicegate_recording_upload_failed",
            "Recording uploads given up after their retry time (the file stays on disk).",
            **kw,
        )
        self.seconds = Histogram(
            "voicegate_recording_upload_seconds",
            "From a recording's first upload attempt to the stored object.",
            buckets=UPLOAD_BUCKETS_S,
            **kw,
        )
        self._registry = registry

    def unregister(self) -> None:
        if self._registry is None:
            return
        for m in (self.uploaded, self.retried, self.failed, self.seconds):
            with contextlib.suppress(KeyError):
                self._registry.unregister(m)


class RecordingUploads:
    """Uploads every recording this host finished, from the events stream (consumer group)."""

    def __init__(
        self,
        redis_url: str,
        uploader: S3Uploader,
        folder: Path,
        *,
        group: str = "",
        block_ms: int = 2000,
        registry: CollectorRegistry | None = None,
        emit: Callable[[Event], None] | None = None,
    ) -> None:
        self._redis_url = redis_url
        self._uploader = uploader
        self.folder = folder
        self.group = group or f"recording-upload:{socket.gethostname()}"
        self._consumer = f"{socket.gethostname()}-{os.getpid()}"
        self._block_ms = block_ms
        self._task: asyncio.Task[None] | None = None
        self._metrics = _Metrics(registry)
        self._emit = emit
        self._is_closing = False

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="recording-uploads"
            )

    async def aclose(self) -> None:
        """Stop after the current read (an upload in progress is left pending in the group:
        the next start retries it). Bounded: a task cancelled inside a blocking XREADGROUP
        was seen to never finish (redis-py), so the consumer is asked to stop between reads
        and only cancelled, without waiting for it, if it does not."""
        task, self._task = self._task, None
        self._is_closing = True
        if task is not None:
            await asyncio.wait({task}, timeout=self._block_ms / 1000 + CLOSE_GRACE_S)
            if not task.done():
                task.cancel()
                await asyncio.wait({task}, timeout=CLOSE_GRACE_S)
            if task.done() and not task.cancelled() and task.exception() is not None:
                log.error("recording uploads: consumer failed: %s", task.exception())
        self._metrics.unregister()

    def key_for(self, path: Path) -> str:
        try:
            rel = path.resolve().relative_to(self.folder.resolve()).as_posix()
        except ValueError:
            rel = path.name
        return f"{self._uploader.target.prefix}{rel}"

    async def _run(self) -> None:
        from redis.asyncio import Redis
        from redis.exceptions import RedisError, ResponseError

        client = Redis.from_url(self._redis_url, decode_responses=True)
        try:
            is_group_ready = False
            start_id = "0"  # first our own pending entries (a restart mid-upload), then new ones
            while not self._is_closing:
                try:
                    if not is_group_ready:
                        with contextlib.suppress(ResponseError):  # BUSYGROUP: it exists
                            await client.xgroup_create(
                                GLOBAL_EVENTS_KEY, self.group, id="$", mkstream=True
                            )
                        is_group_ready = True
                    reply: Any = await client.xreadgroup(
                        self.group,
                        self._consumer,
                        {GLOBAL_EVENTS_KEY: start_id},
                        count=16,
                        block=None if start_id == "0" else self._block_ms,
                    )
                    entries: list[tuple[str, dict[str, str]]] = reply[0][1] if reply else []
                    if start_id == "0" and not entries:
                        start_id = ">"
                    for entry_id, fields in entries:
                        if self._is_closing:
                            return  # the rest stay pending: the next start takes them
                        await self._handle(fields)
                        if self._is_closing:  # stopped mid-upload: the next start redoes it
                            return
                        await client.xack(GLOBAL_EVENTS_KEY, self.group, entry_id)
                except RedisError as exc:
                    log.warning("recording uploads: redis: %s; retrying in 1 s", exc)
                    is_group_ready = False
                    await asyncio.sleep(1.0)
        finally:
            await client.aclose()

    async def _handle(self, fields: dict[str, str]) -> None:
        if fields.get("type") != RecordingEnded.type or fields.get("status") != "complete":
            return
        try:
            event = decode_fields(fields)
        except ValueError:
            log.warning("recording uploads: malformed recording.ended event skipped")
            return
        assert isinstance(event, RecordingEnded)
        path = Path(event.path)
        if not path.is_file():
            return  # another host's recording (or swept already)
        key = self.key_for(path)
        uploader, m = self._uploader, self._metrics
        before = uploader.attempts
        started = time.monotonic()
        try:
            attempts = await asyncio.to_thread(uploader.upload, path, key, m.retried.inc)
        except RecordingError as exc:
            m.failed.inc()
            log.error("%s", exc)
            self._report(event, key, "failed", uploader.attempts - before, started, str(exc))
            return
        m.uploaded.inc()
        m.seconds.observe(time.monotonic() - started)
        self._report(event, key, "uploaded", attempts, started, "")
        log.info(
            "recording %s uploaded to s3://%s/%s (%d attempts)",
            path,
            self._uploader.target.bucket,
            key,
            attempts,
        )

    def _report(
        self,
        ended: RecordingEnded,
        key: str,
        status: str,
        attempts: int,
        started: float,
        error: str,
    ) -> None:
        """Log the outcome as ``recording.uploaded`` (the webhook report reads it from Redis)."""
        if self._emit is None:
            return
        is_uploaded = status == "uploaded"
        try:
            self._emit(
                RecordingUploaded(
                    call_id=ended.call_id,
                    leg=ended.leg,
                    t_ms=ended.t_ms,
                    path=ended.path,
                    status=status,
                    url=self._uploader.object_url(key) if is_uploaded else "",
                    bucket=self._uploader.target.bucket,
                    key=key,
                    attempts=max(0, attempts),
                    upload_ms=int((time.monotonic() - started) * 1000),
                    detail=error[:2048],
                )
            )
        except Exception:  # an event must never stop the uploads
            log.exception("recording %s: recording.uploaded event failed", ended.path)
