"""numbers.yaml: problems at their line/col with suggestions; Router normalisation."""

from __future__ import annotations

from pathlib import Path

import pytest
from personas_helpers import DATA_DIR, EXPECT, NUMBERS_FILE, PERSONAS_DIR

from voicegate.personas import (
    NumbersMap,
    NumbersValidationError,
    Router,
    load_numbers,
    normalise_called,
    persona_files,
    read_numbers,
)

CASES = sorted((DATA_DIR / "numbers").glob("*.yaml"))
SHIPPED = {p.stem for p in persona_files(PERSONAS_DIR)}


@pytest.mark.parametrize("path", CASES, ids=lambda p: p.name)
def test_captured_numbers_file_reports_every_problem(path: Path) -> None:
    expected = [m.groups() for line in path.read_text().splitlines() if (m := EXPECT.match(line))]
    assert expected
    numbers, problems = read_numbers(path, SHIPPED)
    assert numbers is None
    got = [(str(p.line), str(p.col), p.severity, p.suggestion) for p in problems]
    assert got == [(line, col, sev, hint) for line, col, sev, _, hint in expected], [
        str(p) for p in problems
    ]
    for problem, (_, _, _, text, _) in zip(problems, expected, strict=True):
        assert problem.message.startswith(text)


def test_unknown_persona_line_format(tmp_path: Path) -> None:
    path = tmp_path / "numbers.yaml"
    path.write_text("default: bank_teler\n")
    with pytest.raises(NumbersValidationError) as info:
        load_numbers(path, {"bank_teller"})
    assert str(info.value.problems[0]) == (
        f"{path}:1:10: error: unknown persona 'bank_teler' (known: bank_teller) "
        "(did you mean 'bank_teller'?)"
    )


def test_shipped_numbers_route_to_shipped_personas() -> None:
    numbers = load_numbers(NUMBERS_FILE, SHIPPED)
    assert numbers.personas() <= SHIPPED
    assert numbers.numbers and numbers.sip_users and numbers.default in SHIPPED


def test_persona_names_unchecked_without_a_known_list(tmp_path: Path) -> None:
    path = tmp_path / "numbers.yaml"
    path.write_text("default: anyone\n")
    assert load_numbers(path).default == "anyone"


ROUTES = NumbersMap(
    default="support_agent",
    numbers={"+14155550100": "bank_teller", "+442079460750": "mars_astronaut"},
    sip_users={"teller": "bank_teller", "1000": "wise_teacher"},
)


@pytest.mark.parametrize(
    ("to", "persona"),
    [
        ("+14155550100", "bank_teller"),
        (" +1 415 555 0100 ", "bank_teller"),
        ("+1 (415) 555-0100", "bank_teller"),
        ("14155550100", "bank_teller"),  # carriers drop the '+'
        ("tel:+1-415-555-0100", "bank_teller"),
        ("TEL:+14155550100;phone-context=example.com", "bank_teller"),
        ("sip:+14155550100@gw.example.com;user=phone", "bank_teller"),
        ("<sips:14155550100@gw.example.com:5061>", "bank_teller"),
        ("sip:%2B14155550100@gw", "bank_teller"),
        ("0044 20 7946 0750", "mars_astronaut"),
        ("sip:teller@10.0.0.1", "bank_teller"),
        ("Teller", "bank_teller"),
        ("sip:1000@pbx", "wise_teacher"),  # a SIP user wins over a number reading
        ("+15555555555", "support_agent"),
        ("sip:nobody@host", "support_agent"),
        ("", "support_agent"),
        ("sip:", "support_agent"),
        ("\x00\ufffd", "support_agent"),
    ],
)
def test_route_normalises_the_called_party(to: str, persona: str) -> None:
    assert Router(ROUTES).route(to) == persona


def test_normalise_called_parts() -> None:
    assert normalise_called("sip:+1-415-555-0100@h;user=phone") == (
        "+14155550100",
        "+1-415-555-0100",
    )
    assert normalise_called("teller") == (None, "teller")
    assert normalise_called("+0123") == (None, "+0123")


def test_router_replace_and_unknown_fallback() -> None:
    loaded = {"support_agent"}
    router = Router(ROUTES, is_known=loaded.__contains__)
    assert router.route("+14155550100") == "support_agent"  # bank_teller not loaded
    loaded.add("bank_teller")
    assert router.route("+14155550100") == "bank_teller"
    router.replace(NumbersMap(default="bank_teller"))
    assert router.route("sip:teller@x") == "bank_teller" and router.numbers.sip_users == {}


def test_overflow_per_number_user_and_default(tmp_path: Path) -> None:
    path = tmp_path / "numbers.yaml"
    path.write_text(
        "default: a\n"
        "overflow:\n"
        '  default: "+14155550199"\n'
        '  "+14155550100": "sip:branch@pbx.example.com"\n'
        '  teller: "+14155550123"\n'
    )
    numbers, problems = read_numbers(path)
    assert problems == [] and numbers is not None
    router = Router(numbers)
    assert router.overflow("sip:+1-415-555-0100@gw;user=phone") == "sip:branch@pbx.example.com"
    assert router.overflow("sip:teller@gw.example.com") == "+14155550123"
    assert router.overflow("+19999999999") == "+14155550199"
    path.write_text("default: a\n")
    numbers, _ = read_numbers(path)
    assert numbers is not None and Router(numbers).overflow("+14155550100") == ""  # busy


def test_overflow_problems_have_positions(tmp_path: Path) -> None:
    path = tmp_path / "numbers.yaml"
    path.write_text('default: a\noverflow:\n  "not a key!": "+14155550199"\n  x: "nope"\n')
    numbers, problems = read_numbers(path)
    assert numbers is None
    text = [str(p) for p in problems]
    assert any(":3:3: error: overflow key 'not a key!'" in t for t in text), text
    assert any(":4:6: error: overflow.x: 'nope' is neither" in t for t in text), text


def test_webhooks_per_number_then_persona_then_default(tmp_path: Path) -> None:
    path = tmp_path / "numbers.yaml"
    path.write_text(
        "default: a\n"
        "webhooks:\n"
        '  default: {call_ended: "https://crm.example.com/all"}\n'
        '  "+14155550100": {call_ended: "https://bank.example.com/calls"}\n'
        "  teller: {call_ended: http://127.0.0.1:9000/hook}\n"
    )
    numbers, problems = read_numbers(path)
    assert problems == [] and numbers is not None
    router = Router(numbers)
    assert router.webhook("+1 415 555 0100", "https://p/") == "https://bank.example.com/calls"
    assert router.webhook("sip:teller@gw") == "http://127.0.0.1:9000/hook"
    assert router.webhook("+19999999999", "https://p/") == "https://p/"  # the persona's
    assert router.webhook("+19999999999") == "https://crm.example.com/all"
    path.write_text("default: a\n")
    numbers, _ = read_numbers(path)
    assert numbers is not None and Router(numbers).webhook("+14155550100") == ""


def test_webhook_problems_have_positions(tmp_path: Path) -> None:
    path = tmp_path / "numbers.yaml"
    path.write_text('default: a\nwebhooks:\n  "not a key!": {call_ended: "https://x/"}\n')
    numbers, problems = read_numbers(path)
    assert numbers is None
    assert any(":3:3: error: webhooks key 'not a key!'" in str(p) for p in problems), problems
    path.write_text(
        "default: a\nwebhooks:\n  x: {call_ended: ftp://nope}\n  y: {call_end: https://x/}\n"
    )
    numbers, problems = read_numbers(path)
    assert numbers is None
    text = [str(p) for p in problems]
    assert any(":3:19: error: webhooks.x.call_ended" in t and "ftp://nope" in t for t in text), text
    assert any(":4:7: error: unknown key 'call_end'" in t for t in text), text
