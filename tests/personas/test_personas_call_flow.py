"""The persona's call_flow section: valid flows reach the Call's rules; mistakes are reported at
their line and column with the reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from voicegate.contracts import FlowAction
from voicegate.personas import load_persona, read_persona

HEAD = "description: d\ntext_prompt: t\nvoice: NATF0\n"

FLOW = """call_flow:
  destinations:
    branch: {to: "+14155550123", handoff_url: "https://crm.example.com/handoff"}
    queue: {to: "sip:queue@pbx.example.com"}
  dtmf:
    "0": {transfer: branch}
    "*9": hangup
  agent_says:
    - {phrase: "I'll put you through", transfer: queue}
    - {phrase: goodbye, hangup: true}
  limits:
    max_duration: {transfer: branch}
    silence_timeout: hangup
  hangup_after_silence_s: 2
  fallback_say: Nobody could answer. Goodbye.
"""


def test_a_full_call_flow_becomes_the_calls_rules(tmp_path: Path) -> None:
    path = tmp_path / "teller.yaml"
    path.write_text(HEAD + FLOW)
    rules = load_persona(path).flow_rules()
    assert rules is not None
    assert rules.destinations == {"branch": "+14155550123", "queue": "sip:queue@pbx.example.com"}
    assert rules.handoff_urls == {"branch": "https://crm.example.com/handoff"}
    assert rules.dtmf == {"0": FlowAction("transfer", "branch"), "*9": FlowAction("hangup")}
    assert rules.agent_says == (
        ("I'll put you through", FlowAction("transfer", "queue")),
        ("goodbye", FlowAction("hangup")),
    )
    assert rules.on_max_duration == FlowAction("transfer", "branch")
    assert rules.on_silence_timeout == FlowAction("hangup")
    assert rules.hangup_silence_ms == 2000
    assert rules.fallback_say == "Nobody could answer. Goodbye."


def test_an_unquoted_key_is_explained(tmp_path: Path) -> None:
    path = tmp_path / "keys.yaml"
    path.write_text(HEAD + "call_flow:\n  dtmf:\n    0: hangup\n")
    _, problems = read_persona(path)
    assert [(p.line, p.col) for p in problems] == [(6, 5)]
    assert "put it in quotes ('0')" in problems[0].message


def test_no_call_flow_means_no_rules(tmp_path: Path) -> None:
    path = tmp_path / "plain.yaml"
    path.write_text(HEAD)
    assert load_persona(path).flow_rules() is None


@pytest.mark.parametrize(
    ("flow", "where", "message"),
    [
        (
            "call_flow:\n  destinations: {branch: {to: '+14155550123'}}\n"
            "  dtmf: {'0': {transfer: brnch}}\n",
            (5, 3),
            "transfer to unknown destination 'brnch' (did you mean 'branch'?)",
        ),
        (
            "call_flow:\n  destinations: {branch: {to: '555-0123'}}\n",
            (5, 31),
            "'555-0123' is neither an E.164 number",
        ),
        (
            "call_flow:\n  dtmf: {'0x': hangup}\n",
            (5, 3),
            "dtmf key '0x' must be 1-8 of 0-9, * and #",
        ),
        (
            "call_flow:\n  agent_says:\n    - {phrase: bye, hangup: true, transfer: x}\n",
            (6, 7),
            "give exactly one of 'transfer: <destination>' or 'hangup: true'",
        ),
        (
            "call_flow:\n  destinatons: {}\n",
            (5, 3),
            "unknown key 'call_flow.destinatons'",
        ),
    ],
)
def test_mistakes_are_reported_where_they_are(
    tmp_path: Path, flow: str, where: tuple[int, int], message: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(HEAD + flow)
    persona, problems = read_persona(path)
    assert persona is None
    assert any(message in p.message for p in problems), [str(p) for p in problems]
    hit = next(p for p in problems if message in p.message)
    assert (hit.line, hit.col) == where


def test_a_persona_names_its_post_call_webhook(tmp_path: Path) -> None:
    path = tmp_path / "hooked.yaml"
    path.write_text(
        "description: d\ntext_prompt: t\nvoice: NATF0\n"
        'webhooks: {call_ended: "https://crm.example.com/calls"}\n'
    )
    persona = load_persona(path)
    assert persona.webhooks is not None
    assert persona.webhooks.call_ended == "https://crm.example.com/calls"
    path.write_text("description: d\ntext_prompt: t\nvoice: NATF0\nwebhooks: {call_ended: nope}\n")
    _, problems = read_persona(path)
    assert any("call_ended 'nope' is not an http(s) URL" in str(p) for p in problems), problems
