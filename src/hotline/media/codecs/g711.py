"""G.711 µ-law (PCMU) and A-law (PCMA) by lookup tables, bit-exact with ITU-T G.711.

- `ulaw_encode(pcm) -> bytes`, `ulaw_decode(payload) -> int16 array`, `alaw_encode`, `alaw_decode`.
- `ULAW_DECODE`, `ALAW_DECODE` (256 int16 entries), `ULAW_ENCODE`, `ALAW_ENCODE` (65536 uint8
  entries indexed by the 16-bit sample's bit pattern).
- `PcmuEncoder`/`PcmuDecoder`, `PcmaEncoder`/`PcmaDecoder`: the `codecs` Encoder/Decoder interface.

Encoding uses the 14-bit (µ-law) and 13-bit (A-law) magnitude of each 16-bit sample, as G.711 does.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from hotline.media.codecs.base import as_mono_int16

_SEG_ULAW_END = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF], dtype=np.int32)
_SEG_ALAW_END = np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF], dtype=np.int32)


def _build_ulaw_decode() -> NDArray[np.int16]:
    code = ~np.arange(256, dtype=np.int32) & 0xFF
    exponent = (code >> 4) & 0x07
    magnitude = (((code & 0x0F) << 3) + 0x84) << exponent
    linear = np.where(code & 0x80, 0x84 - magnitude, magnitude - 0x84)
    return linear.astype(np.int16)


def _build_alaw_decode() -> NDArray[np.int16]:
    code = np.arange(256, dtype=np.int32) ^ 0x55
    exponent = (code & 0x70) >> 4
    mantissa = (code & 0x0F) << 4
    magnitude = np.where(exponent == 0, mantissa + 8, (mantissa + 0x108) << np.maximum(exponent - 1, 0))
    linear = np.where(code & 0x80, magnitude, -magnitude)
    return linear.astype(np.int16)


def _build_ulaw_encode() -> NDArray[np.uint8]:
    pcm = np.arange(65536, dtype=np.int32)
    pcm = np.where(pcm >= 32768, pcm - 65536, pcm) >> 2  # index is the int16 bit pattern; 14-bit value
    mask = np.where(pcm < 0, 0x7F, 0xFF)
    magnitude = np.minimum(np.abs(pcm), 8159) + 0x21  # clip, then add the bias (0x84 >> 2)
    segment = np.searchsorted(_SEG_ULAW_END, magnitude)  # first end >= magnitude
    code = (segment << 4) | ((magnitude >> (segment + 1)) & 0x0F)
    code = np.where(segment >= 8, 0x7F, code)
    return (code ^ mask).astype(np.uint8)


def _build_alaw_encode() -> NDArray[np.uint8]:
    pcm = np.arange(65536, dtype=np.int32)
    pcm = np.where(pcm >= 32768, pcm - 65536, pcm) >> 3  # 13-bit value
    mask = np.where(pcm >= 0, 0xD5, 0x55)
    magnitude = np.where(pcm >= 0, pcm, -pcm - 1)
    segment = np.searchsorted(_SEG_ALAW_END, magnitude)
    shift = np.where(segment < 2, 1, segment)
    code = (segment << 4) | ((magnitude >> shift) & 0x0F)
    code = np.where(segment >= 8, 0x7F, code)
    return (code ^ mask).astype(np.uint8)


ULAW_DECODE = _build_ulaw_decode()
ALAW_DECODE = _build_alaw_decode()
ULAW_ENCODE = _build_ulaw_encode()
ALAW_ENCODE = _build_alaw_encode()
for _table in (ULAW_DECODE, ALAW_DECODE, ULAW_ENCODE, ALAW_ENCODE):
    _table.flags.writeable = False


def ulaw_encode(pcm: NDArray[np.int16]) -> bytes:
    return ULAW_ENCODE[as_mono_int16(pcm).view(np.uint16)].tobytes()


def alaw_encode(pcm: NDArray[np.int16]) -> bytes:
    return ALAW_ENCODE[as_mono_int16(pcm).view(np.uint16)].tobytes()


def ulaw_decode(payload: bytes | bytearray | memoryview) -> NDArray[np.int16]:
    return ULAW_DECODE[np.frombuffer(payload, dtype=np.uint8)]


def alaw_decode(payload: bytes | bytearray | memoryview) -> NDArray[np.int16]:
    return ALAW_DECODE[np.frombuffer(payload, dtype=np.uint8)]


class PcmuEncoder:
    name = "PCMU"

    def encode(self, pcm: NDArray[np.int16]) -> bytes:
        return ulaw_encode(pcm)


class PcmuDecoder:
    name = "PCMU"

    def decode(self, payload: bytes | bytearray | memoryview) -> NDArray[np.int16]:
        return ulaw_decode(payload)


class PcmaEncoder:
    name = "PCMA"

    def encode(self, pcm: NDArray[np.int16]) -> bytes:
        return alaw_encode(pcm)


class PcmaDecoder:
    name = "PCMA"

    def decode(self, payload: bytes | bytearray | memoryview) -> NDArray[np.int16]:
        return alaw_decode(payload)
