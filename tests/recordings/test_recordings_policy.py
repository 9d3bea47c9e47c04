"""Which calls are recorded (numbers entry > persona > numbers default), the announcement
clip, the persona and numbers schema checks, and the retention sweep."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import numpy as np
import pytest

from voicegate.audio import write_wav
from voicegate.contracts import CallInfo
from voicegate.errors import RecordingError
from voicegate.personas.loader import read_persona
from voicegate.personas.numbers import Router, read_numbers
from voicegate.personas.schema import RecordingSpec
from voicegate.recordings import RecordingPolicy, sweep

PERSONA = """description: A test persona.
text_prompt: You answer the phone.
voice: NATF0
"""


def _personas(tmp_path: Path) -> Path:
    folder = tmp_path / "personas"
    (folder / "voices").mkdir(parents=True)
    t = np.arange(24_000) / 24_000
    write_wav(folder / "voices" / "consent.wav", (0.3 * np.sin(2 * np.pi * 500 * t)), 24_000)
    return folder


def test_persona_recording_section_is_checked(tmp_path: Path) -> None:
    folder = _personas(tmp_path)
    good = folder / "good.yaml"
    good.write_text(PERSONA + "recording: {enabled: true, announcement: voices/consent.wav}\n")
    persona, problems = read_persona(good)
    assert persona is not None, problems
    assert persona.recording == RecordingSpec(enabled=True, announcement="voices/consent.wav")
    assert persona.announcement_path == (folder / "voices" / "consent.wav").resolve()
    for text, message in [
        ("recording: {enabled: true, announcement: voices/none.wav}\n", "not found"),
        ("recording: {enabled: true, announcement: ../x.wav}\n", "leaves the personas folder"),
        ("recording: {enabled: yes please}\n", "recording.enabled"),
        ("recording: {enabled: true, annoucement: voices/consent.wav}\n", "annoucement"),
    ]:
        bad = folder / "bad.yaml"
        bad.write_text(PERSONA + text)
        persona, problems = read_persona(bad)
        assert persona is None
        assert any(message in str(p) for p in problems), (text, [str(p) for p in problems])
        assert all(p.line >= 4 for p in problems if p.is_error)  # placed on the recording line


def test_numbers_recording_table(tmp_path: Path) -> None:
    path = tmp_path / "numbers.yaml"
    path.write_text(
        "default: a\nrecording:\n  default: {enabled: true}\n"
        '  "+14155550100": {enabled: false}\n  teller: {enabled: true, announcement: v/c.wav}\n'
    )
    numbers, problems = read_numbers(path, {"a"})
    assert numbers is not None, problems
    router = Router(numbers)
    assert router.recording("+1 415 555 0100") == (
        RecordingSpec(enabled=False),
        RecordingSpec(enabled=True),
    )
    assert router.recording("sip:teller@gw")[0] == RecordingSpec(
        enabled=True, announcement="v/c.wav"
    )
    assert router.recording("+19995550000")[0] is None
    path.write_text("default: a\nrecording:\n  'not a key!': {enabled: true}\n")
    numbers, problems = read_numbers(path, {"a"})
    assert numbers is None and "recording key 'not a key!'" in str(problems[0])


class _Persona:
    def __init__(self, recording: RecordingSpec | None) -> None:
        self.recording = recording


def _policy(
    tmp_path: Path,
    entry: RecordingSpec | None,
    persona: RecordingSpec | None,
    default: RecordingSpec | None,
) -> RecordingPolicy:
    return RecordingPolicy(
        tmp_path / "rec",
        _personas(tmp_path) if not (tmp_path / "personas").exists() else tmp_path / "personas",
        persona_of=lambda name: _Persona(persona),
        numbers_of=lambda to: (entry, default),
    )


ON = RecordingSpec(enabled=True)
OFF = RecordingSpec(enabled=False)


@pytest.mark.parametrize(
    ("entry", "persona", "default", "is_recorded"),
    [
        (None, None, None, False),
        (None, None, ON, True),
        (None, OFF, ON, False),  # the persona's section wins over the numbers default
        (OFF, ON, ON, False),  # the number's own entry wins over everything
        (ON, OFF, OFF, True),
    ],
)
def test_precedence(
    tmp_path: Path,
    entry: RecordingSpec | None,
    persona: RecordingSpec | None,
    default: RecordingSpec | None,
    is_recorded: bool,
) -> None:
    plan = _policy(tmp_path, entry, persona, default)(CallInfo("CA1", "twilio", "p"), 8000)
    assert (plan is not None) == is_recorded
    if plan is not None:
        assert plan.path.parent.parent == tmp_path / "rec" and plan.path.name == "CA1.wav"
        assert plan.announcement is None


def test_announcement_is_resampled_to_the_leg_and_cached(tmp_path: Path) -> None:
    spec = RecordingSpec(enabled=True, announcement="voices/consent.wav")
    policy = _policy(tmp_path, spec, None, None)
    plan = policy(CallInfo("CA2", "sip", "p"), 8000)
    assert plan is not None and plan.announcement is not None
    clip = plan.announcement
    assert clip.dtype == np.int16 and len(clip) == 8000  # 1 s at the leg's rate
    assert 0.28 * 32767 < np.abs(clip).max() < 0.32 * 32767
    again = policy(CallInfo("CA3", "sip", "p"), 8000)
    assert again is not None and again.announcement is clip  # read once per version and rate
    wide = policy(CallInfo("CA4", "webrtc", "p"), 48_000)
    assert wide is not None and wide.announcement is not None and len(wide.announcement) == 48_000


def test_a_missing_announcement_is_an_error(tmp_path: Path) -> None:
    spec = RecordingSpec(enabled=True, announcement="voices/gone.wav")
    with pytest.raises(RecordingError, match="gone.wav"):
        _policy(tmp_path, spec, None, None)(CallInfo("CA5", "sip", "p"), 8000)


def test_retention_sweep_deletes_old_recordings_only(tmp_path: Path) -> None:
    folder = tmp_path / "rec"
    old_day, new_day = folder / "2026-10-01", folder / "2026-12-03"
    old_day.mkdir(parents=True)
    new_day.mkdir()
    now = time.time()
    old = old_day / "CAold.wav"
    new = new_day / "CAnew.wav"
    other = new_day / "notes.txt"
    for path in (old, new, other):
        path.write_bytes(b"x")
    os.utime(old, (now - 31 * 86400, now - 31 * 86400))
    os.utime(other, (now - 90 * 86400, now - 90 * 86400))
    assert sweep(folder, retention_s=30 * 86400, now_s=now) == 1
    assert not old.exists() and not old_day.exists()  # its empty day folder too
    assert new.exists() and other.exists()  # only recordings are ours to delete
    assert sweep(tmp_path / "none", retention_s=1) == 0


async def test_the_sweeper_runs_periodically(tmp_path: Path) -> None:
    from voicegate.recordings import RetentionSweeper

    folder = tmp_path / "rec" / "2026-01-01"
    folder.mkdir(parents=True)
    sweeper = RetentionSweeper(tmp_path / "rec", retention_s=3600, interval_s=0.05)
    sweeper.start()
    try:
        for _ in range(200):
            if sweeper.sweeps >= 2:
                break
            await asyncio.sleep(0.02)
        old = folder / "CAlate.wav"  # appears after the first sweeps: a later one removes it
        folder.mkdir(parents=True, exist_ok=True)  # the first sweep removed the empty day
        old.write_bytes(b"x")
        os.utime(old, (time.time() - 7200, time.time() - 7200))
        for _ in range(200):  # the count follows the sweep that deleted it (a thread's)
            if not old.exists() and sweeper.removed == 1:
                break
            await asyncio.sleep(0.02)
        assert not old.exists() and sweeper.removed == 1
    finally:
        await sweeper.aclose()


def test_numbers_announcements_are_checked_against_the_personas_folder(tmp_path: Path) -> None:
    folder = _personas(tmp_path)
    path = tmp_path / "numbers.yaml"
    path.write_text(
        "default: a\nrecording:\n"
        '  "+14155550100": {enabled: true, announcement: voices/consent.wav}\n'
        '  "+14155550101": {enabled: true, announcement: voices/missing.wav}\n'
    )
    numbers, problems = read_numbers(path, {"a"}, folder)
    assert numbers is None
    (problem,) = problems
    assert "voices/missing.wav" in str(problem) and problem.line == 4
    assert read_numbers(path, {"a"})[0] is not None  # without a folder: not checked
