"""Fuzzing the message layer: over 100,000 random and mutated messages go through parse(), the typed
accessors, make_response(), encode() and StreamFramer.feed(); nothing but ParseError may escape, no single
input may take long, and whatever parses must serialize to something that parses again to the same bytes.

Plain `random` with a fixed seed keeps the run reproducible and fast; a failure prints the seed and input.
"""

from __future__ import annotations

import contextlib
import random
import time

import pytest

from hotline.sip.errors import ParseError
from hotline.sip.message import Request, Response, StreamFramer, make_response, parse

SEED = 20260203
CASES = 100_000
SLOW_CASE_SECONDS = 2.0  # catastrophic backtracking or a quadratic loop would blow far past this
BIG = 1 << 20

SDP = (
    b"v=0\r\no=- 20518 0 IN IP6 2001:db8::10\r\ns=-\r\nc=IN IP6 2001:db8::10\r\nt=0 0\r\n"
    b"m=audio 49170 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n"
)


def _message(*lines: str, body: bytes = b"") -> bytes:
    return ("\r\n".join(lines) + f"\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body


SEEDS = [
    _message(
        "INVITE sip:+15551234567@pbx.example.com;user=phone SIP/2.0",
        "Via: SIP/2.0/UDP [2001:db8::10]:5060;branch=z9hG4bK776asdhds;rport",
        "Max-Forwards: 70",
        "To: <sip:+15551234567@pbx.example.com;user=phone>",
        'From: "Alice \\"A\\" Caller" <sip:alice@carrier.example.net>;tag=1928301774',
        "Call-ID: a84b4c76e66710@192.0.2.10",
        "CSeq: 314159 INVITE",
        'Contact: <sip:alice@192.0.2.10:5060;transport=udp>;+sip.instance="<urn:uuid:1-2>";expires=60',
        "Record-Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr;ftag=x>",
        "Allow: INVITE, ACK, CANCEL, BYE, OPTIONS",
        "Supported: replaces, timer",
        "Session-Expires: 1800;refresher=uac",
        "Content-Type: application/sdp",
        body=SDP,
    ),
    _message(
        "SIP/2.0 200 OK",
        "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds;rport=5060;received=192.0.2.10",
        "Via: SIP/2.0/TCP proxy.example.com;branch=z9hG4bKp, SIP/2.0/TLS [2001:db8::1]:5061;branch=z9hG4bKq",
        "To: <sip:+15551234567@pbx.example.com;user=phone>;tag=a6c85cf",
        "From: sip:alice@carrier.example.net;tag=1928301774",
        "Call-ID: a84b4c76e66710@192.0.2.10",
        "CSeq: 314159 INVITE",
        "Contact: <sip:pbx@198.51.100.5:5060>",
        "Content-Type: application/sdp",
        body=SDP,
    ),
    _message(
        "REGISTER sip:pbx.example.com SIP/2.0",
        "v: SIP/2.0/TCP 192.0.2.20:5060;branch=z9hG4bKnashds7",
        "Max-Forwards: 70",
        't: "Agent 201" <sip:201@pbx.example.com>',
        "f: Agent 201 <sip:201@pbx.example.com>;tag=456248",
        "i: 843817637684230@998sdasdh09",
        "CSeq: 1826 REGISTER",
        "m: *",
        "Expires: 0",
        'Authorization: Digest username="201", realm="pbx.example.com", nonce="dcd98b71", '
        'uri="sip:pbx.example.com", response="6629fae49393a05397450978507c4ef1", algorithm=MD5',
    ),
    (
        b"\r\nOPTIONS sip:pbx.example.com SIP/2.0\n"
        b"via  :  SIP / 2.0 / UDP  192.0.2.9 : 5060 ; branch = z9hG4bK1 ; rport\n"
        b"TO:\n <sip:pbx.example.com>\n"
        b"from: tel:+1-555-0100;tag=a\n"
        b"CALL-ID: 1@192.0.2.9\n"
        b"cseq: 0001\n\tOPTIONS\n"
        b"X-Odd: ;;,,;;,;\n"
        b"\n"
    ),
    _message(
        "BYE sip:bob@[2001:db8::5]:5070;transport=tcp SIP/2.0",
        "Via: SIP/2.0/TCP client.example.com:5060;branch=z9hG4bKbye",
        "Max-Forwards: 69",
        "Route: <sip:p1.example.com;lr>",
        "From: <sip:alice@example.com>;tag=1",
        "To: Bob <sip:bob@example.com>;tag=2",
        "Call-ID: bye@x",
        "CSeq: 2 BYE",
        'Reason: Q.850;cause=16;text="Normal, call clearing"',
    ),
    _message(
        "MESSAGE sip:agent@pbx.example.com SIP/2.0",
        "Via: SIP/2.0/WSS df7jal23ls0d.invalid;branch=z9hG4bKmsg",
        "From: <sip:a%20b@example.com>;tag=9",
        "To: <sip:agent@pbx.example.com>",
        "Call-ID: m@x",
        "CSeq: 7 MESSAGE",
        'Content-Type: multipart/mixed;boundary="b1"',
        body=b"--b1\r\nContent-Type: text/plain\r\n\r\nhello\r\n--b1--\r\n",
    ),
    _message(
        "SIP/2.0 401 Unauthorized",
        "Via: SIP/2.0/UDP 192.0.2.20:5060;branch=z9hG4bKnashds7;received=192.0.2.20",
        "From: <sip:201@pbx.example.com>;tag=456248",
        "To: <sip:201@pbx.example.com>;tag=2493k59kd",
        "Call-ID: 843817637684230@998sdasdh09",
        "CSeq: 1826 REGISTER",
        'WWW-Authenticate: Digest realm="pbx.example.com", qop="auth,auth-int", nonce="ea9c8e88df84"',
    ),
]

_SPECIAL = [
    b"\r",
    b"\n",
    b"\r\n",
    b"\r\n ",
    b":",
    b";",
    b",",
    b'"',
    b"\\",
    b"<",
    b">",
    b"@",
    b"%",
    b"%4",
    b"[",
    b"]",
    b"=",
    b" ",
    b"\t",
    b"\x00",
    b"\x7f",
    b"\xff",
    b"\xc3",
    b"\xe2\x80\xa8",
    "é".encode(),
    "١".encode(),
    b"sip:",
    b"SIP/2.0",
    b"tel:",
    b"?",
]
_HUGE_UNITS = [b"a", b";", b",", b'"', b"<", b"\\", b"%", b" ", b"\r\n ", b";a=b", b'\\"', b"[", b":", b"9"]
_BAD_LENGTHS = [b"-1", b"", b"abc", b"99999999999", b"1e3", "١٢".encode(), b"0x10", b"5 5", b"+5", b"4" * 12]


def _lines(data: bytes) -> list[bytes]:
    return data.split(b"\n")


def mutate(rng: random.Random, data: bytes) -> bytes:
    choice = rng.randrange(14)
    if choice == 0:  # flip a few bytes
        buffer = bytearray(data)
        for _ in range(rng.randint(1, 6)):
            if buffer:
                buffer[rng.randrange(len(buffer))] = rng.randrange(256)
        return bytes(buffer)
    if choice == 1:  # insert special bytes
        for _ in range(rng.randint(1, 4)):
            at = rng.randint(0, len(data))
            data = data[:at] + rng.choice(_SPECIAL) + data[at:]
        return data
    if choice == 2:  # delete a range
        start = rng.randint(0, len(data))
        return data[:start] + data[start + rng.randint(1, 40) :]
    if choice == 3:  # truncate
        return data[: rng.randint(0, len(data))]
    if choice in (4, 5, 6):  # duplicate, remove or swap lines
        lines = _lines(data)
        index, other = rng.randrange(len(lines)), rng.randrange(len(lines))
        if choice == 4:
            lines.insert(other, lines[index])
        elif choice == 5:
            del lines[index]
        else:
            lines[index], lines[other] = lines[other], lines[index]
        return b"\n".join(lines)
    if choice == 7:  # a huge value inside a header
        lines = _lines(data)
        index = rng.randrange(len(lines))
        huge = rng.choice(_HUGE_UNITS) * rng.choice([100, 1000, 5000, 70000])
        line = lines[index]
        at = rng.randint(0, len(line))
        lines[index] = line[:at] + huge + line[at:]
        return b"\n".join(lines)
    if choice == 8:  # a bad or lying Content-Length
        value = rng.choice([*_BAD_LENGTHS, str(rng.randint(0, 2000)).encode()])
        lines = [line for line in _lines(data) if not line.lower().startswith((b"content-length", b"l:"))]
        lines.insert(rng.randint(1, max(1, len(lines) - 2)), b"Content-Length: " + value + b"\r")
        return b"\n".join(lines)
    if choice == 9:  # garbage
        return rng.randbytes(rng.randint(0, 300))
    if choice == 10:  # splice two messages
        partner = rng.choice(SEEDS)
        return data[: rng.randint(0, len(data))] + partner[rng.randint(0, len(partner)) :]
    if choice == 11:  # fold lines at random spaces
        return data.replace(b" ", b"\r\n ", rng.randint(1, 20))
    if choice == 12:  # LF-only or mixed line ends
        return data.replace(b"\r\n", b"\n", rng.randint(1, 30))
    # many header lines
    lines = _lines(data)
    repeated = rng.choice([b"a: b\r", b"Via: SIP/2.0/UDP x\r", b" folded\r", b"x\r", b"Contact: <sip:a@b>\r"])
    lines[1:1] = [repeated] * rng.choice([10, 100])
    return b"\n".join(lines)


def random_case(rng: random.Random) -> bytes:
    roll = rng.random()
    if roll < 0.05:
        return rng.randbytes(rng.randint(0, 200))
    data = rng.choice(SEEDS)
    for _ in range(1 if roll < 0.7 else rng.randint(2, 4)):
        data = mutate(rng, data)
    return data


ACCESSORS = [
    *("call_id", "cseq", "vias", "via", "from_", "to", "contacts", "contact_wildcard"),
    *("max_forwards", "content_type", "expires"),
]


def exercise_message(message: Request | Response, *, thorough: bool = True) -> None:
    """What a server does with a parsed message; only ParseError may come out of the accessors."""
    try:
        message.validate()
    except ParseError as error:
        assert error.message is message
        for name in ACCESSORS:  # the others must fail cleanly too
            with contextlib.suppress(ParseError):
                getattr(message, name)
    encoded = message.encode()
    if not thorough:
        return
    assert parse(encoded, max_size=BIG).encode() == encoded, "encode → parse → encode must be stable"
    if isinstance(message, Request):
        answer = make_response(message, 200, to_tag="fz1")
        assert isinstance(parse(answer.encode(), max_size=BIG), Response)


def exercise(data: bytes, rng: random.Random) -> None:
    try:
        message = parse(data, max_size=BIG if rng.random() < 0.5 else 65536)
    except ParseError as error:
        assert 400 <= error.status <= 599
        # the reason is fit for a reason phrase: short, one line
        assert 0 < len(error.reason) < 300 and "\r" not in error.reason and "\n" not in error.reason
        if isinstance(error.message, Request):
            make_response(error.message, error.status, error.reason).encode()
    else:
        exercise_message(message, thorough=rng.random() < 0.3)
    framer = StreamFramer(max_message_size=BIG)
    cut = sorted(rng.randint(0, len(data)) for _ in range(rng.randint(0, 3)))
    pieces = [data[start:end] for start, end in zip([0, *cut], [*cut, len(data)], strict=True)]
    try:
        for piece in pieces:
            for frame in framer.feed(piece):
                if frame != data:  # (the whole input was parsed above already)
                    with contextlib.suppress(ParseError):
                        parse(frame, max_size=BIG)
    except ParseError as error:
        assert framer.error is error


def test_fuzz_only_parse_error_escapes() -> None:
    rng = random.Random(SEED)
    slowest = 0.0
    for case in range(CASES):
        data = random_case(rng)
        started = time.perf_counter()
        try:
            exercise(data, rng)
        except ParseError:
            pytest.fail(f"ParseError escaped the harness itself at case {case} (seed {SEED}): {data[:300]!r}")
        except Exception as error:
            raise AssertionError(f"case {case} (seed {SEED}) raised {error!r} for {data[:300]!r}") from error
        slowest = max(slowest, time.perf_counter() - started)
    assert slowest < SLOW_CASE_SECONDS, f"one input took {slowest:.2f} s"


def test_fuzz_pathological_shapes_are_fast() -> None:
    """Inputs shaped to trigger backtracking or quadratic work, each at the 64 KiB limit."""
    start_line = b"INVITE sip:a@b SIP/2.0\r\n"
    mandatory = b"Via: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\n"
    mandatory += b"Call-ID: x\r\nCSeq: 1 INVITE\r\n"
    shapes = [
        b"Contact: " + b"<" * 60000,
        b"Contact: " + b'"' * 60000,
        b"Contact: " + b'"\\' * 30000,
        b"Contact: <sip:a@b>" + b";a" * 30000,
        b"Contact: " + b"," * 60000,
        b"Contact: " + b"<sip:a@b>, " * 5000,
        b"Via: SIP/2.0/UDP h" + b";x=" + b"9" * 60000,
        b"Via: " + b"SIP/2.0/UDP h, " * 4000,
        b"From: " + b"a " * 30000 + b"<sip:a@b>",
        b"To: <sip:" + b"%41" * 20000 + b"@b>",
        b"To: <sip:a@" + b"a." * 30000 + b"b>",
        b"To: <sip:[" + b":" * 60000 + b"]>",
        b"Subject: x" + b"\r\n y" * 20000,
        b"Content-Length: 0" + b"\r\n 0" * 20000,
        b"X: y\r\n" * 10000,
        b"CSeq: " + b"9" * 60000 + b" INVITE",
    ]
    for shape in shapes:
        data = start_line + mandatory + shape + b"\r\n\r\n"
        started = time.perf_counter()
        try:
            message = parse(data)
        except ParseError:
            pass
        else:
            exercise_message(message)
        with contextlib.suppress(ParseError):
            StreamFramer().feed(data)
        assert time.perf_counter() - started < SLOW_CASE_SECONDS, shape[:40]
