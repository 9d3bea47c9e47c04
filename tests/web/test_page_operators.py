"""The operators' views in a real browser (headless Debian chromium, no network): a live call's
timeline while a simulated Twilio call runs, a known call's timeline compared structurally (its
elements and lane segments counted, not its pixels), and the persona comparison's charts.

Screenshots of the known call and the comparison are saved under the test's tmp folder; with
``VOICEGATE_DOCS_SCREENSHOTS=1`` also to ``docs/images/`` (the README shows them).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from legs.gateway import REPO, serving
from legs.twilio.twilio_helpers import TwilioGateway, start_twilio_gateway
from legs.webrtc.browser import Chromium

from voicegate.audio import caller_speech_ms, load_caller

from .conftest import VIEWER_TOKEN
from .known_calls import (
    AGENT_SEGMENTS,
    CALLER_SAYS,
    EXPECTED,
    KNOWN_CALL_ID,
    PERSONA_MIX,
    comparison_events,
    known_call_events,
    write_events,
)

pytestmark = pytest.mark.slow

CALLED = "+14155550100"  # bank_teller
CALLER = "+15005550177"
DOCS_IMAGES = REPO / "docs" / "images"
COUNTS_JS = """(() => {
  const svg = document.querySelector('#timeline svg');
  if (!svg) return null;
  const n = (sel) => svg.querySelectorAll(sel).length;
  return {
    caller: n('.caller-lane .seg.caller:not(.open)'), open: n('.seg.caller.open'),
    agent: n('.agent-lane .seg.agent'), cut: n('.seg.agent.cut'), overlaps: n('.overlap'),
    bargeins: n('.bargein'), dtmf: n('.dtmf'), transfers: n('.transfer'), reanchors: n('.reanchor'),
    saidAgent: n('.said.agent'), saidCaller: n('.said.caller'), cutText: n('.cut-text'),
    ended: n('.end'), now: n('.now'), width: Number(svg.getAttribute('width')),
    renders: vg.ops.renders, endMs: vg.ops.view.model.endMs, title: document.getElementById('call-title').textContent,
  };
})()"""


@pytest.fixture(scope="module")
def tiny_gateway(
    redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TwilioGateway]:
    """The tiny engine (random weights that talk all the time, with text): both lanes fill."""
    yield from serving(
        start_twilio_gateway(
            redis_url,
            tmp_path_factory.mktemp("gw-ops-page"),
            engine="tiny",
            viewer_token=VIEWER_TOKEN,
            webrtc_enabled=False,
        )
    )


def page_url(base_url: str) -> str:
    return f"{base_url}/#viewer_token={VIEWER_TOKEN}"


def quiet_wav(tmp: Path) -> Path:
    # the page never calls here; chromium still wants a fake capture file
    import wave

    path = tmp / "silence.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(24000)
        w.writeframes(b"\0\0" * 2400)
    return path


async def screenshot(page: Chromium, selector: str, path: Path) -> dict[str, float]:
    """A PNG of one element (its whole box, scrolled content included)."""
    box = await page.evaluate(
        f"(() => {{ const r = document.querySelector({json.dumps(selector)})"
        ".getBoundingClientRect(); return {x: r.x + scrollX, y: r.y + scrollY, "
        "width: r.width, height: r.height}; })()"
    )
    shot = await page.send(
        "Page.captureScreenshot",
        format="png",
        captureBeyondViewport=True,
        clip={**box, "scale": 1},
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(base64.b64decode(shot["data"]))
    if os.environ.get("VOICEGATE_DOCS_SCREENSHOTS") == "1":
        DOCS_IMAGES.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, DOCS_IMAGES / path.name)
    return dict(box)


async def test_a_live_calls_timeline_appears_and_updates_while_it_runs(
    tiny_gateway: TwilioGateway, tmp_path: Path
) -> None:
    gw = tiny_gateway
    speech = load_caller(8000)
    (_, first_end), (_, second_end) = caller_speech_ms()
    async with (
        gw.simulator() as twilio,
        Chromium(page_url(gw.base_url), fake_mic_wav=quiet_wav(tmp_path), workdir=tmp_path) as page,
    ):
        await page.wait_for("window.vg && vg.ops && vg.ops.liveError === null")
        placed = await twilio.place_call(CALLER, CALLED)
        stream = await twilio.open_stream(placed)
        sid = placed.call_sid
        script = np.concatenate([speech, np.zeros(8000, np.int16)])
        playing = asyncio.ensure_future(stream.play(script))
        try:
            row = f"#live-calls tr[data-call-id={json.dumps(sid)}]"
            await page.wait_for(f"!!document.querySelector({json.dumps(row)})", timeout_s=10)
            cells = await page.evaluate(
                f"[...document.querySelector({json.dumps(row)}).cells].map(c => c.textContent)"
            )
            assert cells[:4] == [sid, "twilio", "bank_teller", CALLER]
            await page.evaluate(f"document.querySelector({json.dumps(row)}).click()")
            await page.wait_for("!!document.querySelector('#timeline svg')", timeout_s=10)
            # the caller's first sentence ends at ~4.2 s of the call: its lane segment appears
            first = await page.wait_for(
                f"(() => {{ const c = {COUNTS_JS}; return c && c.caller >= 1 && c; }})()",
                timeout_s=first_end / 1000 + 8,
            )
            assert first["now"] == 1 and first["ended"] == 0 and "live" in first["title"]
            # ... and the second sentence (ends ~6.8 s) adds one: the view updates live
            later = await page.wait_for(
                f"(() => {{ const c = {COUNTS_JS}; return c && c.caller >= 2 && c; }})()",
                timeout_s=(second_end - first_end) / 1000 + 8,
            )
            assert later["endMs"] > first["endMs"] + 1000  # the time axis grew with the call
            assert later["renders"] > first["renders"]
        finally:
            await playing
            await stream.stop()
        # the tiny engine talks without a pause: its one segment (and its text) comes with the
        # end, through the same live feed
        final = await page.wait_for(
            f"(() => {{ const c = {COUNTS_JS}; return c && c.ended === 1 && c.agent >= 1 "
            "&& c.saidAgent >= 1 && c; })()",
            timeout_s=10,
        )
        events = await gw.events(sid)
        page_ids = await page.evaluate("vg.ops.view.events.map(e => e.id)")
        loads = await page.evaluate("vg.ops.historyLoads")
        page_text = await page.evaluate(
            "[...document.querySelectorAll('#timeline .said.agent')].map(t => t.textContent)"
        )
    # what the page drew is what Redis holds
    kinds = [e["type"] for e in events]
    assert sorted(page_ids) == sorted(e["id"] for e in events)
    assert loads == 1  # read from Redis once, at opening; the rest came live
    assert final["caller"] == kinds.count("caller.speech") >= 2
    assert final["agent"] == kinds.count("transcript.agent")
    assert final["bargeins"] == kinds.count("bargein")
    assert final["cut"] == sum(
        1 for e in events if e["type"] == "transcript.agent" and e["is_heard"] == "false"
    )
    assert final["now"] == 0 and "ended: caller_hangup" in final["title"]
    texts = [
        e["text"] + (" " if e["text"] and e["cut_text"] else "") + e["cut_text"]
        for e in events
        if e["type"] == "transcript.agent"
    ]
    assert [t.strip() for t in page_text] == [t.strip() for t in texts if t.strip()]
    await gw.wait_idle()


@pytest.fixture
def private_gateway(redis_factory: Callable[..., Any], tmp_path: Path) -> Iterator[TwilioGateway]:
    """A gateway on a private Redis: the comparison holds only the calls written here."""
    url = redis_factory().url
    yield from serving(
        start_twilio_gateway(
            url,
            tmp_path / "gw",
            viewer_token=VIEWER_TOKEN,
            webrtc_enabled=False,
        )
    )


async def test_a_known_calls_timeline_and_the_persona_comparison(
    private_gateway: TwilioGateway, tmp_path: Path
) -> None:
    gw = private_gateway
    await write_events(gw.redis_url, known_call_events() + comparison_events(), tmp_path / "j")
    async with Chromium(
        page_url(gw.base_url), fake_mic_wav=quiet_wav(tmp_path), workdir=tmp_path
    ) as page:
        await page.send(
            "Emulation.setDeviceMetricsOverride",
            width=1500,
            height=1100,
            deviceScaleFactor=1,
            mobile=False,
        )
        await page.wait_for("window.vg && vg.ops && vg.ops.liveError === null")
        # the reviewer finds it in the list (persona + reason), then opens it
        await page.evaluate(
            "document.getElementById('find-persona').value = 'bank_teller';"
            "document.getElementById('find-reason').value = 'transferred';"
            "document.getElementById('find').click()"
        )
        row = f"#ended-calls tr[data-call-id={json.dumps(KNOWN_CALL_ID)}]"
        await page.wait_for(f"!!document.querySelector({json.dumps(row)})")
        listed = await page.evaluate("vg.ops.ended.map(c => [c.call_id, c.persona, c.reason])")
        assert [KNOWN_CALL_ID, "bank_teller", "transferred"] in listed
        assert {(p, r) for _, p, r in listed} == {("bank_teller", "transferred")}
        await page.evaluate(f"document.querySelector({json.dumps(row)}).click()")
        counts = await page.wait_for(
            f"(() => {{ const c = {COUNTS_JS}; return c && c.ended === 1 && c; }})()"
        )
        for key, value in EXPECTED.items():
            assert counts[key] == value, (key, counts)
        assert counts["now"] == 0 and counts["open"] == 0 and counts["reanchors"] == 0
        assert counts["saidAgent"] == len(AGENT_SEGMENTS)
        assert counts["saidCaller"] == len(CALLER_SAYS)  # the caller's words under their lane
        assert "ended: transferred" in counts["title"]
        detail = await page.evaluate(
            """(() => { const svg = document.querySelector('#timeline svg'); return {
              bargein: svg.querySelector('.bargein-label').textContent,
              digits: [...svg.querySelectorAll('.dtmf text')].map(t => t.textContent).join(''),
              cut: [...svg.querySelectorAll('.cut-text')].map(t => t.textContent),
              transfer: svg.querySelector('.transfer text').textContent,
              end: svg.querySelector('.end text').textContent,
            }; })()"""
        )
        assert detail == {
            "bargein": "barge-in 220 ms",
            "digits": "4217",
            "cut": ["the last four digits?"],
            "transfer": "transfer cards: requested \u2192 handed_off",
            "end": "ended: transferred",
        }
        # segments sit where their times say: the cut segment stops at its cut (10.02 s)
        geometry = await page.evaluate(
            """(() => { const svg = document.querySelector('#timeline svg');
              const r = [...svg.querySelectorAll('.agent-lane .seg.agent')].map(
                s => [Number(s.getAttribute('x')), Number(s.getAttribute('width'))]);
              const c = [...svg.querySelectorAll('.caller-lane .seg.caller')].map(
                s => Number(s.getAttribute('x')));
              return {agent: r, caller: c}; })()"""
        )
        xs = [x for x, _ in geometry["agent"]]
        assert xs == sorted(xs) and geometry["caller"] == sorted(geometry["caller"])
        px_per_ms = (geometry["agent"][1][0] - geometry["agent"][0][0]) / (7800 - 3300)
        assert geometry["agent"][1][1] == pytest.approx((10020 - 7800) * px_per_ms, abs=0.5)
        # re-anchors and caller words: drawn from synthetic events by the same code
        extra = await page.evaluate(
            """(() => { const svg = vgTimeline.callTimeline([
                {type: 'call.started', t: 0, persona: 'p', leg: 'sip'},
                {type: 'caller.speech', t: 900, start_ms: 100, end_ms: 900},
                {type: 'transcript.caller', t: 950, text: 'hello there', start_ms: 100,
                 end_ms: 900, words: JSON.stringify([['hello', 100, 400], ['there', 500, 900]]),
                 final: true},
                {type: 'transcript.caller', t: 2000, text: 'and', start_ms: 1500, end_ms: 2000,
                 words: '[]', final: false},
                {type: 'call.reanchored', t: 1200, compute_ms: 45.2, kept_frames: 1500}],
                {width: 800, nowMs: 2500});
              return {reanchors: svg.querySelectorAll('.reanchor').length,
                      words: [...svg.querySelectorAll('.said.caller tspan')].map(t => t.textContent),
                      partial: svg.querySelectorAll('.said.caller.partial').length,
                      now: svg.querySelectorAll('.now').length}; })()"""
        )
        assert extra == {"reanchors": 1, "words": ["hello", "there"], "partial": 1, "now": 1}
        await screenshot(page, "#call-view", tmp_path / "call-timeline.png")

        # the persona comparison: one row per persona in each of the seven charts
        await page.evaluate("document.getElementById('run-compare').click()")
        charts = await page.wait_for(
            """(() => { const figs = [...document.querySelectorAll('#compare figure')];
              return figs.length && figs.map(f => ({metric: f.dataset.metric,
                boxes: f.querySelectorAll('.box').length,
                names: [...f.querySelectorAll('.name')].map(t => t.textContent),
                bars: f.querySelectorAll('.bar').length,
                reasons: f.querySelectorAll('.reason').length})); })()"""
        )
        table = await page.evaluate("vg.ops.comparison")
        await screenshot(page, "#compare-panel", tmp_path / "persona-comparison.png")
    personas = ["bank_teller", "support_agent", "wise_teacher"]
    assert [p["persona"] for p in table["personas"]] == personas
    assert [p["calls"] for p in table["personas"]] == [
        PERSONA_MIX["bank_teller"][0] + 1,  # and the known call
        PERSONA_MIX["support_agent"][0],
        PERSONA_MIX["wise_teacher"][0],
    ]
    metrics = [c["metric"] for c in charts]
    assert metrics == [
        "duration_s",
        "gap_p50_ms",
        "gap_p90_ms",
        "bargeins_per_min",
        "overlap_share",
        "transfer_rate",
        "end_reasons",
    ]
    for chart in charts:
        assert chart["names"] == personas, chart
        if chart["metric"] == "transfer_rate":
            assert chart["bars"] == 3
        elif chart["metric"] == "end_reasons":
            reasons = sum(len(p["end_reasons"]) for p in table["personas"])
            assert chart["reasons"] == reasons
        else:
            assert chart["boxes"] == 3, chart
