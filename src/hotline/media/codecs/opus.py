"""Opus (RFC 6716, RTP per RFC 7587) via PyAV's `libopus`.

The RTP clock is always 48 kHz; the PCM side can be 8, 12, 16, 24 or 48 kHz (`sample_rate`), so a wideband
mixer need not work at 48 kHz. `OpusEncoder.encode(pcm)` takes exactly one 20 ms frame and returns one packet;
`OpusDecoder.decode(payload)` returns the packet's samples (any Opus frame duration) at `sample_rate`.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from hotline.media.codecs.base import (
    CodecError,
    as_mono_int16,
    decode_payload,
    encode_packets,
    open_decoder,
    open_encoder,
)
from hotline.media.codecs.resample import Resampler

CLOCK_RATE = 48000
SAMPLE_RATES = (8000, 12000, 16000, 24000, 48000)


def _check_rate(sample_rate: int) -> None:
    if sample_rate not in SAMPLE_RATES:
        raise CodecError(f"Opus works at {SAMPLE_RATES} Hz, not {sample_rate}")


class OpusEncoder:
    name = "opus"

    def __init__(self, sample_rate: int = CLOCK_RATE, bit_rate: int = 32000, *, fec: bool = True) -> None:
        _check_rate(sample_rate)
        self.sample_rate = sample_rate
        self.frame_samples = sample_rate // 50
        options = {"application": "voip", "fec": "1" if fec else "0"}
        if fec:
            options["packet_loss"] = "5"  # expected loss percentage: makes libopus actually add in-band FEC
        self._context = open_encoder("libopus", sample_rate, bit_rate=bit_rate, options=options)

    def encode(self, pcm: NDArray[np.int16]) -> bytes:
        samples = as_mono_int16(pcm)
        if len(samples) != self.frame_samples:
            raise CodecError(f"Opus encodes 20 ms frames ({self.frame_samples} samples), got {len(samples)}")
        packets = encode_packets(self._context, samples)
        if len(packets) != 1:
            raise CodecError(f"libopus returned {len(packets)} packets for one frame")
        return packets[0]


class OpusDecoder:
    name = "opus"

    def __init__(self, sample_rate: int = CLOCK_RATE) -> None:
        _check_rate(sample_rate)
        self.sample_rate = sample_rate
        # FFmpeg's libopus decoder always yields 48 kHz
        self._context = open_decoder("libopus", CLOCK_RATE)
        self._resampler = Resampler(CLOCK_RATE, sample_rate) if sample_rate != CLOCK_RATE else None

    def decode(self, payload: bytes | bytearray | memoryview) -> NDArray[np.int16]:
        samples = decode_payload(self._context, payload)
        if self._resampler is not None:
            return self._resampler.process(samples)
        return samples
