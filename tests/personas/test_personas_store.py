"""PersonaStore / NumbersStore: edits picked up, broken edits keep the last good version."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from personas_helpers import NUMBERS_FILE, PERSONAS_DIR, wait_until, write_wav
from prometheus_client import CollectorRegistry

from voicegate.config import Settings
from voicegate.errors import RoutingError, UnknownPersona
from voicegate.personas import NumbersStore, Persona, PersonaStore

GOOD = "description: {d}\ntext_prompt: You help.\nvoice: NATF0\n"
BROKEN = "description: broken\ntext_prompt: 'unclosed\nvoice: NATF0\n"


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Persona | None]] = []
        self.refuse: str | None = None

    def __call__(self, name: str, persona: Persona | None) -> None:
        if self.refuse is not None and persona is not None and self.refuse in persona.description:
            raise RuntimeError("voice prompt failed to encode")
        self.calls.append((name, persona))


def errors_total(registry: CollectorRegistry, name: str) -> float:
    value = registry.get_sample_value("voicegate_persona_reload_errors_total", {"persona": name})
    return value or 0.0


def broken_gauge(registry: CollectorRegistry, name: str) -> float | None:
    return registry.get_sample_value("voicegate_persona_broken", {"persona": name})


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    folder = tmp_path / "personas"
    folder.mkdir()
    (folder / "alpha.yaml").write_text(GOOD.format(d="alpha v1"))
    (folder / "beta.yaml").write_text(GOOD.format(d="beta v1"))
    return folder


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def store(folder: Path, registry: CollectorRegistry, recorder: Recorder) -> Iterator[PersonaStore]:
    store = PersonaStore(folder, registry=registry, interval_s=0.05, on_change=recorder, settle_s=0)
    assert store.load() == []
    yield store
    store.close()


def test_first_load_reports_each_persona_to_on_change(
    store: PersonaStore, recorder: Recorder, registry: CollectorRegistry
) -> None:
    assert store.names() == ["alpha", "beta"]
    assert sorted(name for name, _ in recorder.calls) == ["alpha", "beta"]
    assert store.get("alpha").description == "alpha v1"
    assert registry.get_sample_value("voicegate_personas_loaded") == 2
    with pytest.raises(UnknownPersona, match="no persona 'gamma' is loaded"):
        store.get("gamma")


def test_edit_is_visible_to_new_lookups_on_the_polling_thread(
    store: PersonaStore, folder: Path, recorder: Recorder
) -> None:
    store.start()
    (folder / "alpha.yaml").write_text(GOOD.format(d="alpha v2"))
    assert wait_until(lambda: store.get("alpha").description == "alpha v2")
    assert recorder.calls[-1][0] == "alpha"
    assert recorder.calls[-1][1] is not None and recorder.calls[-1][1].description == "alpha v2"


def test_same_size_same_mtime_edit_is_caught_by_the_hash(store: PersonaStore, folder: Path) -> None:
    path = folder / "alpha.yaml"
    before = os.stat(path)
    path.write_text(GOOD.format(d="alpha v9"))  # same length as "alpha v1"
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert os.stat(path).st_size == before.st_size
    assert store.poll() is True
    assert store.get("alpha").description == "alpha v9"


def test_unchanged_folder_reloads_nothing(store: PersonaStore, recorder: Recorder) -> None:
    calls = len(recorder.calls)
    assert store.poll() is False and store.poll() is False
    assert len(recorder.calls) == calls


def test_broken_edit_keeps_last_good_and_reports_then_recovers(
    store: PersonaStore,
    folder: Path,
    registry: CollectorRegistry,
    recorder: Recorder,
    caplog: pytest.LogCaptureFixture,
) -> None:
    store.start()
    calls = len(recorder.calls)
    path = folder / "alpha.yaml"
    path.write_text(BROKEN)
    assert wait_until(lambda: errors_total(registry, "alpha") == 1)
    assert store.get("alpha").description == "alpha v1"  # last good still serves
    assert broken_gauge(registry, "alpha") == 1 and broken_gauge(registry, "beta") == 0
    detail = store.readiness_detail()
    assert list(detail) == ["alpha"]
    assert detail["alpha"].startswith(f"{path}:4:1: error: YAML syntax")
    assert detail["alpha"].endswith("serving the last good version")
    assert store.readiness_check() is None  # still ready
    assert any(f"{path}:4:1: error: YAML syntax" in r.getMessage() for r in caplog.records)
    assert len(recorder.calls) == calls  # the engine never saw the broken version
    # the same broken version is counted once, however often it is polled
    for _ in range(3):
        store.poll()
    assert errors_total(registry, "alpha") == 1
    # a second, different broken version counts again
    path.write_text("description: still broken\ntext_promt: x\nvoice: NATF0\n")
    assert wait_until(lambda: errors_total(registry, "alpha") == 2)
    assert "did you mean 'text_prompt'" in store.readiness_detail()["alpha"] or any(
        p.suggestion == "text_prompt" for p in store.problems()
    )
    path.write_text(GOOD.format(d="alpha v3"))
    assert wait_until(lambda: store.get("alpha").description == "alpha v3")
    assert wait_until(lambda: broken_gauge(registry, "alpha") == 0)
    assert store.readiness_detail() == {}
    assert errors_total(registry, "alpha") == 2


def test_fix_back_to_the_last_good_content_clears_the_problem(
    store: PersonaStore, folder: Path, registry: CollectorRegistry, recorder: Recorder
) -> None:
    path = folder / "alpha.yaml"
    good = path.read_text()
    path.write_text(BROKEN)
    store.poll()
    assert broken_gauge(registry, "alpha") == 1
    calls = len(recorder.calls)
    path.write_text(good)
    store.poll()
    assert broken_gauge(registry, "alpha") == 0 and store.readiness_detail() == {}
    assert len(recorder.calls) == calls  # same content as the version the engine has


def test_new_and_deleted_files(store: PersonaStore, folder: Path, recorder: Recorder) -> None:
    (folder / "gamma.yml").write_text(GOOD.format(d="gamma"))
    (folder / "beta.yaml").unlink()
    (folder / "notes.txt").write_text("not a persona")
    assert store.poll() is True
    assert store.names() == ["alpha", "gamma"]
    assert ("beta", None) in recorder.calls
    with pytest.raises(UnknownPersona):
        store.get("beta")


def test_broken_new_file_is_not_loaded_and_reported(
    store: PersonaStore, folder: Path, registry: CollectorRegistry
) -> None:
    (folder / "delta.yaml").write_text(BROKEN)
    store.poll()
    assert not store.has("delta")
    assert store.readiness_detail()["delta"].endswith("not loaded")
    assert errors_total(registry, "delta") == 1 and store.readiness_check() is None


def test_engine_refusal_keeps_the_last_good_version(
    store: PersonaStore, folder: Path, recorder: Recorder, registry: CollectorRegistry
) -> None:
    recorder.refuse = "poison"
    (folder / "alpha.yaml").write_text(GOOD.format(d="alpha poison"))
    store.poll()
    assert store.get("alpha").description == "alpha v1"
    assert (
        "the engine refused this version: voice prompt failed" in store.readiness_detail()["alpha"]
    )
    assert errors_total(registry, "alpha") == 1


def test_duplicate_names_are_an_error(
    store: PersonaStore, folder: Path, registry: CollectorRegistry
) -> None:
    (folder / "alpha.yml").write_text(GOOD.format(d="alpha yml"))
    store.poll()
    assert store.get("alpha").description == "alpha v1"
    assert "is also defined by alpha.yaml" in store.readiness_detail()["alpha"]
    (folder / "alpha.yml").unlink()
    store.poll()
    assert store.has("alpha") and store.readiness_detail() == {}
    assert broken_gauge(registry, "alpha") == 0


def test_editing_only_the_voice_clip_reloads(
    store: PersonaStore, folder: Path, recorder: Recorder
) -> None:
    write_wav(folder / "voices" / "v.wav", 3.0)
    (folder / "alpha.yaml").write_text("description: d\ntext_prompt: t\nvoice: voices/v.wav\n")
    store.poll()
    first = store.get("alpha")
    assert first.voice_path is not None
    write_wav(folder / "voices" / "v.wav", 4.0)
    assert store.poll() is True
    second = store.get("alpha")
    assert second.digest != first.digest and recorder.calls[-1] == ("alpha", second)
    write_wav(folder / "voices" / "v.wav", 1.0)  # too short: the clip breaks the persona
    store.poll()
    assert store.get("alpha") == second
    assert "clip is 1.00 s long" in store.readiness_detail()["alpha"]


def test_readiness_when_nothing_loads(tmp_path: Path) -> None:
    empty = PersonaStore(tmp_path, settle_s=0)
    empty.load()
    assert empty.readiness_check() == f"no persona files in {tmp_path}"
    (tmp_path / "x.yaml").write_text(BROKEN)
    empty.poll()
    reason = empty.readiness_check()
    assert reason is not None and reason.startswith("no persona loaded: ")


def test_missing_folder_does_not_raise(tmp_path: Path) -> None:
    store = PersonaStore(tmp_path / "absent")
    assert store.load() == [] and store.names() == []
    assert store.readiness_check() is not None


def test_folder_vanishing_keeps_the_loaded_personas(
    store: PersonaStore, folder: Path, recorder: Recorder
) -> None:
    moved = folder.with_name("moved")
    folder.rename(moved)
    calls = len(recorder.calls)
    assert store.poll() is False
    assert store.names() == ["alpha", "beta"] and len(recorder.calls) == calls
    assert store.readiness_detail() == {str(folder): "folder missing; keeping the loaded personas"}
    moved.rename(folder)
    (folder / "beta.yaml").unlink()
    assert store.poll() is True
    assert store.names() == ["alpha"] and store.readiness_detail() == {}


def test_a_crashing_poll_never_stops_the_loop(folder: Path, registry: CollectorRegistry) -> None:
    seen: list[str] = []

    def flaky(name: str, persona: Persona | None) -> None:
        seen.append(name)

    store = PersonaStore(folder, registry=registry, interval_s=0.02, on_change=flaky)
    store.load()
    original = store._poll  # documented seam: the poll body
    failures = {"left": 3}

    def failing_poll() -> bool:
        if failures["left"]:
            failures["left"] -= 1
            raise OSError("disk hiccup")
        return original()

    store._poll = failing_poll  # type: ignore[method-assign]
    store.start()
    try:
        (folder / "alpha.yaml").write_text(GOOD.format(d="alpha v5"))
        assert wait_until(lambda: store.get("alpha").description == "alpha v5")
    finally:
        store.close()


# --- numbers ---


@pytest.fixture
def numbers_file(tmp_path: Path) -> Path:
    path = tmp_path / "numbers.yaml"
    path.write_text('default: alpha\nnumbers:\n  "+14155550100": beta\nsip_users:\n  b: beta\n')
    return path


def test_numbers_store_routes_and_reloads(
    store: PersonaStore, numbers_file: Path, registry: CollectorRegistry
) -> None:
    numbers = NumbersStore(numbers_file, store, registry=registry, interval_s=0.05)
    assert numbers.load() == []
    assert numbers.route("+1 415 555 0100") == "beta" and numbers.route("x") == "alpha"
    assert numbers.readiness_check() is None
    numbers.start()
    try:
        numbers_file.write_text('default: beta\nnumbers:\n  "+14155550100": alpha\n')
        assert wait_until(lambda: numbers.route("tel:+14155550100") == "alpha")
        numbers_file.write_text('default: betta\nnumbers:\n  "+1415": alpha\n')
        assert wait_until(
            lambda: registry.get_sample_value("voicegate_numbers_reload_errors_total") == 1
        )
        assert registry.get_sample_value("voicegate_numbers_broken") == 1
        assert numbers.route("+14155550100") == "alpha"  # last good map still routes
        detail = numbers.readiness_detail()
        assert detail is not None and "routing by the last good version" in detail
        messages = [str(p) for p in numbers.problems()]
        assert (
            f"{numbers_file}:1:10: error: unknown persona 'betta' (known: alpha, beta) (did you mean 'beta'?)"
            in messages
        )
    finally:
        numbers.close()


def test_numbers_waiting_for_a_persona_load_once_it_appears(
    store: PersonaStore, folder: Path, tmp_path: Path
) -> None:
    path = tmp_path / "n.yaml"
    path.write_text("default: gamma\n")
    numbers = NumbersStore(path, store)
    problems = numbers.load()
    assert [p.suggestion for p in problems] == [None] and not numbers.is_loaded
    assert numbers.readiness_check() is not None
    with pytest.raises(RoutingError):
        numbers.route("x")
    (folder / "gamma.yaml").write_text(GOOD.format(d="gamma"))
    store.poll()
    assert numbers.poll() is True and numbers.route("x") == "gamma"


def test_route_to_an_unloaded_persona_falls_back_to_default(
    store: PersonaStore, folder: Path, numbers_file: Path
) -> None:
    numbers = NumbersStore(numbers_file, store)
    numbers.load()
    (folder / "beta.yaml").unlink()
    store.poll()
    assert numbers.route("+14155550100") == "alpha"


def test_default_persona_gone_makes_numbers_unready(
    store: PersonaStore, folder: Path, numbers_file: Path
) -> None:
    numbers = NumbersStore(numbers_file, store)
    numbers.load()
    (folder / "alpha.yaml").unlink()
    store.poll()
    assert numbers.readiness_check() == f"default persona 'alpha' of {numbers_file} is not loaded"


# --- /readyz ---


async def test_readyz_shows_a_broken_persona_as_detail_and_stays_ready(
    tmp_path: Path, registry: CollectorRegistry
) -> None:
    folder = tmp_path / "personas"
    shutil.copytree(PERSONAS_DIR, folder)
    numbers_file = tmp_path / "numbers.yaml"
    shutil.copy(NUMBERS_FILE, numbers_file)
    store = PersonaStore(folder, registry=registry, settle_s=0)
    store.load()
    numbers = NumbersStore(numbers_file, store, registry=registry)
    numbers.load()
    from voicegate.app import create_app  # the whole gateway module: import only where used

    app = create_app(Settings(), registry)
    app.state.readiness.add("personas", store.readiness_check)
    app.state.readiness.add_detail("personas", store.readiness_detail)
    app.state.readiness.add("numbers", numbers.readiness_check)
    app.state.readiness.add_detail("numbers", numbers.readiness_detail)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        assert (await client.get("/readyz")).json() == {
            "ready": True,
            "problems": {},
            "details": {},
        }
        (folder / "wise_teacher.yaml").write_text(BROKEN)
        store.poll()
        body = (await client.get("/readyz")).json()
        assert body["ready"] is True
        assert body["details"]["personas"]["wise_teacher"].endswith("serving the last good version")
        metrics = (await client.get("/metrics")).text
        assert 'voicegate_persona_reload_errors_total{persona="wise_teacher"} 1.0' in metrics
        assert 'voicegate_persona_broken{persona="wise_teacher"} 1.0' in metrics
        (folder / "support_agent.yaml").unlink()  # the numbers default
        store.poll()
        response = await client.get("/readyz")
        assert response.status_code == 503
        assert "support_agent" in response.json()["problems"]["numbers"]


def test_adding_the_missing_clip_later_loads_the_persona(store: PersonaStore, folder: Path) -> None:
    (folder / "gamma.yaml").write_text("description: d\ntext_prompt: t\nvoice: voices/g.wav\n")
    store.poll()
    assert not store.has("gamma") and "not found" in store.readiness_detail()["gamma"]
    write_wav(folder / "voices" / "g.wav", 3.0)
    assert store.poll() is True
    assert store.get("gamma").voice_path == (folder / "voices" / "g.wav").resolve()
    assert store.readiness_detail() == {}


def test_on_change_failing_for_a_removal_still_removes(folder: Path) -> None:
    def refuse_removals(name: str, persona: Persona | None) -> None:
        if persona is None:
            raise RuntimeError("engine busy")

    store = PersonaStore(folder, on_change=refuse_removals)
    store.load()
    (folder / "beta.yaml").unlink()
    assert store.poll() is True and store.names() == ["alpha"]


def test_a_half_written_file_is_read_again_before_it_is_reported(
    folder: Path, registry: CollectorRegistry
) -> None:
    store = PersonaStore(folder, registry=registry, settle_s=60)
    store.load()
    path = folder / "alpha.yaml"
    path.write_text("description: alpha v2\ntext_prompt: 'You h")  # caught mid-write
    assert store.poll() is False
    assert errors_total(registry, "alpha") == 0 and store.readiness_detail() == {}
    path.write_text(GOOD.format(d="alpha v2"))  # the write completes
    assert store.poll() is True and store.get("alpha").description == "alpha v2"
    assert errors_total(registry, "alpha") == 0
    path.write_text(BROKEN)  # really broken: reported on the second look
    store.poll()
    assert errors_total(registry, "alpha") == 0
    store.poll()
    assert errors_total(registry, "alpha") == 1 and "alpha" in store.readiness_detail()


def test_broken_files_at_startup_are_reported_at_once(tmp_path: Path) -> None:
    (tmp_path / "x.yaml").write_text(BROKEN)
    registry = CollectorRegistry()
    store = PersonaStore(tmp_path, registry=registry, settle_s=60)
    assert [p.line for p in store.load()] == [4]
    assert errors_total(registry, "x") == 1 and "x" in store.readiness_detail()
