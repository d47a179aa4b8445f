"""DTMF: RFC 4733 events (sender and a receiver robust to loss and reordering), SIP INFO bodies, and the
in-band detector against Q.24 tolerances, noise and real speech."""

from __future__ import annotations

import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

from hotline.media.codecs.g711 import alaw_decode, alaw_encode, ulaw_decode, ulaw_encode
from hotline.media.dtmf import (
    DTMF_DIGITS,
    DtmfError,
    DtmfReceiver,
    DtmfSender,
    GoertzelDetector,
    TelephoneEvent,
    build_dtmf_relay,
    dbm0,
    dtmf_samples,
    parse_dtmf_info,
)

from .audio import ESPEAK, add_noise, dtmf, silence, speech, white_noise

# --- RFC 4733 -----------------------------------------------------------------------------------------------


@given(st.integers(0, 255), st.booleans(), st.integers(0, 63), st.integers(0, 0xFFFF))
def test_telephone_event_round_trip(event: int, end: bool, volume: int, duration: int) -> None:
    packet = TelephoneEvent(event, end, volume, duration)
    assert TelephoneEvent.parse(packet.serialize()) == packet


def test_telephone_event_layout_and_errors() -> None:
    assert TelephoneEvent(11, True, 10, 800).serialize() == bytes.fromhex("0b8a0320")
    with pytest.raises(DtmfError):
        TelephoneEvent.parse(b"\x01\x02")
    with pytest.raises(DtmfError):
        TelephoneEvent(1, volume=64).serialize()


def test_sender_packet_sequence() -> None:
    packets = DtmfSender(clock_rate=8000, packet_interval=0.02, volume=7).packets(
        "5", timestamp=12345, duration=0.1
    )
    events = [TelephoneEvent.parse(p.payload) for p in packets]
    assert [p.marker for p in packets] == [True] + [False] * (len(packets) - 1)
    assert {p.timestamp for p in packets} == {12345}
    assert {e.event for e in events} == {5} and {e.volume for e in events} == {7}
    assert [e.duration for e in events] == [160, 320, 480, 640, 800, 800, 800]
    assert [e.end for e in events] == [False] * 4 + [True] * 3
    assert [p.offset for p in packets] == pytest.approx([0.02 * i for i in range(7)])
    with pytest.raises(DtmfError):
        DtmfSender().packets("X", 0)
    with pytest.raises(DtmfError):
        DtmfSender().packets("1", 0, duration=9.0)  # longer than one event can say at 8 kHz


def test_receiver_reports_a_press_once() -> None:
    receiver = DtmfReceiver()
    packets = DtmfSender().packets("#", timestamp=1000, duration=0.2)
    reported = [receiver.feed(p.timestamp, p.payload) for p in packets]
    digits = [d for d in reported if d is not None]
    assert [(d.digit, d.start) for d in digits] == [("#", 1000)]
    assert reported[0] is not None  # reported on the first packet, not at the end


def test_receiver_reports_when_only_end_packets_arrive() -> None:
    receiver = DtmfReceiver()
    packets = DtmfSender().packets("7", timestamp=5000, duration=0.12)
    ends = [p for p in packets if TelephoneEvent.parse(p.payload).end]
    first = receiver.feed(ends[0].timestamp, ends[0].payload)
    assert first is not None and (first.digit, first.duration) == ("7", 960)
    assert all(receiver.feed(p.timestamp, p.payload) is None for p in ends[1:])


def test_receiver_ignores_non_digit_events() -> None:
    assert DtmfReceiver().feed(0, TelephoneEvent(16).serialize()) is None  # flash


presses = st.lists(st.sampled_from(DTMF_DIGITS), min_size=1, max_size=8)


@given(presses, st.randoms(use_true_random=False), st.floats(0.0, 0.8))
@settings(max_examples=60)
def test_receiver_each_press_once_despite_loss_duplication_and_reordering(
    digits: list[str], rng: random.Random, loss: float
) -> None:
    sender = DtmfSender()
    stream = []
    timestamp = 0xFFFFF000  # across the timestamp wrap
    for digit in digits:
        packets = sender.packets(digit, timestamp, duration=rng.choice([0.04, 0.1, 0.3]))
        kept = [p for p in packets if rng.random() >= loss] or [rng.choice(packets)]  # a press with no
        # packet at all cannot be known; keep at least one
        kept += rng.sample(kept, k=min(len(kept), 3))  # duplicates
        stream.extend(kept)
        timestamp = (timestamp + 8000) & 0xFFFFFFFF
    # reorder within a window of a few packets, as the network does
    for i in range(len(stream) - 1):
        j = min(len(stream) - 1, i + rng.randrange(0, 4))
        stream[i], stream[j] = stream[j], stream[i]
    receiver = DtmfReceiver()
    reported = [d for p in stream if (d := receiver.feed(p.timestamp, p.payload)) is not None]
    assert sorted((d.start - 0xFFFFF000) & 0xFFFFFFFF for d in reported) == [
        8000 * i for i in range(len(digits))
    ]
    by_start = {d.start: d.digit for d in reported}
    assert [by_start[(0xFFFFF000 + 8000 * i) & 0xFFFFFFFF] for i in range(len(digits))] == digits


# --- SIP INFO -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "body", "expected"),
    [
        ("application/dtmf-relay", b"Signal=5\r\nDuration=160\r\n", ("5", 160)),
        ("application/dtmf-relay", b"Signal= *\nDuration= 250", ("*", 250)),
        ("Application/DTMF-Relay; charset=utf-8", "signal=#\r\n", ("#", None)),
        ("application/dtmf-relay", b"Signal=11\r\nDuration=100\r\n", ("#", 100)),
        ("application/dtmf-relay", b"Signal=d\r\nDuration=100\r\n", ("D", 100)),
        ("application/dtmf", b"9", ("9", None)),
        ("application/dtmf", b"10\r\n", ("*", None)),
    ],
)
def test_sip_info_bodies(content_type: str, body: bytes | str, expected: tuple[str, int | None]) -> None:
    assert parse_dtmf_info(content_type, body) == expected


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/dtmf-relay", b"Duration=160"),
        ("application/dtmf-relay", b"Signal=X"),
        ("application/dtmf-relay", b"Signal=1\r\nDuration=long"),
        ("application/dtmf", b"17"),
        ("text/plain", b"5"),
    ],
)
def test_bad_sip_info_bodies(content_type: str, body: bytes) -> None:
    with pytest.raises(DtmfError):
        parse_dtmf_info(content_type, body)


def test_dtmf_relay_body_round_trip() -> None:
    assert build_dtmf_relay("a", 200) == b"Signal=A\r\nDuration=200\r\n"
    assert parse_dtmf_info("application/dtmf-relay", build_dtmf_relay("0", 120)) == ("0", 120)


# --- in-band detection --------------------------------------------------------------------------------------


def _detect(signal: NDArray[np.int16], frame: int = 160, detector: GoertzelDetector | None = None) -> str:
    detector = detector or GoertzelDetector()
    found = []
    for start in range(0, len(signal), frame):
        found += detector.feed(signal[start : start + frame])
    return "".join(d.digit for d in found)


def _keyed(
    digits: str, tone_s: float = 0.06, pause_s: float = 0.06, rate: int = 8000, **tone_args: float
) -> NDArray[np.int16]:
    parts = [silence(0.03, rate)]
    for digit in digits:
        parts += [dtmf(digit, tone_s, rate, **tone_args), silence(pause_s, rate)]
    return np.concatenate(parts)


@pytest.mark.parametrize("level", [-6.0, -12.0, -18.0, -25.0])
def test_all_digits_detected_at_standard_levels_in_noise(level: float) -> None:
    signal = _keyed(DTMF_DIGITS * 2, tone_s=0.05, pause_s=0.05, level_dbm0=level)
    noisy = add_noise(signal, snr_db=20.0, seed=int(-level))  # noise 20 dB below the tones' power
    assert _detect(noisy) == DTMF_DIGITS * 2


@pytest.mark.parametrize("level", [-6.0, -25.0])
@pytest.mark.parametrize(("twist", "shift"), [(-3.0, 0.015), (6.0, -0.015), (-3.0, -0.015), (6.0, 0.015)])
def test_short_tones_at_the_edges_of_tolerance_in_noise(level: float, twist: float, shift: float) -> None:
    signal = _keyed(
        DTMF_DIGITS, tone_s=0.045, pause_s=0.045, level_dbm0=level, twist_db=twist, row_shift=shift
    )
    signal = np.concatenate([signal, _keyed(DTMF_DIGITS, 0.045, 0.045, level_dbm0=level, column_shift=shift)])
    assert _detect(add_noise(signal, snr_db=20.0, seed=7)) == DTMF_DIGITS * 2


def test_detection_through_g711_both_laws() -> None:
    signal = _keyed(DTMF_DIGITS, level_dbm0=-20)
    assert _detect(ulaw_decode(ulaw_encode(signal))) == DTMF_DIGITS
    assert _detect(alaw_decode(alaw_encode(signal))) == DTMF_DIGITS


@pytest.mark.parametrize("frame", [1, 37, 80, 160, 333, 4000])
def test_frame_size_does_not_matter(frame: int) -> None:
    assert _detect(_keyed("159#"), frame=frame) == "159#"


@pytest.mark.parametrize("shift", [-0.015, 0.015])
def test_frequency_error_within_1_5_percent_is_accepted(shift: float) -> None:
    assert _detect(_keyed(DTMF_DIGITS, row_shift=shift, column_shift=-shift)) == DTMF_DIGITS
    assert _detect(_keyed(DTMF_DIGITS, row_shift=shift, column_shift=shift)) == DTMF_DIGITS


@pytest.mark.parametrize("shift", [-0.035, 0.035, -0.05, 0.06])
def test_off_frequency_tones_are_rejected(shift: float) -> None:
    assert _detect(_keyed(DTMF_DIGITS, tone_s=0.1, row_shift=shift)) == ""
    assert _detect(_keyed(DTMF_DIGITS, tone_s=0.1, column_shift=shift)) == ""


@pytest.mark.parametrize("twist", [-3.5, 0.0, 4.0, 7.5])
def test_twist_within_limits_is_accepted(twist: float) -> None:
    assert _detect(_keyed(DTMF_DIGITS, level_dbm0=-12, twist_db=twist)) == DTMF_DIGITS


@pytest.mark.parametrize("twist", [-6.0, 10.0])
def test_twist_beyond_limits_is_rejected(twist: float) -> None:
    assert _detect(_keyed(DTMF_DIGITS, level_dbm0=-12, twist_db=twist)) == ""


def test_too_weak_tones_are_ignored() -> None:
    assert _detect(_keyed(DTMF_DIGITS, level_dbm0=-40)) == ""


@pytest.mark.parametrize("duration", [0.015, 0.020, 0.022])
def test_tones_shorter_than_23_ms_are_rejected(duration: float) -> None:
    # every alignment of the tone against the detector's 5 ms analysis grid
    for offset in range(0, 40, 4):
        signal = np.concatenate([silence(0.02 + offset / 8000), dtmf("5", duration), silence(0.1)])
        assert _detect(signal) == ""


def test_40_ms_tones_with_40_ms_pauses_are_all_counted() -> None:
    for offset in range(0, 40, 8):
        signal = np.concatenate(
            [silence(0.01 + offset / 8000), _keyed("11223344", tone_s=0.04, pause_s=0.04)]
        )
        assert _detect(signal) == "11223344"


def test_a_long_press_is_one_digit_and_a_brief_dropout_does_not_split_it() -> None:
    assert _detect(_keyed("8", tone_s=2.0)) == "8"
    held = np.concatenate([dtmf("8", 0.3), silence(0.01), dtmf("8", 0.3)])
    assert _detect(held) == "8"


def test_digit_start_is_reported_in_samples() -> None:
    found = GoertzelDetector().feed(np.concatenate([silence(0.5), dtmf("3", 0.1), silence(0.1)]))
    assert len(found) == 1 and abs(found[0].start - 4000) <= 80


def test_generated_key_presses_are_detected() -> None:
    signal = np.concatenate(
        [np.concatenate([dtmf_samples(d, 0.08), silence(0.06)]) for d in "0123456789*#abcd"]
    )
    assert _detect(signal) == DTMF_DIGITS
    assert abs(dbm0(dtmf_samples("5", 1.0, level_dbm0=-10, twist_db=0)) - (-7.0)) < 0.1  # two tones: +3 dB
    with pytest.raises(DtmfError):
        dtmf_samples("E", 0.1)


def test_wideband_input_is_detected() -> None:
    signal = np.concatenate([silence(0.5, 16000), _keyed("2580", rate=16000)])
    detector = GoertzelDetector(input_rate=16000)
    found = []
    for start in range(0, len(signal), 320):
        found += detector.feed(signal[start : start + 320])
    assert "".join(d.digit for d in found) == "2580"
    assert abs(found[0].start - (8000 + 480)) <= 160  # in 16 kHz samples


def test_noise_and_silence_give_nothing() -> None:
    noise = np.clip(white_noise(8000 * 5, 3000.0, seed=3), -32768, 32767).astype(np.int16)
    assert _detect(noise) == ""
    assert _detect(silence(2.0)) == ""


def test_single_tones_are_not_digits() -> None:
    for freq in (697.0, 941.0, 1209.0, 1633.0):
        t = np.arange(8000) / 8000
        single = (8000 * np.sin(2 * np.pi * freq * t)).astype(np.int16)
        assert _detect(single) == ""


SPEECH = [
    (
        "en",
        "Thank you for calling customer service. Your call is important to us. Please hold for an agent.",
    ),
    (
        "en",
        "For billing questions press one. For technical support press two. To hear this again press 9.",
    ),
    (
        "en-us+f3",
        "Hello, my name is Sarah. I am calling about order number four five six seven eight. It is late.",
    ),
    (
        "en-us+f3",
        "The quick brown fox jumps over the lazy dog, while seven singing sopranos sustain a very high note.",
    ),
    ("cmn", "您好，欢迎致电客户服务中心。您的电话对我们非常重要，请稍候，我们将为您转接下一位客服人员。"),
    (
        "cmn",
        "查询账单请按一，技术支持请按二。我的订单号是四五六七八，到现在还没有收到。妈妈骑马，马慢，妈妈骂马。",
    ),
]


@pytest.mark.skipif(ESPEAK is None, reason="espeak-ng is not installed")
@pytest.mark.parametrize(("voice", "text"), SPEECH)
def test_no_digits_in_speech(voice: str, text: str) -> None:
    quiet = speech(text, voice, rate=8000, level_dbm0=-20.0)
    assert abs(dbm0(quiet[np.abs(quiet) > 0]) - -20.0) < 3
    loud = np.clip(quiet.astype(np.float64) * 10 ** (12 / 20), -32768, 32767).astype(np.int16)  # -8 dBm0
    for voiced in (quiet, loud):
        assert _detect(ulaw_decode(ulaw_encode(voiced))) == ""
