"""Carrier legs over pipecat's serializers: Telnyx, Plivo, Exotel and Vonage media streams on
``/telnyx/media``, ``/plivo/media``, ``/exotel/media`` and ``/vonage/media`` (the ``voicegate[pipecat]`` extra; ``voicegate.app``
imports this package only when ``VOICEGATE_CARRIERS`` names a carrier).

Each is a leg like Twilio's: the same Call layer, numbers.yaml routing, events and metrics;
``protocols`` says what differs per carrier, ``security`` who may open a stream, ``stream`` owns
one socket, ``sim`` speaks each carrier's side for the tests and the benchmark.
"""

from __future__ import annotations

from voicegate import audio as _audio  # noqa: F401  (audioop, its warning filtered, first)
from voicegate.legs.carriers.control import CarrierControl, TelnyxControl
from voicegate.legs.carriers.protocols import (
    CARRIERS,
    EXOTEL,
    PLIVO,
    TELNYX,
    VONAGE,
    CarrierProtocol,
    StreamStart,
)
from voicegate.legs.carriers.routes import CarrierLegs
from voicegate.legs.carriers.stream import CarrierMediaStream, CarrierStats

__all__ = [
    "CARRIERS",
    "EXOTEL",
    "PLIVO",
    "TELNYX",
    "VONAGE",
    "CarrierControl",
    "CarrierLegs",
    "CarrierMediaStream",
    "CarrierProtocol",
    "CarrierStats",
    "StreamStart",
    "TelnyxControl",
]
