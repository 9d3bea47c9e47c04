"""Signatures (against the twilio SDK's algorithm) and one-time call tokens."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from voicegate.errors import ConfigError, TwilioError
from voicegate.legs.twilio.security import (
    CallGrant,
    CallTokens,
    SignatureChecker,
    public_http_url,
    public_ws_url,
)

TOKEN = "12345678901234567890123456789012"
PUBLIC = "https://gw.example.com"


def hmac_sign(url: str, params: dict[str, str]) -> str:
    """Twilio's documented algorithm, written out: URL + sorted name/value pairs, HMAC-SHA1."""
    data = url + "".join(k + params[k] for k in sorted(params))
    return base64.b64encode(hmac.new(TOKEN.encode(), data.encode(), hashlib.sha1).digest()).decode()


PARAMS = {"CallSid": "CA1", "From": "+15550001111", "To": "+15550002222", "AccountSid": "AC1"}


def test_public_urls_behind_a_proxy_prefix() -> None:
    assert public_http_url("https://gw.example.com/vg/", "/twilio/voice") == (
        "https://gw.example.com/vg/twilio/voice"
    )
    assert public_ws_url("https://gw.example.com/vg", "/twilio/media") == (
        "wss://gw.example.com/vg/twilio/media"
    )
    assert (
        public_ws_url("http://127.0.0.1:8080", "/twilio/media")
        == "ws://127.0.0.1:8080/twilio/media"
    )
    with pytest.raises(ConfigError):
        public_ws_url("gw.example.com", "/x")


def test_webhook_signature_accepts_twilio_signature() -> None:
    checker = SignatureChecker(TOKEN, PUBLIC)
    sig = hmac_sign("https://gw.example.com/twilio/voice", PARAMS)
    assert checker.check_webhook("/twilio/voice", "", PARAMS, sig) is None
    assert checker.sign_webhook("/twilio/voice", PARAMS) == sig


def test_webhook_signature_with_explicit_port_is_accepted() -> None:
    checker = SignatureChecker(TOKEN, PUBLIC)
    sig = hmac_sign("https://gw.example.com:443/twilio/voice", PARAMS)
    assert checker.check_webhook("/twilio/voice", "", PARAMS, sig) is None


def test_webhook_signature_refusals() -> None:
    checker = SignatureChecker(TOKEN, PUBLIC)
    sig = hmac_sign("https://gw.example.com/twilio/voice", PARAMS)
    assert "no X-Twilio-Signature" in (
        checker.check_webhook("/twilio/voice", "", PARAMS, None) or ""
    )
    tampered = dict(PARAMS, To="+15559999999")
    assert "does not match" in (checker.check_webhook("/twilio/voice", "", tampered, sig) or "")
    # the URL Twilio signed is the public one: an internal host must not validate
    internal = hmac_sign("http://10.0.0.5:8000/twilio/voice", PARAMS)
    assert checker.check_webhook("/twilio/voice", "", PARAMS, internal) is not None
    other_key = SignatureChecker("x" * 32, PUBLIC)
    assert other_key.check_webhook("/twilio/voice", "", PARAMS, sig) is not None


def test_empty_auth_token_refuses_everything() -> None:
    checker = SignatureChecker("", PUBLIC)
    assert "not set" in (checker.check_webhook("/twilio/voice", "", PARAMS, "abc") or "")
    with pytest.raises(ConfigError):
        checker.sign_upgrade("/twilio/media")


def test_upgrade_signature_is_over_wss_url_without_params() -> None:
    checker = SignatureChecker(TOKEN, PUBLIC)
    sig = hmac_sign("wss://gw.example.com/twilio/media", {})
    assert checker.check_upgrade("/twilio/media", sig) is None
    assert checker.sign_upgrade("/twilio/media") == sig
    assert checker.check_upgrade("/twilio/other", sig) is not None
    assert checker.check_upgrade("/twilio/media", None) is not None


def test_repeated_form_parameters_are_signed_sorted() -> None:
    checker = SignatureChecker(TOKEN, PUBLIC)
    url = "https://gw.example.com/twilio/status"
    data = url + "A1" + "B2B3"
    sig = base64.b64encode(hmac.new(TOKEN.encode(), data.encode(), hashlib.sha1).digest()).decode()
    assert checker.check_webhook("/twilio/status", "", {"B": ["3", "2"], "A": "1"}, sig) is None


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


GRANT = CallGrant(call_id="c1", call_sid="CA1", persona="teller", from_="+1", to="+2")


def test_token_is_one_time() -> None:
    tokens = CallTokens()
    tok = tokens.issue(GRANT)
    assert len(tok) >= 32
    assert tokens.consume(tok, "CA1") == GRANT
    with pytest.raises(TwilioError, match="unknown, used or expired"):
        tokens.consume(tok, "CA1")


def test_token_expires() -> None:
    clock = FakeClock()
    tokens = CallTokens(ttl_s=10, clock=clock)
    tok = tokens.issue(GRANT)
    clock.now += 11
    with pytest.raises(TwilioError, match="expired"):
        tokens.consume(tok, "CA1")


def test_expired_tokens_are_purged() -> None:
    clock = FakeClock()
    tokens = CallTokens(ttl_s=10, clock=clock)
    tokens.issue(GRANT)
    clock.now += 11
    tokens.issue(GRANT)
    assert len(tokens) == 1 and tokens.expired == 1


def test_token_is_bound_to_its_call_sid() -> None:
    tokens = CallTokens()
    tok = tokens.issue(GRANT)
    with pytest.raises(TwilioError, match="CallSid CA1"):
        tokens.consume(tok, "CA2")


def test_wrong_call_sid_does_not_use_up_the_token() -> None:
    tokens = CallTokens()
    tok = tokens.issue(GRANT)
    with pytest.raises(TwilioError, match="CallSid CA1"):
        tokens.consume(tok, "CA2")  # a forged or misrouted start
    assert tokens.consume(tok, "CA1") == GRANT  # the real stream still gets in
    with pytest.raises(TwilioError, match="unknown, used or expired"):
        tokens.consume(tok, "CA1")


def test_missing_and_forged_tokens() -> None:
    tokens = CallTokens()
    tokens.issue(GRANT)
    with pytest.raises(TwilioError, match="no token"):
        tokens.consume(None, "CA1")
    with pytest.raises(TwilioError):
        tokens.consume("forged", "CA1")


def test_outstanding_tokens_are_bounded() -> None:
    tokens = CallTokens(max_outstanding=3)
    first = tokens.issue(GRANT)
    for _ in range(3):
        tokens.issue(GRANT)
    assert len(tokens) == 3 and tokens.evicted == 1
    with pytest.raises(TwilioError):
        tokens.consume(first, "CA1")
