"""Digest authentication, the CIDR allow-list and the per-source INVITE bucket."""

from __future__ import annotations

import pytest

from voicegate.errors import ConfigError
from voicegate.legs.sip.auth import DigestAuth, SourcePolicy, digest_response


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def credentials(auth: DigestAuth, challenge: str, password: str, *, qop: bool = True) -> str:
    nonce = challenge.split('nonce="', 1)[1].split('"', 1)[0]
    uri = "sip:teller@127.0.0.1"
    if qop:
        resp = digest_response(
            "trunk",
            "voicegate",
            password,
            "INVITE",
            uri,
            nonce,
            qop="auth",
            nc="00000001",
            cnonce="abc",
        )
        return (
            f'Digest username="trunk", realm="voicegate", nonce="{nonce}", uri="{uri}", '
            f'response="{resp}", algorithm=MD5, qop=auth, nc=00000001, cnonce="abc"'
        )
    resp = digest_response("trunk", "voicegate", password, "INVITE", uri, nonce)
    return f'Digest username="trunk", realm="voicegate", nonce="{nonce}", uri="{uri}", response="{resp}"'


def test_digest_accepts_the_right_password_with_and_without_qop() -> None:
    auth = DigestAuth("trunk", "s3cret")
    challenge = auth.challenge()
    assert challenge.startswith('Digest realm="voicegate"') and 'qop="auth"' in challenge
    assert auth.check("INVITE", credentials(auth, challenge, "s3cret"))
    assert auth.check("INVITE", credentials(auth, challenge, "s3cret", qop=False))


@pytest.mark.parametrize("header", [None, "", "Basic abc", "Digest garbage", 'Digest username="x"'])
def test_digest_refuses_missing_or_malformed(header: str | None) -> None:
    assert not DigestAuth("trunk", "s3cret").check("INVITE", header)


def test_digest_refuses_wrong_password_foreign_and_stale_nonces() -> None:
    clock = Clock()
    auth = DigestAuth("trunk", "s3cret", nonce_ttl_s=60, clock=clock)
    challenge = auth.challenge()
    assert not auth.check("INVITE", credentials(auth, challenge, "wrong"))
    other = DigestAuth("trunk", "s3cret")  # another process: another nonce key
    assert not other.check("INVITE", credentials(auth, challenge, "s3cret"))
    clock.now += 61
    assert not auth.check("INVITE", credentials(auth, challenge, "s3cret"))


def test_allow_list() -> None:
    policy = SourcePolicy("10.0.0.0/8, 192.0.2.7/32,::1/128")
    assert policy.is_allowed("10.2.3.4") and policy.is_allowed("192.0.2.7")
    assert policy.is_allowed("::ffff:10.0.0.1")  # IPv4-mapped
    assert not policy.is_allowed("192.0.2.8") and not policy.is_allowed("not-an-ip")
    assert SourcePolicy("").is_allowed("203.0.113.1")
    with pytest.raises(ConfigError):
        SourcePolicy("10.0.0.0/33")


def test_invite_bucket_per_source() -> None:
    clock = Clock()
    policy = SourcePolicy(invite_rate_per_s=2, invite_burst=3, clock=clock)
    assert [policy.take_invite("a") for _ in range(5)] == [True, True, True, False, False]
    assert policy.take_invite("b")  # another source has its own bucket
    clock.now += 0.5  # one token back
    assert [policy.take_invite("a") for _ in range(2)] == [True, False]
    assert all(SourcePolicy(invite_rate_per_s=0).take_invite("a") for _ in range(100))
