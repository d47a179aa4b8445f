"""The echo test (issue #3 item 9): a leg hears itself, which proves two-way audio from any phone.

`Echo(session)` sends every audio packet the peer sends straight back on the session's own outgoing stream
(our SSRC, continuous sequence numbers and timestamps), without decoding. The session still handles what it
receives as usual first (latching to the peer's address behind NAT, statistics, DTMF), so the echo goes
where the peer's packets come from. `stop()` ends it.
"""

from __future__ import annotations

import time

from hotline.media.rtp import RtpError, payload_bounds, read_header, ts_delta
from hotline.media.session import Address, MediaError, MediaSession

_DEFAULT_TICKS = 160  # 20 ms at 8 kHz, for the first packet


class Echo:
    def __init__(self, session: MediaSession) -> None:
        if session.closed:
            raise MediaError(f"media session {session.id} is closed")
        if session.codecs is None:
            raise MediaError(f"media session {session.id} has no negotiated parameters yet")
        self.session = session
        self.echoed = 0
        self._last_ts: int | None = None
        session.stop_playing()
        session.set_receiver(self._received)

    def _received(self, data: bytes, addr: Address) -> None:
        session = self.session
        MediaSession.datagram_received(session, data, addr)  # latching, statistics, DTMF
        codecs = session.codecs
        if codecs is None or session.closed:
            return
        try:
            _, pt, _, ts, _ = read_header(data)
            start, end = payload_bounds(data)
        except RtpError:
            return
        codec = codecs.receive.get(pt)
        if codec is None or codec.name != codecs.send.name:
            return  # DTMF events and other codecs are not echoed
        ticks = _DEFAULT_TICKS if self._last_ts is None else max(1, ts_delta(ts, self._last_ts))
        self._last_ts = ts
        session.send_payload(data[start:end], ticks, time.monotonic())
        self.echoed += 1

    def stop(self) -> None:
        if not self.session.closed:
            self.session.set_receiver(None)
