"""Audio codecs for RTP: a registry by SDP name, encoders/decoders on int16 numpy arrays, transcoding.

- `CodecInfo`: `name` (SDP encoding name), `clock_rate` (RTP), `sample_rate` (PCM the encoder/decoder use),
  `channels` (as SDP writes it), `payload_type` (static, or the customary dynamic one), `static`, `fmtp`,
  `frame_samples` / `frame_ticks` / `frame_bytes` for 20 ms, `.rtpmap` ("opus/48000/2").
- `CODECS` (by lower-case name: "pcmu", "pcma", "g722", "opus", "telephone-event");
  `get_codec(name, clock_rate=None) -> CodecInfo` (case-insensitive; raises `CodecError`).
- `make_encoder(name, sample_rate=None) -> Encoder` with `encode(pcm: NDArray[int16]) -> bytes`;
  `make_decoder(name, sample_rate=None) -> Decoder` with `decode(payload) -> NDArray[int16]`.
  `sample_rate` only matters for Opus (PCM at 8/12/16/24/48 kHz); the others use `CodecInfo.sample_rate`.
- `transcoder(from_codec, to_codec) -> Transcoder`: `.transcode(payload) -> list[bytes]` (one payload out per
  payload in for 20 ms packets); used only when two legs share no codec.
- `Resampler`, `resample` (see `hotline.media.codecs.resample`), `CodecError`, `Encoder`, `Decoder`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from numpy.typing import NDArray

from hotline.media.codecs.base import CodecError, Decoder, Encoder, as_mono_int16
from hotline.media.codecs.g711 import PcmaDecoder, PcmaEncoder, PcmuDecoder, PcmuEncoder
from hotline.media.codecs.g722 import G722Decoder, G722Encoder
from hotline.media.codecs.opus import OpusDecoder, OpusEncoder
from hotline.media.codecs.resample import Resampler, resample

__all__ = [
    "CODECS",
    "CodecError",
    "CodecInfo",
    "Decoder",
    "Encoder",
    "Resampler",
    "Transcoder",
    "get_codec",
    "make_decoder",
    "make_encoder",
    "resample",
    "transcoder",
]


@dataclass(frozen=True, slots=True)
class CodecInfo:
    name: str
    clock_rate: int
    sample_rate: int
    channels: int
    payload_type: int
    static: bool
    fmtp: str | None = None
    bytes_per_20ms: int | None = None  # constant-bit-rate codecs only

    @property
    def frame_samples(self) -> int:
        """PCM samples in 20 ms at `sample_rate`."""
        return self.sample_rate // 50

    @property
    def frame_ticks(self) -> int:
        """RTP timestamp increment for 20 ms."""
        return self.clock_rate // 50

    @property
    def frame_bytes(self) -> int | None:
        return self.bytes_per_20ms

    @property
    def rtpmap(self) -> str:
        text = f"{self.name}/{self.clock_rate}"
        return f"{text}/{self.channels}" if self.channels != 1 else text

    @property
    def is_audio(self) -> bool:
        return self.name != "telephone-event"


CODECS: dict[str, CodecInfo] = {
    "pcmu": CodecInfo("PCMU", 8000, 8000, 1, 0, True, bytes_per_20ms=160),
    "pcma": CodecInfo("PCMA", 8000, 8000, 1, 8, True, bytes_per_20ms=160),
    "g722": CodecInfo("G722", 8000, 16000, 1, 9, True, bytes_per_20ms=160),
    "opus": CodecInfo("opus", 48000, 48000, 2, 111, False, fmtp="minptime=10;useinbandfec=1"),
    "telephone-event": CodecInfo("telephone-event", 8000, 8000, 1, 101, False, fmtp="0-16"),
}


def get_codec(name: str, clock_rate: int | None = None) -> CodecInfo:
    """The codec called `name` in SDP; `clock_rate` picks telephone-event's rate
    (it follows the audio codec)."""
    info = CODECS.get(name.lower())
    if info is None:
        raise CodecError(f"unknown codec {name!r}")
    if clock_rate is not None and clock_rate != info.clock_rate:
        if info.name != "telephone-event":
            raise CodecError(f"{info.name} runs at {info.clock_rate} Hz, not {clock_rate}")
        return replace(info, clock_rate=clock_rate, sample_rate=clock_rate)
    return info


def make_encoder(name: str, sample_rate: int | None = None) -> Encoder:
    key = get_codec(name).name.lower()
    if key == "pcmu":
        return PcmuEncoder()
    if key == "pcma":
        return PcmaEncoder()
    if key == "g722":
        return G722Encoder()
    if key == "opus":
        return OpusEncoder(sample_rate or 48000)
    raise CodecError(f"{name} carries no audio to encode")


def make_decoder(name: str, sample_rate: int | None = None) -> Decoder:
    key = get_codec(name).name.lower()
    if key == "pcmu":
        return PcmuDecoder()
    if key == "pcma":
        return PcmaDecoder()
    if key == "g722":
        return G722Decoder()
    if key == "opus":
        return OpusDecoder(sample_rate or 48000)
    raise CodecError(f"{name} carries no audio to decode")


class Transcoder:
    """Decode one codec, convert the sample rate, encode another; streaming, with state across packets."""

    def __init__(self, from_codec: str, to_codec: str) -> None:
        self.source = get_codec(from_codec)
        self.target = get_codec(to_codec)
        if not (self.source.is_audio and self.target.is_audio):
            raise CodecError("only audio codecs can be transcoded")
        # Opus works at any of the usual rates itself, so let it meet the other side's rate
        if self.source.name == "opus":
            rate = 48000 if self.target.name == "opus" else self.target.sample_rate
            self._decoder = make_decoder("opus", rate)
            self._encoder = make_encoder(self.target.name)
            self._resampler: Resampler | None = None
            self._pcm_rate = rate
        elif self.target.name == "opus":
            self._decoder = make_decoder(self.source.name)
            self._encoder = make_encoder("opus", self.source.sample_rate)
            self._resampler = None
            self._pcm_rate = self.source.sample_rate
        else:
            self._decoder = make_decoder(self.source.name)
            self._encoder = make_encoder(self.target.name)
            same = self.source.sample_rate == self.target.sample_rate
            self._resampler = None if same else Resampler(self.source.sample_rate, self.target.sample_rate)
            self._pcm_rate = self.target.sample_rate
        self._frame = self._pcm_rate // 50 if self.target.name == "opus" else 0
        self._pending = np.zeros(0, dtype=np.int16)

    def transcode(self, payload: bytes | bytearray | memoryview) -> list[bytes]:
        """Payloads in the target codec for one payload in the source codec. A 20 ms packet gives one 20 ms
        packet; other durations are passed through whole, except to Opus, which is cut into 20 ms frames."""
        pcm = self._decoder.decode(payload)
        if self._resampler is not None:
            pcm = self._resampler.process(pcm)
        if not self._frame:
            if self.target.name == "g722":
                return self._encode_g722(pcm)
            return [self._encoder.encode(pcm)] if len(pcm) else []
        self._pending = np.concatenate((self._pending, pcm))
        out = []
        while len(self._pending) >= self._frame:
            out.append(self._encoder.encode(self._pending[: self._frame]))
            self._pending = self._pending[self._frame :]
        return out

    def _encode_g722(self, pcm: NDArray[np.int16]) -> list[bytes]:
        # G.722's encoder takes 10 ms steps; keep a remainder for odd durations
        self._pending = np.concatenate((self._pending, as_mono_int16(pcm)))
        usable = len(self._pending) - len(self._pending) % 160
        if usable == 0:
            return []
        data = self._encoder.encode(self._pending[:usable])
        self._pending = self._pending[usable:]
        return [data]


def transcoder(from_codec: str, to_codec: str) -> Transcoder:
    return Transcoder(from_codec, to_codec)
