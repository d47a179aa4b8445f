"""SIP message layer throughput on one core: parse, serialize, and both, for an INVITE with SDP, a 200 OK
with SDP and a REGISTER (issue #2; target ≥ 20,000 messages/s for parse + serialize).

    .venv/bin/python bench/sip_parse.py [--seconds 1.0]

Rates are per CPU second of this process (time.process_time), so they mean "on one core" even when other
work shares the machine; each figure is the best of five runs of about `--seconds`/5 CPU seconds.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from hotline.sip.message import Request, Response, parse

SDP = (
    b"v=0\r\n"
    b"o=alice 2890844526 2890844526 IN IP4 192.0.2.10\r\n"
    b"s=-\r\n"
    b"c=IN IP4 192.0.2.10\r\n"
    b"t=0 0\r\n"
    b"m=audio 49170 RTP/AVP 0 8 101\r\n"
    b"a=rtpmap:0 PCMU/8000\r\n"
    b"a=rtpmap:8 PCMA/8000\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\n"
    b"a=fmtp:101 0-16\r\n"
    b"a=ptime:20\r\n"
    b"a=sendrecv\r\n"
)

INVITE = (
    b"INVITE sip:+15551234567@pbx.example.com;user=phone SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b"To: <sip:+15551234567@pbx.example.com;user=phone>\r\n"
    b'From: "Alice Caller" <sip:alice@carrier.example.net>;tag=1928301774\r\n'
    b"Call-ID: a84b4c76e66710@192.0.2.10\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Contact: <sip:alice@192.0.2.10:5060;transport=udp>\r\n"
    b"Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE, REFER, NOTIFY\r\n"
    b"Supported: replaces, timer\r\n"
    b"User-Agent: ExamplePhone/1.2.3\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: " + str(len(SDP)).encode() + b"\r\n\r\n" + SDP
)

OK_200 = (
    b"SIP/2.0 200 OK\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds;rport=5060;received=192.0.2.10\r\n"
    b"To: <sip:+15551234567@pbx.example.com;user=phone>;tag=a6c85cf\r\n"
    b'From: "Alice Caller" <sip:alice@carrier.example.net>;tag=1928301774\r\n'
    b"Call-ID: a84b4c76e66710@192.0.2.10\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Contact: <sip:pbx@198.51.100.5:5060>\r\n"
    b"Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE, REFER, NOTIFY\r\n"
    b"Supported: replaces, timer\r\n"
    b"Server: Hotline\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: " + str(len(SDP)).encode() + b"\r\n\r\n" + SDP
)

REGISTER = (
    b"REGISTER sip:pbx.example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.20:5060;branch=z9hG4bKnashds7;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b'To: "Agent 201" <sip:201@pbx.example.com>\r\n'
    b'From: "Agent 201" <sip:201@pbx.example.com>;tag=456248\r\n'
    b"Call-ID: 843817637684230@998sdasdh09\r\n"
    b"CSeq: 1826 REGISTER\r\n"
    b"Contact: <sip:201@192.0.2.20:5060>;expires=3600"
    b';+sip.instance="<urn:uuid:00000000-0000-1000-8000-AABBCCDDEEFF>"\r\n'
    b'Authorization: Digest username="201", realm="pbx.example.com",'
    b' nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", uri="sip:pbx.example.com",'
    b' response="6629fae49393a05397450978507c4ef1", algorithm=MD5\r\n'
    b"Expires: 3600\r\n"
    b"User-Agent: ExamplePhone/1.2.3\r\n"
    b"Content-Length: 0\r\n\r\n"
)


def rate(operation: Callable[[], object], seconds: float) -> float:
    """Operations per CPU second: best of five runs, each about seconds/5 of CPU time."""
    batch = 200
    best = 0.0
    for _ in range(5):
        count = 0
        start = time.process_time()
        deadline = start + seconds / 5
        while True:
            for _ in range(batch):
                operation()
            count += batch
            now = time.process_time()
            if now >= deadline:
                break
        best = max(best, count / (now - start))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="time per figure (default 1.0)")
    args = parser.parse_args()
    print(f"{'message':<10} {'bytes':>6} {'parse/s':>10} {'encode/s':>10} {'both/s':>10}")
    for name, data in (("INVITE", INVITE), ("200 OK", OK_200), ("REGISTER", REGISTER)):
        message: Request | Response = parse(data)
        assert parse(message.encode()).encode() == message.encode()
        parse_rate = rate(lambda data=data: parse(data), args.seconds)  # type: ignore[misc]
        encode_rate = rate(message.encode, args.seconds)
        both_rate = rate(lambda data=data: parse(data).encode(), args.seconds)  # type: ignore[misc]
        print(f"{name:<10} {len(data):>6} {parse_rate:>10,.0f} {encode_rate:>10,.0f} {both_rate:>10,.0f}")


if __name__ == "__main__":
    main()
