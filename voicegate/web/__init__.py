"""The gateway's page: call a persona from the browser (WebRTC), watch its live transcript and
barge-ins, and edit personas with validation as you type (``routes.web_router``, ``editor``);
operators watch live calls as timelines, open ended calls from Redis and compare personas
(``operators.operator_router``, ``history``).
The page itself is ``index.html`` + ``app.js`` + ``style.css`` in this folder (no build step).
"""

from __future__ import annotations

from voicegate.web.editor import PersonaEditor, SaveResult
from voicegate.web.history import CallHistory, Period
from voicegate.web.operators import operator_router
from voicegate.web.routes import web_router

__all__ = ["CallHistory", "PersonaEditor", "Period", "SaveResult", "operator_router", "web_router"]
