"""The fleet: a capacity registry of gateway pods in Redis (heartbeat, TTL, atomic placement of a
call on a pod with a free slot) and the closing of a lost pod's calls. A single gateway runs
without it (``VOICEGATE_FLEET_ENABLED`` off). Sits above the legs' routes: legs get placement
through small callables that ``app`` wires in."""

from __future__ import annotations

from voicegate.fleet.lost import LostCallCloser
from voicegate.fleet.registry import (
    FLEET_PREFIX,
    FleetRegistry,
    LostCall,
    LostPod,
    Placement,
    PodState,
    pod_key,
)

__all__ = [
    "FLEET_PREFIX",
    "FleetRegistry",
    "LostCall",
    "LostCallCloser",
    "LostPod",
    "Placement",
    "PodState",
    "pod_key",
]
