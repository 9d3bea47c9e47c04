"""pipecat's ``audio.utils`` imports the stdlib ``audioop`` (deprecated on 3.11-3.12): importing
VoiceGate's audio package first imports it once with that warning filtered (STYLE rule 10)."""

from __future__ import annotations

import sys

from loguru import logger

import voicegate.audio  # noqa: F401, I001

# pipecat logs every link and frame at DEBUG: keep its warnings and errors only
logger.remove()
logger.add(sys.stderr, level="WARNING")
