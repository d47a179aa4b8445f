"""Digest authentication (RFC 2617, RFC 7616, RFC 8760) and brute-force lockout (OPS-14)."""

from __future__ import annotations

import contextlib
import itertools
import shutil
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hotline.sip.auth import (
    AuthError,
    AuthStatus,
    Challenge,
    Credentials,
    CredentialsRejected,
    DigestChallenger,
    DigestClient,
    DigestSecret,
    LockoutTracker,
    compute_ha1,
    compute_response,
    parse_challenge,
    parse_credentials,
)

SECRET = b"0123456789abcdef0123456789abcdef"
REALM = "hotline.example.com"
URI = "sip:hotline.example.com"
T0 = 1_700_000_000.0


def counter_cnonce() -> DigestClient:
    counter = itertools.count(1)
    return DigestClient("1001", "s3cret", cnonce_factory=lambda: f"cn{next(counter)}")


# ---------------------------------------------------------------------------------------------------------
# RFC test vectors

RFC2617_AUTHORIZATION = """Digest username="Mufasa",
                 realm="testrealm@host.com",
                 nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",
                 uri="/dir/index.html",
                 qop=auth,
                 nc=00000001,
                 cnonce="0a4f113b",
                 response="6629fae49393a05397450978507c4ef1",
                 opaque="5ccc069c403ebaf9f0171e9517f40e41\""""


def test_rfc2617_section_3_5_example() -> None:
    creds = parse_credentials(RFC2617_AUTHORIZATION)
    assert (creds.username, creds.realm, creds.uri, creds.qop, creds.nc, creds.cnonce) == (
        "Mufasa",
        "testrealm@host.com",
        "/dir/index.html",
        "auth",
        "00000001",
        "0a4f113b",
    )
    assert creds.algorithm == "MD5" and creds.nonce_count == 1
    ha1 = compute_ha1("MD5", "Mufasa", "testrealm@host.com", "Circle Of Life")
    response = compute_response(
        algorithm="MD5",
        ha1=ha1,
        nonce=creds.nonce,
        method="GET",
        uri=creds.uri,
        qop="auth",
        nc="00000001",
        cnonce="0a4f113b",
    )
    assert response == "6629fae49393a05397450978507c4ef1" == creds.response


def test_rfc2617_example_against_our_verifier() -> None:
    # The digest is right, but the nonce is not one we issued: stale (re-challenge), never ok.
    challenger = DigestChallenger(SECRET, "testrealm@host.com", algorithms=["MD5"])
    ok_digest = challenger.verify("GET", RFC2617_AUTHORIZATION, "Circle Of Life", T0)
    assert ok_digest.status is AuthStatus.STALE
    wrong = challenger.verify("GET", RFC2617_AUTHORIZATION, "Circle of Life", T0)
    assert wrong.status is AuthStatus.WRONG_PASSWORD and wrong.counts_as_failure


@pytest.mark.parametrize(
    ("algorithm", "expected"),
    [
        ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
        ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
    ],
)
def test_rfc7616_section_3_9_1_examples(algorithm: str, expected: str) -> None:
    challenge = parse_challenge(
        f'Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm={algorithm}, '
        'nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", '
        'opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"'
    )
    assert challenge.qop == ("auth", "auth-int") and challenge.algorithm == algorithm
    client = DigestClient(
        "Mufasa", "Circle of Life", cnonce_factory=lambda: "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"
    )
    creds = parse_credentials(client.authorize(challenge, "GET", "/dir/index.html"))
    assert creds.response == expected
    assert creds.opaque == "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"
    assert (creds.qop, creds.nc) == ("auth", "00000001")


# ---------------------------------------------------------------------------------------------------------
# Header syntax


def test_challenge_parsing_tolerates_case_whitespace_tokens_and_escapes() -> None:
    challenge = parse_challenge(
        'digest  REALM = "a \\"quoted\\" realm\\\\x" ,NONCE=abc==,, Algorithm=sha-256 , '
        'qop="auth-int,auth", stale=true, Opaque="o"'
    )
    assert challenge.realm == 'a "quoted" realm\\x'
    assert challenge.nonce == "abc=="
    assert challenge.algorithm == "SHA-256"
    assert challenge.qop == ("auth-int", "auth")
    assert challenge.stale and challenge.opaque == "o"
    assert parse_challenge(str(challenge)) == challenge


def test_challenge_without_algorithm_means_md5() -> None:
    assert parse_challenge('Digest realm="r", nonce="n"').algorithm == "MD5"


def test_credentials_username_star_extended_notation() -> None:
    creds = parse_credentials(
        'Digest username*=UTF-8\'\'J%C3%A4s%C3%B8n%20Doe, realm="r", nonce="n", uri="/", response="00"'
    )
    assert creds.username == "Jäsøn Doe"


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("", "missing authentication scheme"),
        ('Basic realm="x"', "unsupported authentication scheme"),
        ("Digest realm", "has no value"),
        ('Digest realm="x', "unterminated"),
        ('Digest realm="x" nonce="y"', "expected ','"),
        ('Digest realm="x", realm="y", nonce="n"', "duplicate"),
        ('Digest realm="x", =y', "parameter name"),
        ("Digest realm=, nonce=n", "empty value"),
        ('Digest nonce="n"', "without realm"),
        ('Digest realm="r"', "without nonce"),
    ],
)
def test_malformed_challenges(value: str, reason: str) -> None:
    with pytest.raises(AuthError) as info:
        parse_challenge(value)
    assert reason in info.value.reason


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ('Digest realm="r", nonce="n", uri="/", response="0"', "without username"),
        ('Digest username="u", realm="r", nonce="n", uri="/"', "without response"),
        ('Digest username="u", realm="r", nonce="n", uri="/", response="0", qop=auth', "cnonce and nc"),
        (
            'Digest username="u", realm="r", nonce="n", uri="/", response="0", qop=auth, nc=1, cnonce="c"',
            "8 hex",
        ),
        (
            'Digest username="u", realm="r", nonce="n", uri="/", response="0", qop=auth, nc=0000000g, '
            'cnonce="c"',
            "8 hex",
        ),
        ('Digest username*=latin-2\'\'x, realm="r", nonce="n", uri="/", response="0"', "username*"),
    ],
)
def test_malformed_credentials(value: str, reason: str) -> None:
    with pytest.raises(AuthError) as info:
        parse_credentials(value)
    assert reason in info.value.reason


def test_header_values_refuse_line_breaks() -> None:
    with pytest.raises(AuthError, match="line break"):
        str(Challenge(realm="evil\r\nVia: x", nonce="n"))


quoted_text = st.text(
    alphabet=st.characters(categories=("L", "N", "P", "S", "Zs"), exclude_characters="\r\n"), max_size=20
)
hexes = st.text(alphabet="0123456789abcdef", min_size=1, max_size=64)


@settings(max_examples=200, deadline=None)
@given(
    st.builds(
        Credentials,
        username=quoted_text,
        realm=quoted_text,
        nonce=quoted_text,
        uri=quoted_text,
        response=hexes,
        algorithm=st.sampled_from(["MD5", "SHA-256", "MD5-sess", "SHA-256-sess"]),
        cnonce=quoted_text,
        opaque=st.none() | quoted_text,
        qop=st.sampled_from(["auth", "auth-int"]),
        nc=st.integers(1, 2**32 - 1).map(lambda n: f"{n:08x}"),
    )
)
def test_credentials_build_parse_round_trip(creds: Credentials) -> None:
    assert parse_credentials(str(creds)) == creds


@settings(max_examples=200, deadline=None)
@given(
    st.builds(
        Challenge,
        realm=quoted_text,
        nonce=quoted_text,
        algorithm=st.sampled_from(["MD5", "SHA-256"]),
        qop=st.sampled_from([(), ("auth",), ("auth", "auth-int")]),
        opaque=st.none() | quoted_text,
        stale=st.booleans(),
        domain=st.none() | quoted_text,
    )
)
def test_challenge_build_parse_round_trip(challenge: Challenge) -> None:
    assert parse_challenge(str(challenge)) == challenge


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80) | st.text(max_size=60).map(lambda s: 'Digest username="u", realm=' + s))
def test_arbitrary_headers_give_a_clean_result(value: str) -> None:
    challenger = DigestChallenger(SECRET, REALM)
    result = challenger.verify("REGISTER", value, "pw", T0)
    assert result.status is not AuthStatus.OK
    with contextlib.suppress(AuthError):
        parse_challenge(value)


# ---------------------------------------------------------------------------------------------------------
# Server and client together


@pytest.mark.parametrize("algorithms", [("SHA-256", "MD5"), ("MD5",), ("SHA-256",)])
def test_client_and_server_interoperate(algorithms: tuple[str, ...]) -> None:
    challenger = DigestChallenger(SECRET, REALM, algorithms=algorithms)
    headers = challenger.challenges(T0)
    assert [parse_challenge(h).algorithm for h in headers] == list(algorithms)
    assert len({parse_challenge(h).nonce for h in headers}) == 1
    client = counter_cnonce()
    authorization = client.authorize(headers, "REGISTER", URI)
    assert parse_credentials(authorization).algorithm == algorithms[0]
    result = challenger.verify("REGISTER", authorization, {"1001": "s3cret"}.get, T0 + 1, request_uri=URI)
    assert result.ok and result.username == "1001"


def test_client_prefers_sha256_whatever_the_order() -> None:
    challenger = DigestChallenger(SECRET, REALM, algorithms=("MD5", "SHA-256"))
    authorization = counter_cnonce().authorize(challenger.challenges(T0), "INVITE", URI)
    assert parse_credentials(authorization).algorithm == "SHA-256"
    assert challenger.verify("INVITE", authorization, "s3cret", T0).ok


def test_server_may_store_only_ha1() -> None:
    stored = DigestSecret.hashed("1001", REALM, "s3cret")
    assert stored.password is None and set(stored.ha1) >= {"MD5", "SHA-256"}
    assert "s3cret" not in repr(stored)
    for algorithms in (("MD5",), ("SHA-256",)):
        challenger = DigestChallenger(SECRET, REALM, algorithms=algorithms)
        authorization = counter_cnonce().authorize(challenger.challenges(T0), "REGISTER", URI)
        assert challenger.verify("REGISTER", authorization, stored, T0).ok
    only_md5 = DigestSecret(ha1={"MD5": stored.ha1["MD5"]})
    challenger = DigestChallenger(SECRET, REALM, algorithms=("SHA-256",))
    authorization = counter_cnonce().authorize(challenger.challenges(T0), "REGISTER", URI)
    assert challenger.verify("REGISTER", authorization, only_md5, T0).status is AuthStatus.UNKNOWN_USER


def test_wrong_password_unknown_user_realm_and_uri() -> None:
    challenger = DigestChallenger(SECRET, REALM)
    headers = challenger.challenges(T0)
    authorization = counter_cnonce().authorize(headers, "REGISTER", URI)
    users = {"1001": "other"}.get
    assert challenger.verify("REGISTER", authorization, users, T0).status is AuthStatus.WRONG_PASSWORD
    assert (
        challenger.verify("REGISTER", authorization, lambda user: None, T0).status is AuthStatus.UNKNOWN_USER
    )
    # Digest covers the method: credentials made for REGISTER do not authorise an INVITE.
    assert challenger.verify("INVITE", authorization, "s3cret", T0).status is AuthStatus.WRONG_PASSWORD
    wrong_uri = challenger.verify(
        "REGISTER", authorization, "s3cret", T0, request_uri="sip:other.example.com"
    )
    assert wrong_uri.status is AuthStatus.WRONG_URI and wrong_uri.counts_as_failure
    case_only = challenger.verify("REGISTER", authorization, "s3cret", T0, request_uri=URI.upper())
    assert case_only.ok
    other_realm = DigestChallenger(SECRET, "elsewhere")
    result = other_realm.verify("REGISTER", authorization, "s3cret", T0)
    assert result.status is AuthStatus.WRONG_REALM and "elsewhere" in result.reason


def test_malformed_credentials_are_a_result_not_an_exception() -> None:
    challenger = DigestChallenger(SECRET, REALM)
    result = challenger.verify("REGISTER", 'Digest username="1001", realm=', "pw", T0)
    assert result.status is AuthStatus.MALFORMED and result.counts_as_failure and result.reason
    basic = challenger.verify("REGISTER", "Basic dXNlcjpwdw==", "pw", T0)
    assert basic.status is AuthStatus.MALFORMED and "Basic" in basic.reason


def test_garbage_response_and_zero_count_are_clean_failures() -> None:
    challenger = DigestChallenger(SECRET, REALM)
    creds = parse_credentials(counter_cnonce().authorize(challenger.challenges(T0), "REGISTER", URI))
    non_ascii = Credentials(**{**creds.__dict__, "response": "ünïcode"})
    assert challenger.verify("REGISTER", non_ascii, "s3cret", T0).status is AuthStatus.WRONG_PASSWORD
    nonce = creds.nonce
    ha1 = compute_ha1("SHA-256", "1001", REALM, "s3cret")
    zero = compute_response(
        algorithm="SHA-256",
        ha1=ha1,
        nonce=nonce,
        method="REGISTER",
        uri=URI,
        qop="auth",
        nc="00000000",
        cnonce="x",
    )
    zero_creds = Credentials(
        "1001", REALM, nonce, URI, zero, "SHA-256", cnonce="x", qop="auth", nc="00000000"
    )
    assert challenger.verify("REGISTER", zero_creds, "s3cret", T0).status is AuthStatus.MALFORMED


def test_algorithm_not_offered_is_refused() -> None:
    challenger = DigestChallenger(SECRET, REALM, algorithms=("SHA-256",))
    md5 = Challenge(realm=REALM, nonce=challenger.new_nonce(T0), algorithm="MD5", qop=("auth",))
    authorization = counter_cnonce().authorize(md5, "REGISTER", URI)
    result = challenger.verify("REGISTER", authorization, "s3cret", T0)
    assert result.status is AuthStatus.MALFORMED and "MD5" in result.reason


def test_expired_nonce_is_stale_and_the_client_retries_without_failing() -> None:
    challenger = DigestChallenger(SECRET, REALM, nonce_ttl=300)
    client = counter_cnonce()
    first = client.authorize(challenger.challenges(T0), "REGISTER", URI)
    assert challenger.verify("REGISTER", first, "s3cret", T0 + 299).ok
    late = client.preemptive("REGISTER", URI)
    assert late is not None
    result = challenger.verify("REGISTER", late, "s3cret", T0 + 301)
    assert result.status is AuthStatus.STALE and result.stale and not result.counts_as_failure
    rechallenge = challenger.challenges(T0 + 301, stale=True)
    assert all(parse_challenge(h).stale for h in rechallenge)
    retry = client.authorize(rechallenge, "REGISTER", URI, sent_credentials=True)
    assert parse_credentials(retry).nc == "00000001"  # new nonce, count restarts
    assert challenger.verify("REGISTER", retry, "s3cret", T0 + 302).ok


def test_stale_with_wrong_password_is_still_a_wrong_password() -> None:
    challenger = DigestChallenger(SECRET, REALM, nonce_ttl=300)
    authorization = counter_cnonce().authorize(challenger.challenges(T0), "REGISTER", URI)
    result = challenger.verify("REGISTER", authorization, "guess", T0 + 1000)
    assert result.status is AuthStatus.WRONG_PASSWORD


def test_forged_or_future_nonces_are_never_accepted() -> None:
    challenger = DigestChallenger(SECRET, REALM)
    client = counter_cnonce()
    forged = Challenge(realm=REALM, nonce="A" * 43, algorithm="SHA-256", qop=("auth",))
    result = challenger.verify("REGISTER", client.authorize(forged, "REGISTER", URI), "s3cret", T0)
    assert result.status is AuthStatus.STALE
    other_server = DigestChallenger(b"another secret of 32 bytes......", REALM)
    foreign = client.authorize(other_server.challenges(T0), "REGISTER", URI)
    assert challenger.verify("REGISTER", foreign, "s3cret", T0).status is AuthStatus.STALE
    future = client.authorize(challenger.challenges(T0 + 3600), "REGISTER", URI)
    assert challenger.verify("REGISTER", future, "s3cret", T0).status is AuthStatus.STALE
    nonce = challenger.new_nonce(T0)
    assert challenger.nonce_issued_at(nonce) == pytest.approx(T0)
    tampered = nonce[:5] + ("B" if nonce[5] != "B" else "C") + nonce[6:]
    assert challenger.nonce_issued_at(tampered) is None


def test_replayed_credentials_are_refused() -> None:
    challenger = DigestChallenger(SECRET, REALM)
    client = counter_cnonce()
    authorization = client.authorize(challenger.challenges(T0), "REGISTER", URI)
    assert challenger.verify("REGISTER", authorization, "s3cret", T0).ok
    replay = challenger.verify("REGISTER", authorization, "s3cret", T0 + 5)
    assert replay.status is AuthStatus.REPLAY and not replay.counts_as_failure
    # Later requests reuse the nonce with the next count and pass.
    for _ in range(3):
        again = client.preemptive("REGISTER", URI)
        assert again is not None
        assert challenger.verify("REGISTER", again, "s3cret", T0 + 10).ok
    assert again is not None and parse_credentials(again).nc == "00000004"


def test_nonce_counts_may_arrive_out_of_order_within_the_window() -> None:
    challenger = DigestChallenger(SECRET, REALM)
    client = counter_cnonce()
    headers = [client.authorize(challenger.challenges(T0), "REGISTER", URI)]
    headers += [client.preemptive("REGISTER", URI) or "" for _ in range(69)]  # headers[i] has count i + 1

    def status(count: int) -> AuthStatus:
        return challenger.verify("REGISTER", headers[count - 1], "s3cret", T0).status

    # Requests sharing a nonce can overtake each other over UDP.
    assert [status(n) for n in (2, 1, 40, 4, 3)] == [AuthStatus.OK] * 5
    assert status(3) is AuthStatus.REPLAY
    assert status(70) is AuthStatus.OK
    # Count 5 was never used but is now more than 64 behind 70: refused rather than remembered forever.
    assert status(5) is AuthStatus.REPLAY
    assert status(7) is AuthStatus.OK  # 63 behind: still inside the window


def test_replay_tracking_is_bounded_and_stays_safe() -> None:
    challenger = DigestChallenger(SECRET, REALM, max_tracked_nonces=3)
    used: list[str] = []
    for i in range(6):
        client = counter_cnonce()
        authorization = client.authorize(challenger.challenges(T0 + i), "REGISTER", URI)
        assert challenger.verify("REGISTER", authorization, "s3cret", T0 + i).ok
        used.append(authorization)
    assert challenger.tracked_nonces == 3
    # The oldest nonces were forgotten: replaying them must not succeed.
    assert challenger.verify("REGISTER", used[0], "s3cret", T0 + 7).status is AuthStatus.STALE
    assert challenger.verify("REGISTER", used[5], "s3cret", T0 + 7).status is AuthStatus.REPLAY
    # Expired nonces are dropped from the table.
    fresh = counter_cnonce().authorize(challenger.challenges(T0 + 1000), "REGISTER", URI)
    assert challenger.verify("REGISTER", fresh, "s3cret", T0 + 1000).ok
    assert challenger.tracked_nonces == 1


def test_old_phone_without_qop() -> None:
    challenger = DigestChallenger(SECRET, REALM, algorithms=("MD5",))
    nonce = challenger.new_nonce(T0)
    ha1 = compute_ha1("MD5", "1001", REALM, "s3cret")
    response = compute_response(algorithm="MD5", ha1=ha1, nonce=nonce, method="REGISTER", uri=URI)
    header = f'Digest username="1001", realm="{REALM}", nonce="{nonce}", uri="{URI}", response="{response}"'
    assert challenger.verify("REGISTER", header, "s3cret", T0).ok
    strict = DigestChallenger(SECRET, REALM, algorithms=("MD5",), allow_no_qop=False)
    assert strict.verify("REGISTER", header, "s3cret", T0).status is AuthStatus.MALFORMED
    # A client answering a challenge that has no qop uses the RFC 2069 form too.
    no_qop = Challenge(realm=REALM, nonce=nonce)
    authorization = DigestClient("1001", "s3cret").authorize(no_qop, "REGISTER", URI)
    assert parse_credentials(authorization).qop is None
    assert challenger.verify("REGISTER", authorization, "s3cret", T0).ok


def test_auth_int_covers_the_body() -> None:
    challenger = DigestChallenger(SECRET, REALM)
    challenge = Challenge(realm=REALM, nonce=challenger.new_nonce(T0), algorithm="SHA-256", qop=("auth-int",))
    authorization = counter_cnonce().authorize(challenge, "INVITE", URI, body=b"v=0\r\n")
    assert parse_credentials(authorization).qop == "auth-int"
    assert challenger.verify("INVITE", authorization, "s3cret", T0, body=b"v=0\r\n").ok
    tampered = challenger.verify("INVITE", authorization, "s3cret", T0 + 1, body=b"v=1\r\n")
    assert tampered.status is AuthStatus.WRONG_PASSWORD


def test_client_sess_algorithm_and_userhash() -> None:
    nonce = "abcdef"
    client = DigestClient("alice", "pw", cnonce_factory=lambda: "c1")
    creds = parse_credentials(
        client.authorize(
            Challenge(realm="r", nonce=nonce, algorithm="SHA-256-sess", qop=("auth",)), "INVITE", "sip:b"
        )
    )
    session_ha1 = compute_ha1("SHA-256", "alice", "r", "pw")
    assert creds.response == compute_response(
        algorithm="SHA-256-sess",
        ha1=session_ha1,
        nonce=nonce,
        method="INVITE",
        uri="sip:b",
        qop="auth",
        nc="00000001",
        cnonce="c1",
    )
    hashed = parse_credentials(
        client.authorize(
            Challenge(realm="r", nonce="n2", algorithm="SHA-256", qop=("auth",), userhash=True),
            "INVITE",
            "sip:b",
        )
    )
    assert hashed.userhash and hashed.username != "alice" and len(hashed.username) == 64


def test_client_reports_rejected_credentials_instead_of_looping() -> None:
    challenger = DigestChallenger(SECRET, REALM)
    client = DigestClient("1001", "wrong")
    authorization = client.authorize(challenger.challenges(T0), "REGISTER", URI)
    assert challenger.verify("REGISTER", authorization, "s3cret", T0).status is AuthStatus.WRONG_PASSWORD
    with pytest.raises(CredentialsRejected, match=REALM):
        client.authorize(challenger.challenges(T0), "REGISTER", URI, sent_credentials=True)


def test_client_errors() -> None:
    client = DigestClient("1001", "pw")
    with pytest.raises(AuthError, match="no supported digest challenge"):
        client.authorize('Digest realm="r", nonce="n", algorithm=SHA-1', "REGISTER", URI)
    with pytest.raises(AuthError, match="unterminated"):
        client.authorize(['Digest realm="r'], "REGISTER", URI)
    assert client.preemptive("REGISTER", URI) is None
    # One good challenge among bad ones is enough.
    ok = client.authorize(['Digest realm="r', 'Digest realm="r", nonce="n", qop="auth"'], "REGISTER", URI)
    assert parse_credentials(ok).realm == "r"


def test_client_keeps_one_nonce_per_realm() -> None:
    client = counter_cnonce()
    client.authorize(Challenge(realm="proxy", nonce="p1", qop=("auth",)), "INVITE", URI)
    client.authorize(Challenge(realm="uas", nonce="u1", qop=("auth",)), "INVITE", URI)
    assert client.preemptive("INVITE", URI) is None  # ambiguous without a realm
    proxy = client.preemptive("INVITE", URI, realm="proxy")
    assert (
        proxy is not None
        and parse_credentials(proxy).nonce == "p1"
        and parse_credentials(proxy).nc == "00000002"
    )
    # The same nonce challenged again keeps counting.
    again = client.authorize(Challenge(realm="proxy", nonce="p1", qop=("auth",), stale=True), "INVITE", URI)
    assert parse_credentials(again).nc == "00000003"
    client.forget("proxy")
    assert client.preemptive("INVITE", URI, realm="proxy") is None


def test_challenger_configuration_errors() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        DigestChallenger(b"short", REALM)
    with pytest.raises(ValueError, match="SHA-1"):
        DigestChallenger(SECRET, REALM, algorithms=("SHA-1",))


# ---------------------------------------------------------------------------------------------------------
# Lockout (OPS-14)


def test_lockout_per_source_address_across_usernames() -> None:
    tracker = LockoutTracker(max_failures=3, window_seconds=60, lock_seconds=600)
    assert tracker.record_failure("198.51.100.9", "1001", T0) == []
    assert tracker.record_failure("198.51.100.9", "1002", T0 + 1) == []
    locked = tracker.record_failure("198.51.100.9", "1003", T0 + 2)
    assert [(lock.kind, lock.key, lock.until) for lock in locked] == [("source", "198.51.100.9", T0 + 602)]
    assert tracker.is_locked("198.51.100.9", "1004", T0 + 3)
    assert not tracker.is_locked("198.51.100.10", "1001", T0 + 3)  # the users themselves are not locked
    assert tracker.locked_until("198.51.100.9", None, T0 + 601) == T0 + 602
    assert not tracker.is_locked("198.51.100.9", None, T0 + 603)


def test_lockout_per_user_across_addresses() -> None:
    tracker = LockoutTracker(max_failures=3, window_seconds=60, lock_seconds=600)
    for i in range(2):
        assert tracker.record_failure(f"203.0.113.{i}", "1001", T0 + i) == []
    locked = tracker.record_failure("203.0.113.2", "1001", T0 + 2)
    assert [(lock.kind, lock.key) for lock in locked] == [("user", "1001")]
    assert tracker.is_locked("192.0.2.200", "1001", T0 + 10)
    assert not tracker.is_locked("192.0.2.200", "1002", T0 + 10)


def test_failures_outside_the_window_do_not_lock() -> None:
    tracker = LockoutTracker(max_failures=3, window_seconds=60, lock_seconds=600)
    for i in range(10):
        assert tracker.record_failure("198.51.100.9", "1001", T0 + i * 31) == []
    assert not tracker.is_locked("198.51.100.9", "1001", T0 + 400)


def test_success_resets_the_users_count_but_not_the_address() -> None:
    tracker = LockoutTracker(max_failures=3, window_seconds=60, lock_seconds=600)
    tracker.record_failure("198.51.100.9", "1001", T0)
    tracker.record_failure("198.51.100.9", "1001", T0 + 1)
    tracker.record_success("198.51.100.9", "1001", T0 + 2)
    assert tracker.record_failure("198.51.100.7", "1001", T0 + 3) == []
    # The shared address has now failed three times in the window.
    assert [lock.kind for lock in tracker.record_failure("198.51.100.9", "1002", T0 + 4)] == ["source"]


def test_lockout_memory_is_bounded() -> None:
    tracker = LockoutTracker(max_failures=3, window_seconds=60, lock_seconds=600, max_entries=100)
    for i in range(1000):
        tracker.record_failure(f"10.0.{i // 256}.{i % 256}", f"user{i}", T0 + i * 0.01)
    assert tracker.tracked("source") <= 100 and tracker.tracked("user") <= 100
    # Idle entries go once their window has passed.
    tracker.record_failure("192.0.2.1", None, T0 + 1000)
    assert tracker.tracked("source") == 1


def test_lockout_with_the_challenger_end_to_end() -> None:
    """The registrar's flow: reject a locked key before verifying; count only real failures."""
    challenger = DigestChallenger(SECRET, REALM)
    tracker = LockoutTracker(max_failures=3, window_seconds=60, lock_seconds=600)
    users = {"1001": "s3cret"}.get
    source = "198.51.100.66"

    def attempt(password: str, now: float) -> str:
        if tracker.is_locked(source, "1001", now):
            return "locked"
        client = DigestClient("1001", password)
        authorization = client.authorize(challenger.challenges(now), "REGISTER", URI)
        result = challenger.verify("REGISTER", authorization, users, now, request_uri=URI)
        if result.counts_as_failure:
            tracker.record_failure(source, result.username, now)
        elif result.ok:
            tracker.record_success(source, result.username, now)
        return result.status.value

    assert [attempt("guess", T0 + i) for i in range(4)] == ["wrong_password"] * 3 + ["locked"]
    assert attempt("s3cret", T0 + 10) == "locked"  # even the right password waits out the lock
    assert attempt("s3cret", T0 + 700) == "ok"


# ---------------------------------------------------------------------------------------------------------
# Other implementations: httpx's digest client, SIPp as registering phone and as verifying registrar


@pytest.mark.parametrize("algorithm", ["MD5", "SHA-256"])
@pytest.mark.parametrize(("password", "expected"), [("s3cret", 200), ("guess", 403)])
def test_httpx_digest_client_against_our_challenger(algorithm: str, password: str, expected: int) -> None:
    challenger = DigestChallenger(SECRET, REALM, algorithms=(algorithm,))

    def handler(request: httpx.Request) -> httpx.Response:
        authorization = request.headers.get("authorization")
        if authorization is None:
            return httpx.Response(401, headers={"WWW-Authenticate": challenger.challenges(T0)[0]})
        uri = request.url.raw_path.decode()
        result = challenger.verify(request.method, authorization, "s3cret", T0 + 1, request_uri=uri)
        return httpx.Response(200 if result.ok else 403)

    auth = httpx.DigestAuth("1001", password)
    with httpx.Client(transport=httpx.MockTransport(handler), auth=auth) as http:
        assert http.get("http://hotline.test/dir/index.html?x=1").status_code == expected


SIPP = shutil.which("sipp")
needs_sipp = pytest.mark.skipif(SIPP is None, reason="sipp is not installed")

SIPP_REGISTER_UAC = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="register with digest">
  <send retrans="500"><![CDATA[

REGISTER sip:[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:1001@[remote_ip]>;tag=[pid]SIPpTag00[call_number]
To: <sip:1001@[remote_ip]>
Call-ID: [call_id]
CSeq: 1 REGISTER
Contact: <sip:1001@[local_ip]:[local_port]>
Max-Forwards: 70
Content-Length: 0

]]></send>
  <recv response="401" auth="true"/>
  <send retrans="500"><![CDATA[

REGISTER sip:[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:1001@[remote_ip]>;tag=[pid]SIPpTag00[call_number]
To: <sip:1001@[remote_ip]>
Call-ID: [call_id]
CSeq: 2 REGISTER
Contact: <sip:1001@[local_ip]:[local_port]>
[authentication username=1001 password=PASSWORD]
Max-Forwards: 70
Content-Length: 0

]]></send>
  <recv response="200"/>
</scenario>
"""

SIPP_VERIFYING_REGISTRAR = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="registrar that verifies digest">
  <recv request="REGISTER"/>
  <send><![CDATA[

SIP/2.0 401 Unauthorized
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
[last_CSeq:]
WWW-Authenticate: Digest realm="sipp.test", nonce="0a4f113b2c3d", qop="auth", algorithm=MD5
Content-Length: 0

]]></send>
  <recv request="REGISTER">
    <action><verifyauth assign_to="authvalid" username="1001" password="s3cret"/></action>
  </recv>
  <nop hide="true" test="authvalid" next="good"/>
  <send next="end"><![CDATA[

SIP/2.0 403 Forbidden
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0

]]></send>
  <label id="good"/>
  <send><![CDATA[

SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0

]]></send>
  <label id="end"/>
</scenario>
"""


def _sip_head(datagram: bytes) -> tuple[str, list[tuple[str, str]]]:
    lines = datagram.decode("utf-8").split("\r\n\r\n", 1)[0].split("\r\n")
    return lines[0], [(n.strip(), v.strip()) for n, _, v in (line.partition(":") for line in lines[1:])]


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.mark.integration
@needs_sipp
@pytest.mark.parametrize(("password", "sipp_succeeds"), [("s3cret", True), ("guess", False)])
def test_sipp_registers_against_our_challenger(tmp_path: Path, password: str, sipp_succeeds: bool) -> None:
    """SIPp computes the digest; our default challenges (MD5 first) must suit such a client."""
    challenger = DigestChallenger(SECRET, "sipp.test")
    scenario = tmp_path / "uac.xml"
    scenario.write_text(SIPP_REGISTER_UAC.replace("PASSWORD", password))
    statuses: list[AuthStatus] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server:
        server.bind(("127.0.0.1", 0))
        server.settimeout(10)
        command = [SIPP or "sipp", "-sf", str(scenario), "-m", "1", "-timeout", "10s", "-i", "127.0.0.1"]
        command += ["-p", "0", "-nostdin", f"127.0.0.1:{server.getsockname()[1]}"]
        with subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) as sipp:
            try:
                for _ in range(2):
                    data, peer = server.recvfrom(65535)
                    request_line, headers = _sip_head(data)
                    copied = [
                        f"{n}: {v}"
                        for n, v in headers
                        if n.lower() in {"via", "from", "to", "call-id", "cseq"}
                    ]
                    authorization = next((v for n, v in headers if n.lower() == "authorization"), None)
                    if authorization is None:
                        extra = [f"WWW-Authenticate: {c}" for c in challenger.challenges(time.time())]
                        status = "401 Unauthorized"
                    else:
                        result = challenger.verify(
                            "REGISTER",
                            authorization,
                            "s3cret",
                            time.time(),
                            request_uri=request_line.split()[1],
                        )
                        statuses.append(result.status)
                        extra, status = [], "200 OK" if result.ok else "403 Forbidden"
                    response = ["SIP/2.0 " + status, *copied, *extra, "Content-Length: 0", "", ""]
                    server.sendto("\r\n".join(response).encode(), peer)
            finally:
                returncode = sipp.wait(timeout=20)
    expected = AuthStatus.OK if sipp_succeeds else AuthStatus.WRONG_PASSWORD
    assert statuses == [expected]
    assert (returncode == 0) is sipp_succeeds


@pytest.mark.integration
@needs_sipp
@pytest.mark.parametrize(("password", "final"), [("s3cret", "200 OK"), ("guess", "403 Forbidden")])
def test_our_client_against_a_sipp_registrar_that_verifies(tmp_path: Path, password: str, final: str) -> None:
    scenario = tmp_path / "uas.xml"
    scenario.write_text(SIPP_VERIFYING_REGISTRAR)
    sipp_port = _free_udp_port()
    command = [SIPP or "sipp", "-sf", str(scenario), "-m", "1", "-timeout", "10s", "-i", "127.0.0.1"]
    command += ["-p", str(sipp_port), "-nostdin"]
    client = DigestClient("1001", password)
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as phone,
        subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) as sipp,
    ):
        phone.bind(("127.0.0.1", 0))
        phone.settimeout(0.25)
        local_port = phone.getsockname()[1]
        uri = f"sip:127.0.0.1:{sipp_port}"

        def register(cseq: int, authorization: str | None) -> tuple[str, list[tuple[str, str]]]:
            lines = [
                f"REGISTER {uri} SIP/2.0",
                f"Via: SIP/2.0/UDP 127.0.0.1:{local_port};branch=z9hG4bK-auth-{cseq}",
                "From: <sip:1001@127.0.0.1>;tag=hotline1",
                "To: <sip:1001@127.0.0.1>",
                "Call-ID: auth-test@127.0.0.1",
                f"CSeq: {cseq} REGISTER",
                f"Contact: <sip:1001@127.0.0.1:{local_port}>",
                "Max-Forwards: 70",
                *([f"Authorization: {authorization}"] if authorization else []),
                "Content-Length: 0",
                "",
                "",
            ]
            # Retransmit like a UDP client until SIPp (still starting up at first) answers.
            for _ in range(40):
                phone.sendto("\r\n".join(lines).encode(), ("127.0.0.1", sipp_port))
                try:
                    return _sip_head(phone.recvfrom(65535)[0])
                except TimeoutError:
                    continue
            raise AssertionError("SIPp did not answer")

        try:
            status_line, headers = register(1, None)
            assert status_line == "SIP/2.0 401 Unauthorized"
            challenges = [v for n, v in headers if n.lower() == "www-authenticate"]
            final_line, _ = register(2, client.authorize(challenges, "REGISTER", uri))
        finally:
            sipp.wait(timeout=20)
    assert final_line == f"SIP/2.0 {final}"
