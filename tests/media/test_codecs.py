"""Codecs: G.711 bit-exactness, round-trip fidelity of every codec, resampling, transcoding, the registry."""

from __future__ import annotations

import importlib
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from numpy.typing import NDArray

from hotline.media.codecs import (
    CodecError,
    Resampler,
    get_codec,
    make_decoder,
    make_encoder,
    resample,
    transcoder,
)
from hotline.media.codecs.g711 import alaw_decode, alaw_encode, ulaw_decode, ulaw_encode

from .audio import align, snr_db, speech, tone

ALL_PCM = np.arange(-32768, 32768, dtype=np.int16)


def _audioop() -> object | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            return importlib.import_module("audioop")
        except ImportError:  # removed in Python 3.13
            return None


@pytest.mark.skipif(_audioop() is None, reason="audioop is not in this Python")
def test_g711_matches_audioop_for_every_sample_and_code() -> None:
    audioop = _audioop()
    linear = ALL_PCM.tobytes()
    codes = bytes(range(256))
    assert ulaw_encode(ALL_PCM) == audioop.lin2ulaw(linear, 2)  # type: ignore[attr-defined]
    assert alaw_encode(ALL_PCM) == audioop.lin2alaw(linear, 2)  # type: ignore[attr-defined]
    assert ulaw_decode(codes).tobytes() == audioop.ulaw2lin(codes, 2)  # type: ignore[attr-defined]
    assert alaw_decode(codes).tobytes() == audioop.alaw2lin(codes, 2)  # type: ignore[attr-defined]


def test_g711_known_values() -> None:
    pcm = np.array([0, -1, 32767, -32768, 1000, -1000], dtype=np.int16)
    assert ulaw_encode(pcm).hex() == "ff7e80 00ce4e".replace(" ", "")
    assert alaw_encode(pcm).hex() == "d555aa2afa7a"
    assert ulaw_decode(bytes([0x00, 0x80, 0xFF, 0x7F])).tolist() == [-32124, 32124, 0, 0]
    assert alaw_decode(bytes([0xD5, 0x55, 0xAA, 0x2A])).tolist() == [8, -8, 32256, -32256]


@pytest.mark.parametrize("law", ["PCMU", "PCMA"])
def test_g711_decode_then_encode_is_identity_on_codes(law: str) -> None:
    encoder, decoder = make_encoder(law), make_decoder(law)
    codes = bytes(range(256))
    decoded = decoder.decode(codes)
    again = encoder.encode(decoded)
    # µ-law has two codes for zero (0x7F, 0xFF); every other code survives
    assert sum(a != b for a, b in zip(codes, again, strict=True)) <= 1


@pytest.mark.parametrize("law", ["PCMU", "PCMA"])
def test_g711_tone_snr_above_30_db(law: str) -> None:
    signal = tone(1000, 1.0, 8000, level_dbm0=-10)
    decoded = make_decoder(law).decode(make_encoder(law).encode(signal))
    assert decoded.dtype == np.int16 and len(decoded) == len(signal)
    assert snr_db(signal, decoded) > 30


def _round_trip(
    codec: str, signal: NDArray[np.int16], frame: int, sample_rate: int | None = None
) -> NDArray[np.int16]:
    encoder = make_encoder(codec, sample_rate)
    decoder = make_decoder(codec, sample_rate)
    out = []
    for start in range(0, len(signal) - frame + 1, frame):
        payload = encoder.encode(signal[start : start + frame])
        out.append(decoder.decode(payload))
    return np.concatenate(out)


def test_g722_round_trip_keeps_a_tone_and_speech() -> None:
    info = get_codec("G722")
    signal = tone(1000, 1.0, 16000, level_dbm0=-10)
    decoded = _round_trip("G722", signal, info.frame_samples)
    payload = make_encoder("G722").encode(signal[:320])
    assert len(payload) == 160  # 64 kbit/s
    lag, correlation = align(signal, decoded, 64)
    assert correlation > 0.99
    assert snr_db(signal[: len(signal) - lag], decoded[lag:]) > 15
    voice = speech("Your call is important to us.", "en", rate=16000)
    voice = voice[: len(voice) // 320 * 320]
    _, correlation = align(voice, _round_trip("G722", voice, 320), 64)
    assert correlation > 0.9


@pytest.mark.parametrize("rate", [48000, 16000, 8000])
def test_opus_round_trip_keeps_a_tone(rate: int) -> None:
    signal = tone(440, 1.0, rate, level_dbm0=-10)
    decoded = _round_trip("opus", signal, rate // 50, rate)
    lag, correlation = align(signal, decoded, rate // 20)
    assert correlation > 0.9
    assert snr_db(signal[rate // 10 : len(signal) - lag], decoded[lag + rate // 10 :]) > 15


def test_opus_packets_are_compressed_and_decode_to_20_ms() -> None:
    encoder, decoder = make_encoder("opus", 16000), make_decoder("opus", 16000)
    voice = speech("Please hold.", "en", rate=16000)
    sizes = []
    for start in range(0, len(voice) - 320 + 1, 320):
        payload = encoder.encode(voice[start : start + 320])
        sizes.append(len(payload))
        assert len(decoder.decode(payload)) == 320
    assert 20 < np.mean(sizes) < 160  # about 32 kbit/s


def test_codec_input_errors_are_codec_errors() -> None:
    with pytest.raises(CodecError):
        make_encoder("opus").encode(np.zeros(100, dtype=np.int16))
    with pytest.raises(CodecError):
        make_encoder("G722").encode(np.zeros(100, dtype=np.int16))
    with pytest.raises(CodecError):
        make_encoder("PCMU").encode(np.zeros(160, dtype=np.float32))  # type: ignore[arg-type]
    with pytest.raises(CodecError):
        make_decoder("opus").decode(b"")
    with pytest.raises(CodecError):
        make_encoder("telephone-event")
    with pytest.raises(CodecError):
        get_codec("GSM")


def test_opus_decoder_survives_garbage() -> None:
    decoder = make_decoder("opus", 8000)
    for junk in (b"\xff", bytes(range(200)), b"\x00" * 3):
        try:
            samples = decoder.decode(junk)
        except CodecError:
            continue
        assert samples.dtype == np.int16
    good = make_encoder("opus", 8000).encode(tone(440, 0.02, 8000))
    assert len(decoder.decode(good)) == 160


def test_registry() -> None:
    pcmu = get_codec("pcmu")
    assert (pcmu.name, pcmu.payload_type, pcmu.static, pcmu.clock_rate, pcmu.frame_samples) == (
        "PCMU",
        0,
        True,
        8000,
        160,
    )
    assert get_codec("PCMA").payload_type == 8
    g722 = get_codec("g722")
    assert (g722.payload_type, g722.clock_rate, g722.sample_rate, g722.frame_ticks) == (9, 8000, 16000, 160)
    opus = get_codec("OPUS")
    assert (opus.rtpmap, opus.static, opus.frame_ticks) == ("opus/48000/2", False, 960)
    events = get_codec("telephone-event", clock_rate=48000)
    assert (events.rtpmap, events.fmtp) == ("telephone-event/48000", "0-16")
    with pytest.raises(CodecError):
        get_codec("PCMU", clock_rate=16000)


# --- resampling ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "target"),
    [
        (8000, 16000),
        (16000, 8000),
        (8000, 48000),
        (48000, 8000),
        (16000, 48000),
        (48000, 16000),
        (22050, 8000),
    ],
)
def test_resampling_keeps_a_tone_clean(source: int, target: int) -> None:
    signal = tone(1000, 0.5, source, amplitude=10000)
    out = resample(signal, source, target)
    assert len(out) == round(len(signal) * target / source)
    expected = tone(1000, 0.5, target, amplitude=10000)[: len(out)]
    edge = target // 50
    assert snr_db(expected[edge:-edge], out[edge:-edge]) > 50


def test_downsampling_removes_what_the_lower_rate_cannot_carry() -> None:
    out = resample(tone(5000, 0.5, 48000, amplitude=10000), 48000, 8000)
    assert np.max(np.abs(out[200:-200])) < 10  # would alias to 3 kHz at full level


@given(arrays(np.int16, st.integers(0, 2000)), st.lists(st.integers(1, 500), min_size=1, max_size=20))
@settings(max_examples=40)
def test_streaming_in_any_chunks_equals_one_pass(signal: NDArray[np.int16], chunks: list[int]) -> None:
    whole = Resampler(8000, 48000).process(signal)
    streaming = Resampler(8000, 48000)
    parts, start = [], 0
    for size in chunks * (len(signal) // max(1, sum(chunks)) + 1):
        parts.append(streaming.process(signal[start : start + size]))
        start += size
    assert np.array_equal(np.concatenate(parts)[: len(whole)], whole)


# --- transcoding --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "target"),
    [("PCMU", "G722"), ("G722", "PCMA"), ("PCMU", "opus"), ("opus", "PCMA"), ("PCMA", "PCMU")],
)
def test_transcoding_packet_by_packet_keeps_the_speech(source: str, target: str) -> None:
    rate_in = get_codec(source).sample_rate
    voice = speech("Thank you for calling.", "en", rate=rate_in)
    frame = rate_in // 50
    voice = voice[: len(voice) // frame * frame]
    encoder = make_encoder(source, rate_in)
    bridge = transcoder(source, target)
    rate_out = get_codec(target).sample_rate if target != "opus" else 8000
    decoder = make_decoder(target, rate_out)
    out = []
    for start in range(0, len(voice), frame):
        payloads = bridge.transcode(encoder.encode(voice[start : start + frame]))
        assert len(payloads) == 1  # 20 ms in, 20 ms out
        out.append(decoder.decode(payloads[0]))
    heard = np.concatenate(out)
    reference = resample(voice, rate_in, rate_out)
    _, correlation = align(reference, heard, rate_out // 10)
    assert correlation > 0.85
