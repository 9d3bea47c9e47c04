"""call_flow.caller_says: phrases in the caller's words (caller STT) reach the Call's rules;
a transfer to an unknown destination is refused like agent_says'."""

from __future__ import annotations

from pathlib import Path

from voicegate.contracts import FlowAction
from voicegate.personas import load_persona, read_persona

HEAD = "description: d\ntext_prompt: t\nvoice: NATF0\n"


def test_caller_phrases_become_rules(tmp_path: Path) -> None:
    path = tmp_path / "teller.yaml"
    path.write_text(
        HEAD + "call_flow:\n  destinations: {desk: {to: '+14155550123'}}\n"
        "  caller_says:\n    - {phrase: speak to a person, transfer: desk}\n"
        "    - {phrase: that's all, hangup: true}\n"
    )
    rules = load_persona(path).flow_rules()
    assert rules is not None and not rules.is_empty
    assert rules.caller_says == (
        ("speak to a person", FlowAction("transfer", "desk")),
        ("that's all", FlowAction("hangup")),
    )
    assert rules.agent_says == ()


def test_unknown_destination_in_caller_says(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        HEAD + "call_flow:\n  destinations: {desk: {to: '+14155550123'}}\n"
        "  caller_says:\n    - {phrase: agent, transfer: dsk}\n"
    )
    _, problems = read_persona(path)
    assert any("unknown destination 'dsk' (did you mean 'desk'?)" in p.message for p in problems)
