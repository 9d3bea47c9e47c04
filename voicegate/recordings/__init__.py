"""Recordings beyond the call: which calls are recorded (policy), retention, and upload.

The Call-side recorder and the writer thread live in ``voicegate.calls.recording``; this room
decides what is recorded, keeps the folder within its retention period and uploads finished
recordings. Wired by ``app`` only.
"""

from __future__ import annotations

from voicegate.recordings.policy import RecordingPolicy, recording_path
from voicegate.recordings.retention import RetentionSweeper, sweep
from voicegate.recordings.upload import RecordingUploads, S3Target, S3Uploader

__all__ = [
    "RecordingPolicy",
    "RecordingUploads",
    "RetentionSweeper",
    "S3Target",
    "S3Uploader",
    "recording_path",
    "sweep",
]
