"""The caller's words on the page: a browser (headless chromium, fake microphone) calls a
persona over WebRTC into the tiny engine with the tiny caller STT; the page shows the caller's
segments beside the agent's, and they equal the transcript.caller events in Redis."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from voicegate.audio import caller_wav_path
from voicegate.engine.synthetic import make_asr_dir

from .browser import Chromium
from .webrtc_helpers import EDITOR_TOKEN, WEBRTC_TOKEN, WebRtcGateway, start_webrtc_gateway

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stt_gateway(
    redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WebRtcGateway]:
    tmp = tmp_path_factory.mktemp("gw-browser-stt")
    files = make_asr_dir(tmp / "asr", seed=7)
    gw = start_webrtc_gateway(redis_url, tmp, engine="tiny", asr_model_dir=files.root)
    try:
        yield gw
    finally:
        gw.server.stop()


async def test_the_page_shows_the_callers_words(stt_gateway: WebRtcGateway, tmp_path: Path) -> None:
    gw = stt_gateway
    url = f"{gw.base_url}/#call_token={WEBRTC_TOKEN}&editor_token={EDITOR_TOKEN}"
    async with Chromium(url, fake_mic_wav=caller_wav_path(24000), workdir=tmp_path) as page:
        await page.wait_for("document.getElementById('persona').options.length >= 5")
        await page.evaluate(
            "document.getElementById('persona').value = 'bank_teller';"
            "document.getElementById('call').click()"
        )
        await page.wait_for("vg.state.startsWith('in call')", timeout_s=10)
        call_id = await page.evaluate("vg.callId")
        # interim caller lines appear while the call runs
        await page.wait_for(
            "document.querySelectorAll('#transcript li.caller').length > 0", timeout_s=15
        )
        await page.evaluate("document.getElementById('hangup').click()")
        await page.wait_for("vg.ended", timeout_s=10)
        caller = await page.evaluate("vg.callerTranscript")
        lines = await page.evaluate(
            "[...document.querySelectorAll('#transcript li.caller')].map(li => li.textContent)"
        )
    assert caller and all(caller)
    assert ["Caller: " + t for t in caller] == lines[: len(caller)]
    await gw.wait_idle()
    events = await gw.events(call_id)
    final = [e["text"] for e in events if e["type"] == "transcript.caller" and e["final"] == "true"]
    assert final == caller
