"""The engine process's host and a worker's RemoteEngine in one process, over real socket pairs
and a real shared segment, with the echo engine ticked by hand."""

from __future__ import annotations

import socket
import threading
import time
import types
from collections.abc import Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection

import numpy as np
import pytest

from tests.engine.engine_helpers import noise_frames
from tests.utils import RecordingEvents
from voicegate.contracts import CallInfo, PersonaPrompt, TransferTarget
from voicegate.edge.host import EngineHost
from voicegate.edge.messages import Hello
from voicegate.edge.remote import RemoteEngine, RemoteFault
from voicegate.edge.steps import SharedNextSteps
from voicegate.engine.base import FRAME_SAMPLES, TickOutput
from voicegate.engine.echo import EchoModel
from voicegate.engine.factory import create_model
from voicegate.engine.health import EngineFault, FaultKind
from voicegate.engine.runtime import BatchedEngine, TickMode
from voicegate.engine.supervisor import EngineSupervisor
from voicegate.errors import InvalidStateError, NoFreeSlot, UnknownPersona
from voicegate.events.schema import CallEnded
from voicegate.legs.twilio.nextsteps import DIAL, NextStep


@dataclass
class Sink:
    """A Call's place as a SlotSink (``info`` travels with the join)."""

    info: CallInfo
    frames: list[tuple[int, float]] = field(default_factory=list)
    got: threading.Event = field(default_factory=threading.Event)

    def on_tick(self, out: TickOutput) -> None:
        self.frames.append((out.frame_index, float(out.pcm[0])))
        self.got.set()


@dataclass
class Rig:
    host: EngineHost
    engine: EngineSupervisor
    remote: RemoteEngine
    events: RecordingEvents

    def tick(self) -> None:
        assert self.engine.current.tick()


def _link(host: EngineHost, engine: EngineSupervisor, index: int) -> RemoteEngine:
    ctl_here, ctl_there = socket.socketpair()
    tick_here, tick_there = socket.socketpair()
    hello = Hello(
        index, 2, host.rings.name, host.rings.layout.slots, b"s" * 32, "/nonexistent", "echo"
    )
    host.attach(index, 4242 + index, Connection(ctl_here.detach()), tick_here, hello)
    remote = RemoteEngine(Connection(ctl_there.detach()), tick_there)
    remote.start()
    return remote


@pytest.fixture
def rig() -> Iterator[Rig]:
    events = RecordingEvents()
    host = EngineHost(events)
    engine = EngineSupervisor(
        lambda g: host.adopt(BatchedEngine(EchoModel(2), mode=TickMode.MANUAL))
    )
    engine.start()
    host.start(engine)
    engine.load_persona(PersonaPrompt("teller", "", "NATF0"))
    remote = _link(host, engine, 0)
    try:
        yield Rig(host, engine, remote, events)
    finally:
        remote.close()
        host.close()
        engine.close()


def info(n: int) -> CallInfo:
    return CallInfo(f"call-{n}", "twilio", "teller", "+1", "+2")


def wait(predicate: object, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_frames_cross_both_ways_and_admission_is_the_engines(rig: Rig) -> None:
    a, b = Sink(info(1)), Sink(info(2))
    slot_a = rig.remote.join("teller", a)
    slot_b = rig.remote.join("teller", b)
    assert {slot_a.index, slot_b.index} == {0, 1}
    assert rig.remote.active_slots == 2 and rig.remote.max_slots == 2
    with pytest.raises(NoFreeSlot):
        rig.remote.join("teller", Sink(info(3)))
    with pytest.raises(UnknownPersona):
        slot_b.leave()
        rig.remote.join("nobody", Sink(info(4)))
    for k in range(4):
        slot_a.push(np.full(FRAME_SAMPLES, 0.1 * (k + 1), dtype=np.float32))
        rig.tick()
        wait(lambda k=k: len(a.frames) == k + 1)
    # the echo engine plays each frame back one tick later, in order, on the worker's thread
    assert [i for i, _ in a.frames] == [0, 1, 2, 3]
    assert [round(v, 3) for _, v in a.frames] == [0.0, 0.1, 0.2, 0.3]
    assert b.frames == []  # it left before any tick
    assert rig.remote.stats().ticks == 4
    assert rig.remote.next_tick_at() is None  # manual ticks: no schedule
    with pytest.raises(ValueError, match="expected a"):
        slot_a.push(np.zeros(10, dtype=np.float32))
    slot_a.leave()
    wait(lambda: rig.engine.active_slots == 0)
    assert not slot_a.is_active


def test_a_call_joins_once_whichever_worker_asks(rig: Rig) -> None:
    other = _link(rig.host, rig.engine, 1)
    try:
        rig.remote.join("teller", Sink(info(7)))
        with pytest.raises(InvalidStateError, match="joined already"):
            other.join("teller", Sink(info(7)))  # a replayed Twilio token in another worker
    finally:
        other.close()


def test_a_lost_worker_frees_its_slots_and_its_calls_end(rig: Rig) -> None:
    other = _link(rig.host, rig.engine, 1)
    kept = rig.remote.join("teller", Sink(info(1)))
    other.join("teller", Sink(info(2)))
    assert rig.engine.active_slots == 2
    other.close()  # as when the process dies: its end of the channel closes
    wait(lambda: rig.engine.active_slots == 1)
    (ended,) = rig.events.of_type(CallEnded)
    assert ended.call_id == "call-2" and ended.reason == "error"
    assert "edge worker 1 (pid 4243) exited mid-call" in ended.detail
    assert kept.is_active  # the other worker's call is untouched
    sink = Sink(info(3))
    assert rig.remote.join("teller", sink).index in (0, 1)  # the freed slot serves again


def test_an_engine_fault_reaches_every_worker_and_one_rebuild_serves_all(rig: Rig) -> None:
    faults: list[RemoteFault] = []
    rig.remote.on_fault = faults.append
    rig.remote.join("teller", Sink(info(1)))
    fault = EngineFault("echo", FaultKind.NAN, "non-finite agent audio", time.monotonic())
    rig.engine.current._watch.report(fault.kind, fault.detail)
    wait(lambda: bool(faults))
    assert faults[0].kind is FaultKind.NAN and "non-finite" in faults[0].describe()
    assert rig.remote.health() is not None
    rig.remote.rebuild()
    assert rig.engine.rebuilds == 1 and rig.remote.health() is None
    rig.remote.rebuild()  # a second worker asking after the rebuild: nothing more to do
    assert rig.engine.rebuilds == 1


def test_the_engine_process_gone_is_noticed(rig: Rig) -> None:
    lost: list[str] = []
    rig.remote.on_lost = lost.append
    rig.host.close()
    wait(lambda: bool(lost))
    assert rig.remote.health() is not None and "gone" in rig.remote.health()  # type: ignore[operator]


def test_a_twilio_next_step_recorded_in_one_worker_reaches_the_others(rig: Rig) -> None:
    other = _link(rig.host, rig.engine, 1)
    try:
        here, there = SharedNextSteps(rig.remote.send_note), SharedNextSteps(other.send_note)
        rig.remote.on_note, other.on_note = here.apply, there.apply
        step = NextStep("CA1", DIAL, TransferTarget("branch", "+14155550123"), trigger="dtmf")
        here.put("CA1", step)
        wait(lambda: there.get("CA1") == step)
        assert there.pop("CA1") == step
        wait(lambda: here.get("CA1") is None)
    finally:
        other.close()


def test_the_previous_calls_late_tick_never_reaches_the_next_call_in_its_slot(rig: Rig) -> None:
    a = Sink(info(1))
    slot_a = rig.remote.join("teller", a)
    state = rig.engine.current._slots[slot_a.index]
    old_sink = state.sink  # the engine thread may still be delivering to it after the leave
    assert old_sink is not None
    slot_a.push(np.full(FRAME_SAMPLES, 0.9, dtype=np.float32))  # never pumped
    slot_a.leave()
    wait(lambda: rig.engine.active_slots == 0)
    b = Sink(info(2))
    slot_b = rig.remote.join("teller", b)
    assert slot_b.index == slot_a.index
    late = TickOutput(41, np.full(FRAME_SAMPLES, 0.7, dtype=np.float32), 5, " old")
    old_sink.on_tick(late)  # the previous call's tick, in flight across the hand-over
    slot_b.push(np.full(FRAME_SAMPLES, 0.5, dtype=np.float32))
    rig.tick()
    rig.tick()
    wait(lambda: len(b.frames) == 2)
    assert b.frames == [(0, 0.0), (1, 0.5)]  # its own ticks only, its own audio echoed


@pytest.mark.parametrize("text_prompt", [None, "You are speaking with Alice, a gold customer."])
def test_the_tiny_engine_through_the_rings_gives_what_it_gives_in_process(
    text_prompt: str | None,
) -> None:
    """Also a call's own prompt (per-call variables): it crosses the control channel."""
    settings = types.SimpleNamespace(engine="tiny", max_calls=2, device="cpu")
    prompt = PersonaPrompt("teller", "", "NATF0")
    frames = noise_frames(3, 5)

    local = BatchedEngine(create_model(settings), mode=TickMode.MANUAL, seed=7)
    local.start()
    local.load_persona(prompt)
    want_text: list[tuple[int, str]] = []
    want_pcm: list[np.ndarray] = []

    class Keep:
        info = info(1)

        def on_tick(self, out: TickOutput) -> None:
            want_text.append((out.text_token, out.text))
            want_pcm.append(out.pcm.copy())

    slot = local.join("teller", Keep(), text_prompt=text_prompt)
    for f in frames:
        slot.push(f)
        local.tick()
    local.close()

    host = EngineHost(RecordingEvents())
    engine = EngineSupervisor(
        lambda g: host.adopt(BatchedEngine(create_model(settings), mode=TickMode.MANUAL, seed=7))
    )
    engine.start()
    host.start(engine)
    engine.load_persona(prompt)
    remote = _link(host, engine, 0)
    got_text: list[tuple[int, str]] = []
    got_pcm: list[np.ndarray] = []

    class Collect:
        info = info(1)

        def on_tick(self, out: TickOutput) -> None:
            got_text.append((out.text_token, out.text))
            got_pcm.append(out.pcm.copy())

    try:
        remote_slot = remote.join("teller", Collect(), text_prompt=text_prompt)
        for f in frames:
            remote_slot.push(f)
            assert engine.current.tick()
        assert want_pcm
        wait(lambda: len(got_pcm) == len(want_pcm))
    finally:
        remote.close()
        host.close()
        engine.close()
    assert got_text == want_text
    assert all(np.array_equal(a, b) for a, b in zip(got_pcm, want_pcm, strict=True))


class _WatchedEcho(EchoModel):
    """The echo model, noting during each step what a worker reads as the next tick."""

    def __init__(self) -> None:
        super().__init__(2)
        self.remote: RemoteEngine | None = None
        self.seen: list[tuple[float, float | None]] = []

    def step(self, *args: object, **kwargs: object) -> object:
        if self.remote is not None:
            self.seen.append((time.monotonic(), self.remote.next_tick_at()))
        return super().step(*args, **kwargs)  # type: ignore[arg-type]


def test_a_worker_never_reads_a_tick_time_in_the_past_while_a_tick_runs() -> None:
    # a frame a worker pushes during a step is the next tick's, as in one process: the header
    # must name that tick from the moment this one takes its frames, not only after the step
    model = _WatchedEcho()
    host = EngineHost(RecordingEvents())
    engine = EngineSupervisor(lambda g: host.adopt(BatchedEngine(model)))
    engine.start()
    host.start(engine)
    engine.load_persona(PersonaPrompt("teller", "", "NATF0"))
    remote = _link(host, engine, 0)
    try:
        slot = remote.join("teller", Sink(info(1)))  # the engine steps while a call is in
        model.remote = remote
        wait(lambda: len(model.seen) >= 4, timeout_s=3.0)
        slot.leave()
    finally:
        model.remote = None
        remote.close()
        host.close()
        engine.close()
    for now, next_at in model.seen[1:]:  # the first may precede the first publish
        assert next_at is not None and next_at > now
