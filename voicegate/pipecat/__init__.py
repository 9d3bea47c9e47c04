"""VoiceGate inside pipecat pipelines (the optional extra: ``pip install 'voicegate[pipecat]'``).

``SharedEngine`` is one process-wide batched engine (its personas, events and Call admission);
``VoiceGateS2SService`` is a pipecat ``FrameProcessor`` whose call is a slot of it. Nothing in
the rest of ``voicegate`` imports this package, and importing it without pipecat installed
raises an ``ImportError`` that names the extra.

Usage::

    shared = shared_engine(engine="personaplex", model_dir=..., personas_dir="personas")
    service = VoiceGateS2SService(shared, persona="bank_teller")
    pipeline = Pipeline([transport.input(), service, transport.output()])
"""

from __future__ import annotations

# imports the stdlib audioop once with its deprecation warning filtered (STYLE rule 10), before
# pipecat's audio utilities import it
from voicegate import audio as _audio  # noqa: F401

try:
    import pipecat as _pipecat  # noqa: F401
except ImportError as exc:  # pragma: no cover - the extra is installed in CI
    raise ImportError(
        "voicegate.pipecat needs pipecat-ai: pip install 'voicegate[pipecat]'"
    ) from exc

from voicegate.pipecat.engine import SharedEngine, shared_engine
from voicegate.pipecat.service import VoiceGateS2SService, VoiceGateTransferFrame

__all__ = ["SharedEngine", "VoiceGateS2SService", "VoiceGateTransferFrame", "shared_engine"]
