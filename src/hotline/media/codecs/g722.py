"""G.722 (64 kbit/s wideband ADPCM) via PyAV's `g722` codec (FFmpeg adpcm_g722).

PCM is 16 kHz int16; the RTP clock rate is 8000 (RFC 3551's historical quirk), so 20 ms is 320 samples,
160 bytes and 160 timestamp ticks. `G722Encoder.encode(pcm)` takes any multiple of 160 samples (10 ms) and
returns exactly `len(pcm) // 2` bytes; `G722Decoder.decode(payload)` returns `2 * len(payload)` samples.
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

SAMPLE_RATE = 16000
_CHUNK = 160  # encoder frame: every multiple of 10 ms comes out at once


class G722Encoder:
    name = "G722"

    def __init__(self) -> None:
        self._context = open_encoder("g722", SAMPLE_RATE, options={"frame_size": str(_CHUNK)})

    def encode(self, pcm: NDArray[np.int16]) -> bytes:
        samples = as_mono_int16(pcm)
        if len(samples) == 0 or len(samples) % _CHUNK:
            raise CodecError(
                f"G.722 encodes multiples of {_CHUNK} samples (10 ms at 16 kHz), got {len(samples)}"
            )
        return b"".join(encode_packets(self._context, samples))


class G722Decoder:
    name = "G722"

    def __init__(self) -> None:
        self._context = open_decoder("g722", SAMPLE_RATE)

    def decode(self, payload: bytes | bytearray | memoryview) -> NDArray[np.int16]:
        return decode_payload(self._context, payload)
