"""Who may open a carrier stream: Plivo's V3 signature of the upgrade, the stream-URL token."""

from __future__ import annotations

import pytest

from voicegate.legs.carriers.security import (
    PLIVO_NONCE,
    PLIVO_SIGNATURE,
    check_plivo_signature,
    check_token,
    plivo_v3_signature,
)

# (URL, signature) for auth token "tok123" and nonce "nonce42", each accepted by the
# validate_v3_signature("GET", ...) of Plivo's Python SDK (plivo 4.63.0) when this was written
VECTORS = [
    ("wss://gw.example.com/plivo/media", "jA8LLuhU4mdm6X8KN34DQ211uEJL9a4+ffTWKS8Qpc4="),
    (
        "wss://gw.example.com/plivo/media?to=%2B14155550100&a=2&a=1&token=x",
        "AlMqCnG7lw1mEigXixguDWyPc7pNY3Y3P1OzmZEZp2w=",
    ),
    ("wss://h:8443/p?b=&c=3", "g33nUGGnALa+oYV3WWZhThb++EWtEWjpfRhn9RzQ/fQ="),
]


@pytest.mark.parametrize(("url", "signature"), VECTORS)
def test_plivo_v3_signature_matches_plivos_sdk(url: str, signature: str) -> None:
    assert plivo_v3_signature("tok123", url, "nonce42") == signature


def test_a_signed_upgrade_passes_and_anything_else_says_why() -> None:
    url, signature = VECTORS[1]
    headers = {PLIVO_SIGNATURE: signature, PLIVO_NONCE: "nonce42"}
    assert check_plivo_signature("tok123", url, headers) is None
    # the query in another order is the same signed URL
    reordered = "wss://gw.example.com/plivo/media?token=x&a=1&a=2&to=%2B14155550100"
    assert check_plivo_signature("tok123", reordered, headers) is None
    # a rotated token: Plivo sends both signatures, comma-separated
    rotated = {PLIVO_SIGNATURE: f"bogus=,{signature}", PLIVO_NONCE: "nonce42"}
    assert check_plivo_signature("tok123", url, rotated) is None
    assert "does not match" in (check_plivo_signature("other", url, headers) or "")
    assert "does not match" in (check_plivo_signature("tok123", url + "&to=%2B1999", headers) or "")
    bad_nonce = {PLIVO_SIGNATURE: signature, PLIVO_NONCE: "nonce43"}
    assert "does not match" in (check_plivo_signature("tok123", url, bad_nonce) or "")
    assert "no X-Plivo-Signature-V3" in (check_plivo_signature("tok123", url, {}) or "")


def test_the_stream_token() -> None:
    assert check_token("s3cret", "s3cret") is None
    assert check_token("s3cret", "s3creT") == "wrong token in the stream URL"
    assert check_token("s3cret", None) == "no token in the stream URL"
    assert check_token("s3cret", "") == "no token in the stream URL"
