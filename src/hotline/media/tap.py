"""Listening to what one leg sends, decoded (voicemail, and anything else that records a single party).

`ReceiveTap(session, on_frame)` calls `on_frame(pcm, media_seconds)` with each audio packet the peer sends,
decoded to 8 kHz mono int16, and the packet's position on the stream's own clock (seconds since the first
packet, from RTP timestamps, so lost packets leave gaps rather than shifting what follows). The session still
handles every packet as usual first (latching, statistics, DTMF). `stop()` detaches it.
"""

from __future__ import annotations

from collections.abc import Callable

from hotline.media.codecs import CodecError, Decoder, make_decoder
from hotline.media.rtp import RtpError, payload_bounds, read_header, ts_delta
from hotline.media.session import Address, Frame, MediaError, MediaSession


class ReceiveTap:
    def __init__(self, session: MediaSession, on_frame: Callable[[Frame, float], None]) -> None:
        if session.closed or session.codecs is None:
            raise MediaError(f"media session {session.id} is closed or not negotiated")
        self.session = session
        self.on_frame = on_frame
        self._decoders: dict[int, Decoder] = {}
        self._first_ts: int | None = None
        session.set_receiver(self._received)

    def _received(self, data: bytes, addr: Address) -> None:
        session = self.session
        MediaSession.datagram_received(session, data, addr)
        codecs = session.codecs
        if codecs is None or session.closed:
            return
        try:
            _, pt, _, ts, _ = read_header(data)
            start, end = payload_bounds(data)
        except RtpError:
            return
        codec = codecs.receive.get(pt)
        if codec is None or codec.sample_rate != 8000:
            return  # DTMF events; wideband codecs are not recorded here
        decoder = self._decoders.get(pt)
        if decoder is None:
            decoder = self._decoders[pt] = make_decoder(codec.name)
        try:
            pcm = decoder.decode(data[start:end])
        except CodecError:
            return
        if self._first_ts is None:
            self._first_ts = ts
        self.on_frame(pcm, max(0, ts_delta(ts, self._first_ts)) / codec.clock_rate)

    def stop(self) -> None:
        if not self.session.closed:
            self.session.set_receiver(None)
