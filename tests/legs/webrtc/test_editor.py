"""The persona editing API behind the page: validation as the CLI, atomic saves, versions, reload."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from voicegate.audio import caller_wav_path
from voicegate.legs.webrtc.sim import WebRtcCaller, read_wav_48k
from voicegate.personas import PersonaStore, has_errors, validate_paths
from voicegate.personas.schema import Persona
from voicegate.web import editor as editor_module
from voicegate.web.editor import PersonaEditor

from ..gateway import REPO, serving
from .webrtc_helpers import EDITOR_TOKEN, WEBRTC_TOKEN, WebRtcGateway, start_webrtc_gateway

EDIT = {"Authorization": f"Bearer {EDITOR_TOKEN}"}
CALL = {"Authorization": f"Bearer {WEBRTC_TOKEN}"}


@pytest.fixture(scope="module")
def edit_gateway(
    redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WebRtcGateway]:
    tmp = tmp_path_factory.mktemp("gw-edit")
    personas = tmp / "personas"
    shutil.copytree(REPO / "personas", personas)
    # no background polling: whatever is served after a save was loaded by the save itself
    yield from serving(
        start_webrtc_gateway(redis_url, tmp, personas_dir=personas, reload_interval_s=3600)
    )


@pytest.fixture
def http(edit_gateway: WebRtcGateway) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=edit_gateway.base_url, trust_env=False, timeout=10) as client:
        yield client


def cli_lines(text: str, name: str, tmp: Path, personas_dir: Path) -> list[str]:
    """What ``voicegate personas validate`` prints for ``text`` as persona ``name``."""
    path = tmp / f"{name}.yaml"
    path.write_text(text)
    return [str(p) for p in validate_paths([path], personas_dir=personas_dir)]


def test_editing_needs_the_editor_token(http: httpx.Client) -> None:
    for headers in ({}, CALL, {"Authorization": "Bearer nope"}):
        assert http.get("/api/personas/bank_teller", headers=headers).status_code == 401
        assert (
            http.post(
                "/api/personas/bank_teller/validate", content="x", headers=headers
            ).status_code
            == 401
        )
        assert (
            http.put("/api/personas/bank_teller", content="x", headers=headers).status_code == 401
        )
    assert http.get("/api/personas").status_code == 401
    names = [p["name"] for p in http.get("/api/personas", headers=CALL).json()["personas"]]
    assert "bank_teller" in names and names == sorted(names)
    assert http.get("/api/personas/../etc", headers=EDIT).status_code in (400, 404)
    assert http.get("/api/personas/Bad Name", headers=EDIT).status_code == 400


def test_the_page_is_served(http: httpx.Client) -> None:
    page = http.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "/static/app.js" in page.text
    js = http.get("/static/app.js")
    assert js.status_code == 200 and "RTCPeerConnection" in js.text
    assert http.get("/static/style.css").status_code == 200
    assert http.get("/static/editor.py").status_code == 404


@pytest.mark.parametrize(
    "mutate",
    [
        lambda t: t.replace("text_prompt:", "text_promt:", 1),  # unknown key, suggestion
        lambda t: t.replace("voice: ", "voice: NATF9\n#", 1),  # unknown voice preset
        lambda t: t + "limits: [\n",  # YAML syntax error
        lambda t: t.replace("text_prompt:", "prompt:", 1) + "sampling:\n  text_top_k: -3\n",
    ],
)
def test_validate_reports_what_the_cli_reports(
    http: httpx.Client, edit_gateway: WebRtcGateway, tmp_path: Path, mutate: object
) -> None:
    original = (edit_gateway.personas_dir / "bank_teller.yaml").read_text()
    text = mutate(original)  # type: ignore[operator]
    body = http.post("/api/personas/bank_teller/validate", content=text, headers=EDIT).json()
    assert body["ok"] is False
    expected = cli_lines(text, "bank_teller", tmp_path, edit_gateway.personas_dir)
    shown = [p["text"] for p in body["problems"]]
    assert shown == [
        line.replace(
            str(tmp_path / "bank_teller.yaml"), str(edit_gateway.personas_dir / "bank_teller.yaml")
        )
        for line in expected
    ]
    assert all(p["line"] >= 1 and p["col"] >= 1 for p in body["problems"])
    ok = http.post("/api/personas/bank_teller/validate", content=original, headers=EDIT).json()
    assert ok["ok"] is True


def test_an_invalid_persona_is_never_saved(http: httpx.Client, edit_gateway: WebRtcGateway) -> None:
    path = edit_gateway.personas_dir / "support_agent.yaml"
    before, mtime = path.read_bytes(), path.stat().st_mtime_ns
    resp = http.put(
        "/api/personas/support_agent", content=before.decode() + "bogus: 1\n", headers=EDIT
    )
    assert resp.status_code == 422
    assert any("unknown key 'bogus'" in p["text"] for p in resp.json()["problems"])
    assert path.read_bytes() == before and path.stat().st_mtime_ns == mtime
    assert not (edit_gateway.personas_dir / ".versions" / "support_agent").exists()
    assert not [p for p in edit_gateway.personas_dir.iterdir() if p.name.startswith(".support")]


def test_a_valid_save_is_atomic_keeps_the_old_version_and_serves_at_once(
    http: httpx.Client, edit_gateway: WebRtcGateway
) -> None:
    folder = edit_gateway.personas_dir
    path = folder / "mars_astronaut.yaml"
    before = path.read_text()
    edited = before.replace("description: ", "description: Edited. ", 1)
    resp = http.put("/api/personas/mars_astronaut", content=edited, headers=EDIT)
    assert resp.status_code == 200, resp.text
    assert resp.json()["ok"] and resp.json()["file"] == "mars_astronaut.yaml"
    assert path.read_text() == edited
    versions = list((folder / ".versions" / "mars_astronaut").iterdir())
    assert len(versions) == 1 and versions[0].read_text() == before
    assert resp.json()["backup"] == str(versions[0].relative_to(folder))
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]
    # served now, although the store's own polling is off (interval 3600 s)
    persona = edit_gateway.app.state.parts.personas.get("mars_astronaut")
    assert persona.description.startswith("Edited. ")
    listed = http.get("/api/personas", headers=CALL).json()["personas"]
    assert any(p["description"].startswith("Edited. ") for p in listed)
    assert http.get("/api/personas/mars_astronaut", headers=EDIT).json()["yaml"] == edited


async def test_a_new_persona_saved_from_the_page_can_be_called_at_once(
    edit_gateway: WebRtcGateway,
) -> None:
    text = (edit_gateway.personas_dir / "wise_teacher.yaml").read_text()
    async with httpx.AsyncClient(base_url=edit_gateway.base_url, trust_env=False) as http:
        assert (await http.get("/api/personas/page_made", headers=EDIT)).status_code == 404
        resp = await http.put("/api/personas/page_made", content=text, headers=EDIT)
        assert resp.status_code == 200, resp.text
        assert resp.json()["backup"] is None
    assert (edit_gateway.personas_dir / "page_made.yaml").read_text() == text
    pcm = read_wav_48k(caller_wav_path(24000))[: 48000 * 2]
    async with WebRtcCaller(edit_gateway.base_url, WEBRTC_TOKEN, pcm) as caller:
        await caller.call("page_made")
        await caller.wait_received(ms=200)
    events = await edit_gateway.events(caller.call_id)
    assert events[0]["type"] == "call.started" and events[0]["persona"] == "page_made"
    await edit_gateway.wait_idle()


def test_a_version_the_engine_refuses_is_rolled_back(tmp_path: Path) -> None:
    folder = tmp_path / "personas"
    folder.mkdir()
    original = (REPO / "personas" / "wise_teacher.yaml").read_text()
    (folder / "wise_teacher.yaml").write_text(original)

    def on_change(name: str, persona: Persona | None) -> None:
        if persona is not None and "REFUSE" in persona.text_prompt:
            raise ValueError("prompt does not fit the model context")

    store = PersonaStore(folder, interval_s=3600, on_change=on_change)
    store.load()
    editor = PersonaEditor(store)
    refused = original.replace("text_prompt: >-\n", "text_prompt: >-\n  REFUSE\n", 1)
    assert refused != original and not has_errors(editor.validate("wise_teacher", refused))
    result = asyncio.run(editor.save("wise_teacher", refused))
    assert not result.ok
    assert any("does not fit the model context" in p.message for p in result.problems)
    assert (folder / "wise_teacher.yaml").read_text() == original
    assert "REFUSE" not in store.get("wise_teacher").text_prompt
    assert store.broken() == {}
    # a new persona the engine refuses leaves no file behind
    result = asyncio.run(editor.save("refused_new", refused))
    assert not result.ok and not (folder / "refused_new.yaml").exists()


def test_only_the_newest_versions_are_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(editor_module, "KEEP_VERSIONS", 2)
    folder = tmp_path / "personas"
    folder.mkdir()
    base = (REPO / "personas" / "wise_teacher.yaml").read_text()
    (folder / "wise_teacher.yaml").write_text(base)
    store = PersonaStore(folder, interval_s=3600)
    store.load()
    editor = PersonaEditor(store)
    texts = [base.replace("description: ", f"description: v{i} ", 1) for i in range(1, 4)]
    for text in texts:
        assert asyncio.run(editor.save("wise_teacher", text)).ok
    kept = [p.read_text() for p in editor.versions("wise_teacher")]
    assert kept == [texts[0], texts[1]]  # base (the oldest previous version) was pruned
    assert store.get("wise_teacher").description.startswith("v3 ")


def test_a_failing_write_is_reported_and_replaces_nothing(
    http: httpx.Client, edit_gateway: WebRtcGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = edit_gateway.personas_dir
    before = (folder / "bank_teller.yaml").read_text()

    def read_only(path: Path, data: bytes) -> None:
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(editor_module, "_write_atomically", read_only)
    resp = http.put("/api/personas/bank_teller", content=before + "# x\n", headers=EDIT)
    assert resp.status_code == 500, resp.text
    assert resp.json()["detail"] == "cannot write the persona file: Read-only file system"
    assert (folder / "bank_teller.yaml").read_text() == before
