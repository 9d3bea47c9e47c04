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
    SignedCallTokens,
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


# --- tokens shared by edge workers (voicegate serve --workers N) ---


def test_a_signed_token_issued_in_one_worker_is_redeemed_once_in_another() -> None:
    secret = b"k" * 32
    grant = CallGrant("CA1", "CA1", "bank_teller", "+1", "+2")
    token = SignedCallTokens(secret).issue(grant)
    other = SignedCallTokens(secret)
    assert other  # truthy with nothing redeemed yet (TwilioLeg takes ``tokens or ...``)
    assert other.consume(token, "CA1") == grant
    with pytest.raises(TwilioError, match="unknown, used or expired"):
        other.consume(token, "CA1")


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t[:-2] + ("AA" if t[-2:] != "AA" else "BB"),  # tag changed
        lambda t: "e30" + t[3:],  # body changed
        lambda t: t.replace(".", ""),  # no tag
        lambda t: "!!!." + t.split(".")[1],  # not base64
        lambda t: "",
    ],
)
def test_a_tampered_or_foreign_signed_token_is_refused(mangle: object) -> None:
    token = SignedCallTokens(b"k" * 32).issue(CallGrant("CA1", "CA1", "p"))
    with pytest.raises(TwilioError):
        SignedCallTokens(b"k" * 32).consume(mangle(token), "CA1")  # type: ignore[operator]
    with pytest.raises(TwilioError, match="unknown, used or expired"):
        SignedCallTokens(b"x" * 32).consume(token, "CA1")  # another gateway's secret


def test_a_signed_token_expires_and_binds_its_call_sid() -> None:
    now = [100.0]
    tokens = SignedCallTokens(b"k" * 32, ttl_s=10, clock=lambda: now[0])
    token = tokens.issue(CallGrant("CA1", "CA1", "p"))
    with pytest.raises(TwilioError, match="issued for CallSid CA1"):
        tokens.consume(token, "CA2")
    assert tokens.consume(token, "CA1").persona == "p"  # the wrong sid left it usable
    late = tokens.issue(CallGrant("CA3", "CA3", "p"))
    now[0] += 11
    with pytest.raises(TwilioError, match="expired"):
        tokens.consume(late, "CA3")
    assert tokens.expired == 1


def test_a_short_token_secret_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="at least 16 bytes"):
        SignedCallTokens(b"short")
