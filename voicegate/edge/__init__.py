"""Edge workers: the legs and Calls in several processes, one engine, shared-memory audio.

``voicegate serve --workers N`` (``VOICEGATE_EDGE_WORKERS``) runs the engine in the main
process (``serve``, ``host``) and the HTTP/WebSocket side in N worker processes that share its
port (``worker``); each worker's CallManager joins calls through a ``RemoteEngine``
(``remote``) whose slots exchange 80 ms frames with the engine's tick thread over lock-free
rings in shared memory (``rings``), with a small control channel for the rest (``messages``).
With one worker (the default) none of this is used: the gateway is one process, as before.
"""

from __future__ import annotations

from voicegate.edge.metrics import MetricsShare, merge_expositions
from voicegate.edge.rings import RingLayout, SlotRings

__all__ = ["MetricsShare", "RingLayout", "SlotRings", "merge_expositions"]
