"""The gateway loads the voice activity model at startup, not on the first call's event loop."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.legs.gateway import REPO

SCRIPT = """
import asyncio, sys
from voicegate.app import create_app
from voicegate.audio import vad
from voicegate.config import Settings

async def main() -> None:
    app = create_app(Settings(
        engine="echo", redis_url=sys.argv[1], personas_dir=sys.argv[2] + "/personas",
        numbers_file=sys.argv[2] + "/telephony/numbers.yaml", events_journal_dir=sys.argv[3],
        sip_enabled=False, webrtc_enabled=False,
    ))
    before = len(vad._sessions)
    async with app.router.lifespan_context(app):
        print(before, len(vad._sessions), app.state.parts.calls.active_count)

asyncio.run(main())
"""


def test_startup_loads_the_model_before_any_call(redis_url: str, tmp_path: Path) -> None:
    # a process of its own: this one's model cache is shared with every other test
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, redis_url, str(REPO), str(tmp_path / "journal")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    before, after, calls = out.stdout.split()
    assert (before, after, calls) == ("0", "1", "0")
