"""The gateway's page: call a persona from the browser (WebRTC), watch its live transcript and
barge-ins, and edit personas with validation as you type (``routes.web_router``, ``editor``).
The page itself is ``index.html`` + ``app.js`` + ``style.css`` in this folder (no build step).
"""

from __future__ import annotations

from voicegate.web.editor import PersonaEditor, SaveResult
from voicegate.web.routes import web_router

__all__ = ["PersonaEditor", "SaveResult", "web_router"]
