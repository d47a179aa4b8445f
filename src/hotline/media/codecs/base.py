"""What every codec shares: `CodecError`, the `Encoder`/`Decoder` protocols, and the PyAV plumbing that the
G.722 and Opus codecs use (int16 numpy frames in, payload bytes out, and back)."""

from __future__ import annotations

from typing import Protocol

import av
import numpy as np
from av.audio.codeccontext import AudioCodecContext
from av.audio.frame import AudioFrame
from numpy.typing import NDArray


class CodecError(ValueError):
    """A payload the decoder cannot use, or PCM the encoder cannot take (wrong type or frame size)."""


class Encoder(Protocol):
    name: str

    def encode(self, pcm: NDArray[np.int16]) -> bytes: ...


class Decoder(Protocol):
    name: str

    def decode(self, payload: bytes | bytearray | memoryview) -> NDArray[np.int16]: ...


def as_mono_int16(pcm: NDArray[np.int16]) -> NDArray[np.int16]:
    array = np.asarray(pcm)
    if array.dtype != np.int16:
        raise CodecError(f"encoders take int16 samples, got {array.dtype}")
    return np.ascontiguousarray(array.reshape(-1))


def open_encoder(
    codec_name: str, sample_rate: int, *, bit_rate: int | None = None, options: dict[str, str] | None = None
) -> AudioCodecContext:
    context = av.CodecContext.create(codec_name, "w")
    if not isinstance(context, AudioCodecContext):
        raise CodecError(f"{codec_name} is not an audio codec")
    context.sample_rate = sample_rate
    context.layout = "mono"
    context.format = "s16"
    if bit_rate is not None:
        context.bit_rate = bit_rate
    if options:
        context.options = dict(options)
    context.open()
    return context


def open_decoder(codec_name: str, sample_rate: int) -> AudioCodecContext:
    context = av.CodecContext.create(codec_name, "r")
    if not isinstance(context, AudioCodecContext):
        raise CodecError(f"{codec_name} is not an audio codec")
    context.sample_rate = sample_rate
    context.layout = "mono"
    context.open()
    return context


def encode_packets(context: AudioCodecContext, pcm: NDArray[np.int16]) -> list[bytes]:
    frame = AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
    frame.sample_rate = context.sample_rate
    try:
        return [bytes(packet) for packet in context.encode(frame)]
    except av.FFmpegError as error:
        raise CodecError(f"{context.name} encoder: {error}") from error


def decode_payload(context: AudioCodecContext, payload: bytes | bytearray | memoryview) -> NDArray[np.int16]:
    if len(payload) == 0:
        # an empty packet would put the FFmpeg decoder into draining mode for good
        raise CodecError(f"empty {context.name} payload")
    try:
        frames = context.decode(av.Packet(bytes(payload)))
    except av.FFmpegError as error:
        raise CodecError(f"{context.name} decoder: {error}") from error
    parts = []
    for frame in frames:
        samples = frame.to_ndarray()
        if frame.format.name != "s16":
            samples = np.clip(np.rint(samples * 32768.0), -32768, 32767)
        if samples.shape[0] > 1 and not frame.format.is_planar:
            samples = samples.reshape(-1, frame.layout.nb_channels).T
        parts.append(samples[0] if samples.ndim == 2 and samples.shape[0] >= 1 else samples.reshape(-1))
    if not parts:
        return np.zeros(0, dtype=np.int16)
    return np.concatenate(parts).astype(np.int16, copy=False)
