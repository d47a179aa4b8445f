"""Conference mixing: mix-minus, three-way calls, listen/whisper/barge (SUP-03, SUP-04), levelling."""

from __future__ import annotations

import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hotline.media.mixer import Conference, ConferenceError, ParticipantMode

RATE = 8000
FRAME = 160
# Each party speaks a tone of its own, so the spectrum of what someone hears tells who they hear.
VOICES = {"caller": 500.0, "agent": 1000.0, "supervisor": 1750.0, "third": 2500.0}


def tone_frames(frequency: float, frames: int, amplitude: float = 6000, rate: int = RATE) -> list[np.ndarray]:
    size = rate // 50
    t = np.arange(frames * size) / rate
    audio = np.round(amplitude * np.sin(2 * np.pi * frequency * t)).astype(np.int16)
    return [audio[i * size : (i + 1) * size] for i in range(frames)]


def run(conference: Conference, speakers: dict[str, float], ticks: int = 25) -> dict[str, np.ndarray]:
    """Everyone in `speakers` talks for `ticks` frames; returns what each participant heard."""
    voices = {pid: tone_frames(frequency, ticks) for pid, frequency in speakers.items()}
    heard: dict[str, list[np.ndarray]] = {pid: [] for pid in conference.participants}
    for tick in range(ticks):
        for pid, frames in voices.items():
            conference.push(pid, frames[tick])
        for pid, frame in conference.mix().items():
            heard[pid].append(frame)
    return {pid: np.concatenate(frames) for pid, frames in heard.items()}


def who_is_heard(audio: np.ndarray, rate: int = RATE) -> set[str]:
    spectrum = np.abs(np.fft.rfft(audio.astype(np.float64) * np.hanning(len(audio))))
    frequencies = np.fft.rfftfreq(len(audio), 1 / rate)
    floor = spectrum.max() * 0.05 if spectrum.max() > 0 else 1.0
    present = set()
    for pid, frequency in VOICES.items():
        band = spectrum[np.abs(frequencies - frequency) < 20]
        if band.max() > max(floor, 1000):
            present.add(pid)
    return present


def supervised_call(mode: ParticipantMode) -> Conference:
    conference = Conference()
    conference.add("caller")
    conference.add("agent")
    whisper_to = ["agent"] if mode is ParticipantMode.WHISPER else []
    conference.add("supervisor", mode, whisper_to=whisper_to)
    return conference


def test_two_parties_hear_exactly_each_other() -> None:
    conference = Conference()
    conference.add("caller")
    conference.add("agent")
    caller, agent = tone_frames(500, 1)[0], tone_frames(1000, 1, amplitude=9000)[0]
    conference.push("caller", caller)
    conference.push("agent", agent)
    heard = conference.mix()
    # Bit-exact: moving a two-party bridge into a conference is inaudible.
    assert np.array_equal(heard["caller"], agent)
    assert np.array_equal(heard["agent"], caller)


def test_three_way_call_each_hears_the_other_two() -> None:
    conference = Conference()
    for pid in ("caller", "agent", "third"):
        conference.add(pid)
    heard = run(conference, {pid: VOICES[pid] for pid in ("caller", "agent", "third")})
    assert who_is_heard(heard["caller"]) == {"agent", "third"}
    assert who_is_heard(heard["agent"]) == {"caller", "third"}
    assert who_is_heard(heard["third"]) == {"caller", "agent"}


def test_listen_hears_both_and_is_heard_by_nobody() -> None:
    conference = supervised_call(ParticipantMode.LISTEN)
    heard = run(conference, {pid: VOICES[pid] for pid in ("caller", "agent", "supervisor")})
    assert who_is_heard(heard["supervisor"]) == {"caller", "agent"}
    assert who_is_heard(heard["caller"]) == {"agent"}
    assert who_is_heard(heard["agent"]) == {"caller"}


def test_silent_monitoring_changes_nothing_either_party_hears() -> None:
    """SUP-03: no click or audio change for either party, bit for bit."""
    plain = Conference()
    plain.add("caller")
    plain.add("agent")
    monitored = supervised_call(ParticipantMode.LISTEN)
    speakers = {pid: VOICES[pid] for pid in ("caller", "agent")}
    without = run(plain, speakers)
    with_listener = run(monitored, {**speakers, "supervisor": VOICES["supervisor"]})
    assert np.array_equal(without["caller"], with_listener["caller"])
    assert np.array_equal(without["agent"], with_listener["agent"])


def test_whisper_is_heard_by_the_agent_only() -> None:
    conference = supervised_call(ParticipantMode.WHISPER)
    heard = run(conference, {pid: VOICES[pid] for pid in ("caller", "agent", "supervisor")})
    assert who_is_heard(heard["agent"]) == {"caller", "supervisor"}
    assert who_is_heard(heard["caller"]) == {"agent"}
    assert who_is_heard(heard["supervisor"]) == {"caller", "agent"}


def test_barge_is_heard_by_both_and_hears_both() -> None:
    conference = supervised_call(ParticipantMode.BARGE)
    heard = run(conference, {pid: VOICES[pid] for pid in ("caller", "agent", "supervisor")})
    assert who_is_heard(heard["caller"]) == {"agent", "supervisor"}
    assert who_is_heard(heard["agent"]) == {"caller", "supervisor"}
    assert who_is_heard(heard["supervisor"]) == {"caller", "agent"}


def test_mode_changes_take_effect_at_the_next_tick_and_removal_cleans_up() -> None:
    conference = supervised_call(ParticipantMode.LISTEN)
    speakers = {pid: VOICES[pid] for pid in ("caller", "agent", "supervisor")}
    conference.set_mode("supervisor", ParticipantMode.WHISPER, whisper_to=["agent"])
    assert who_is_heard(run(conference, speakers)["caller"]) == {"agent"}
    assert conference.audible_to("agent") == {"caller", "supervisor"}
    conference.set_mode("supervisor", ParticipantMode.BARGE)
    assert who_is_heard(run(conference, speakers)["caller"]) == {"agent", "supervisor"}
    conference.set_mode("supervisor", ParticipantMode.WHISPER, whisper_to=["agent"])
    conference.remove("agent")  # the agent leaves: the whisper has nobody left to reach
    assert conference.participants["supervisor"].whisper_to == frozenset()
    heard = run(conference, {"caller": VOICES["caller"], "supervisor": VOICES["supervisor"]})
    assert set(heard) == {"caller", "supervisor"}
    assert who_is_heard(heard["caller"]) == set()
    assert who_is_heard(heard["supervisor"]) == {"caller"}


def test_a_participant_who_sends_nothing_this_tick_is_silence() -> None:
    conference = Conference()
    conference.add("caller")
    conference.add("agent")
    conference.push("caller", tone_frames(500, 1)[0])
    heard = conference.mix()
    assert not heard["caller"].any()
    assert heard["agent"].any()
    heard = conference.mix()  # frames do not linger into the next tick
    assert not heard["agent"].any()


def test_loud_parties_saturate_instead_of_wrapping_around() -> None:
    conference = Conference()
    for pid in ("a", "b", "c"):
        conference.add(pid)
    loud = np.full(FRAME, 30000, dtype=np.int16)
    conference.push("a", loud)
    conference.push("b", loud)
    conference.push("c", -loud)
    heard = conference.mix()
    assert (heard["c"] == 32767).all()  # 60000 clipped, not wrapped to a negative value
    assert (heard["a"] == 0).all()


@given(
    parties=st.integers(2, 6),
    seed=st.integers(0, 2**32 - 1),
)
@settings(max_examples=50, deadline=None)
def test_mix_minus_is_the_clipped_sum_of_the_others(parties: int, seed: int) -> None:
    generator = np.random.default_rng(seed)
    conference = Conference()
    frames = {}
    for index in range(parties):
        conference.add(f"p{index}")
        frames[f"p{index}"] = generator.integers(-32768, 32768, FRAME).astype(np.int16)
        conference.push(f"p{index}", frames[f"p{index}"])
    heard = conference.mix()
    for pid in frames:
        expected = sum(frames[other].astype(np.int64) for other in frames if other != pid)
        assert np.array_equal(heard[pid], np.clip(expected, -32768, 32767))


def test_gain_levelling_brings_quiet_and_loud_talkers_together_but_not_silence() -> None:
    conference = Conference(gain_levelling=True)
    conference.add("quiet")
    conference.add("loud")
    conference.add("hiss")
    conference.add("ear", ParticipantMode.LISTEN)
    quiet = tone_frames(500, 150, amplitude=1000)  # about -33 dBFS
    loud = tone_frames(1000, 150, amplitude=25000)  # about -5 dBFS
    hiss = np.random.default_rng(1).integers(-20, 21, 150 * FRAME).astype(np.int16)  # below the gate
    heard_quiet, heard_loud = [], []
    for tick in range(150):
        conference.push("quiet", quiet[tick])
        conference.push("loud", loud[tick])
        conference.push("hiss", hiss[tick * FRAME : (tick + 1) * FRAME])
        heard = conference.mix()
        heard_quiet.append(heard["loud"])  # what "loud" hears is the quiet talker (plus hiss)
        heard_loud.append(heard["quiet"])
    quiet_out = np.concatenate(heard_quiet[-25:]).astype(np.float64)
    loud_out = np.concatenate(heard_loud[-25:]).astype(np.float64)
    rms_quiet, rms_loud = np.sqrt(np.mean(quiet_out**2)), np.sqrt(np.mean(loud_out**2))
    assert rms_quiet > 2.5 * 1000 / np.sqrt(2)  # raised (up to +12 dB)
    assert rms_loud < 0.5 * 25000 / np.sqrt(2)  # lowered towards -20 dBFS
    assert conference.participants["hiss"].levelling.gain == 1.0
    # Without levelling nothing is touched.
    plain = Conference()
    plain.add("a")
    plain.add("b")
    plain.push("a", quiet[0])
    assert np.array_equal(plain.mix()["b"], quiet[0])


def test_bad_requests_are_clear_errors() -> None:
    conference = Conference()
    conference.add("caller")
    with pytest.raises(ConferenceError, match="already"):
        conference.add("caller")
    with pytest.raises(ConferenceError, match="not in the conference"):
        conference.push("ghost", np.zeros(FRAME, dtype=np.int16))
    with pytest.raises(ConferenceError, match="160 int16"):
        conference.push("caller", np.zeros(320, dtype=np.int16))
    with pytest.raises(ConferenceError, match="160 int16"):
        conference.push("caller", np.zeros(FRAME, dtype=np.float32))  # type: ignore[arg-type]
    with pytest.raises(ConferenceError, match="whisper needs"):
        conference.add("supervisor", ParticipantMode.WHISPER)
    with pytest.raises(ConferenceError, match="not in the conference"):
        conference.add("supervisor", ParticipantMode.WHISPER, whisper_to=["agent"])
    with pytest.raises(ConferenceError, match="only a whispering"):
        conference.add("supervisor", ParticipantMode.LISTEN, whisper_to=["caller"])
    with pytest.raises(ConferenceError, match="not in the conference"):
        conference.remove("ghost")
    assert list(conference.participants) == ["caller"]


def test_wideband_conference() -> None:
    conference = Conference(16000)
    conference.add("caller")
    conference.add("agent")
    conference.push("caller", tone_frames(6000, 1, rate=16000)[0])
    assert conference.mix()["agent"].shape == (320,)


def test_mixing_is_cheap_enough_for_the_20ms_tick() -> None:
    conference = supervised_call(ParticipantMode.WHISPER)
    frames = {pid: tone_frames(VOICES[pid], 1)[0] for pid in ("caller", "agent", "supervisor")}
    started = time.perf_counter()
    for _ in range(500):
        for pid, frame in frames.items():
            conference.push(pid, frame)
        conference.mix()
    per_tick = (time.perf_counter() - started) / 500
    assert per_tick < 0.001  # typically ~20 µs; a generous bound for a loaded CI machine
