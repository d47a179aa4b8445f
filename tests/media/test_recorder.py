"""Two-channel call recording: alignment, pause, crash safety, errors (REC-01..04, REC-08, FM-07, FM-08)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hotline.media.recorder import (
    Channel,
    Recorder,
    RecordingError,
    RecordingFormat,
    RecordingInfo,
    RecordingWriter,
    RtpTimeline,
    recording_path,
)

RATE = 8000
FRAME = 160
CALLER_HZ, AGENT_HZ = 500.0, 1200.0
FORMATS = [RecordingFormat.WAV, RecordingFormat.MP3, RecordingFormat.OPUS]


def tone(frequency: float, start: float, seconds: float, amplitude: float = 8000) -> np.ndarray:
    """A tone whose phase depends on absolute time, so frames cut from it join without clicks."""
    t = (np.arange(round(seconds * RATE)) + round(start * RATE)) / RATE
    return np.round(amplitude * np.sin(2 * np.pi * frequency * t)).astype(np.int16)


def decode_stereo(path: Path, rate: int = RATE) -> np.ndarray:
    """(samples, 2) int16 at `rate`, however the file is encoded."""
    chunks = []
    with av.open(str(path)) as container:
        resampler = av.AudioResampler(format="s16", layout="stereo", rate=rate)
        for frame in container.decode(audio=0):
            for converted in resampler.resample(frame):
                chunks.append(converted.to_ndarray().reshape(-1, 2))
        for converted in resampler.resample(None):
            chunks.append(converted.to_ndarray().reshape(-1, 2))
    return np.concatenate(chunks) if chunks else np.zeros((0, 2), dtype=np.int16)


def band_level(samples: np.ndarray, frequency: float, rate: int = RATE) -> float:
    spectrum = np.abs(np.fft.rfft(samples.astype(np.float64) * np.hanning(len(samples))))
    frequencies = np.fft.rfftfreq(len(samples), 1 / rate)
    return float(spectrum[np.abs(frequencies - frequency) < 30].max())


def envelope(channel: np.ndarray, window: int = 80) -> np.ndarray:
    usable = len(channel) // window * window
    return np.sqrt(np.mean(channel[:usable].astype(np.float64).reshape(-1, window) ** 2, axis=1))


def onsets_and_ends(channel: np.ndarray, threshold: float = 2000, window: int = 80) -> list[float]:
    """Times (s) where the channel switches between silence and sound, 10 ms resolution."""
    loud = np.concatenate([[False], envelope(channel, window) > threshold])  # silence before the start
    return [index * window / RATE for index in np.flatnonzero(np.diff(loud.astype(np.int8)))]


# The scene: the caller talks 0-1 s and 2-3 s; the agent 0.5-1.5 s and 2.2-2.8 s. Every seventh agent frame
# is lost, and a few frames of both arrive up to 8 frames late. The call ends at 3.2 s.
CALLER_SPANS = [(0.0, 1.0), (2.0, 3.0)]
AGENT_SPANS = [(0.5, 1.5), (2.2, 2.8)]
CALL_END = 3.2


def scene_frames() -> tuple[list[tuple[int, Channel, np.ndarray, float]], np.ndarray]:
    """(delivery tick, channel, frame, media time) in delivery order, and the stereo audio expected."""
    expected = np.zeros((round(CALL_END * RATE), 2), dtype=np.int16)
    deliveries = []
    for channel, spans, frequency in (
        (Channel.CALLER, CALLER_SPANS, CALLER_HZ),
        (Channel.AGENT, AGENT_SPANS, AGENT_HZ),
    ):
        for start, end in spans:
            audio = tone(frequency, start, end - start)
            for index in range(len(audio) // FRAME):
                at = start + index * FRAME / RATE
                frame = audio[index * FRAME : (index + 1) * FRAME]
                tick = round(at * 50)
                if channel is Channel.AGENT and tick % 7 == 3:
                    continue  # lost on the network
                delivered = tick + (8 if tick % 11 == 5 else 3 if tick % 5 == 1 else 0)
                deliveries.append((delivered, channel, frame, at))
                position = round(at * RATE)
                expected[position : position + FRAME, int(channel)] = frame
    deliveries.sort(key=lambda item: item[0])
    return deliveries, expected


def record_scene(recorder: Recorder) -> RecordingInfo:
    deliveries, _ = scene_frames()
    pending = list(deliveries)
    for tick in range(round(CALL_END * 50) + 10):
        while pending and pending[0][0] <= tick:
            _, channel, frame, at = pending.pop(0)
            recorder.write(channel, frame, at)
        recorder.advance(min(tick * 0.02, CALL_END))
    return recorder.close_blocking(CALL_END)


@pytest.fixture(scope="module")
def writer() -> Any:
    shared = RecordingWriter()
    yield shared
    shared.shutdown()


def test_path_layout_is_tenant_and_day_folders(tmp_path: Path) -> None:
    started = datetime(2024, 3, 5, 23, 30, tzinfo=UTC)
    assert recording_path(tmp_path, "acme", "01HV3", started, "mp3") == tmp_path / "acme/2024/03/05/01HV3.mp3"
    beijing = started.astimezone(timezone(timedelta(hours=8)))  # a tenant filing by local day
    assert recording_path(tmp_path, "acme", "01HV3", beijing, "wav") == tmp_path / "acme/2024/03/06/01HV3.wav"
    for tenant, call_id in (("../etc", "x"), ("acme", "a/b"), ("acme", ""), (".hidden", "x")):
        with pytest.raises(ValueError, match="file name"):
            recording_path(tmp_path, tenant, call_id, started, "mp3")


def test_wav_recording_is_sample_exact_despite_gaps_and_late_frames(tmp_path: Path, writer: Any) -> None:
    started = datetime(2024, 3, 5, 9, 0, tzinfo=timezone(timedelta(hours=8)))
    recorder = Recorder(tmp_path, "acme", "call-1", format="wav", started_at=started, writer=writer)
    info = record_scene(recorder)
    _, expected = scene_frames()
    audio = decode_stereo(info.path)
    assert audio.shape == expected.shape
    assert np.array_equal(audio, expected)
    assert info.path == tmp_path / "acme/2024/03/05/call-1.wav"
    assert info.duration_seconds == pytest.approx(CALL_END)
    assert info.late_frames_dropped == 0
    assert info.complete and info.error is None
    assert info.bytes == info.path.stat().st_size == 44 + len(expected) * 4
    row = info.as_dict()
    assert row["started_at"] == "2024-03-05T01:00:00+00:00"  # stored in UTC
    assert row["channels"] == ["caller", "agent"] and row["format"] == "wav" and row["paused_spans"] == []
    json.dumps(row)


@pytest.mark.parametrize("format", [RecordingFormat.MP3, RecordingFormat.OPUS])
def test_compressed_recording_keeps_channels_apart_and_aligned(
    tmp_path: Path, writer: Any, format: RecordingFormat
) -> None:
    info = record_scene(Recorder(tmp_path, "acme", "call-2", format=format, writer=writer))
    assert info.path.suffix == f".{format.value}" and info.complete
    audio = decode_stereo(info.path)
    caller, agent = audio[:, 0], audio[:, 1]
    # Each party is on its own channel: the other's tone is at least 20 dB down.
    assert band_level(caller, CALLER_HZ) > 10 * band_level(caller, AGENT_HZ)
    assert band_level(agent, AGENT_HZ) > 10 * band_level(agent, CALLER_HZ)
    # Timing: every start and end of speech lands where it was spoken, after one codec delay shared by both
    # channels (MP3 without a LAME tag starts about 0.14 s late; Ogg Opus trims its pre-skip).
    caller_edges = onsets_and_ends(caller)
    assert len(caller_edges) == 4
    delay = caller_edges[0] - CALLER_SPANS[0][0]
    assert 0 <= delay < 0.2
    expected_caller = [edge + delay for span in CALLER_SPANS for edge in span]
    assert caller_edges == pytest.approx(expected_caller, abs=0.025)
    # The agent's lost frames leave 20 ms holes; look at the envelope in 60 ms windows to see the speech.
    agent_edges = onsets_and_ends(agent, threshold=1500, window=480)
    expected_agent = [edge + delay for span in AGENT_SPANS for edge in span]
    assert agent_edges == pytest.approx(expected_agent, abs=0.065)
    assert abs(len(audio) / RATE - CALL_END - delay) < 0.2


def test_pause_writes_silence_and_is_listed(tmp_path: Path, writer: Any) -> None:
    recorder = Recorder(tmp_path, "acme", "call-3", format="wav", writer=writer)
    caller, agent = tone(CALLER_HZ, 0, 3.0), tone(AGENT_HZ, 0, 3.0)
    for tick in range(150):
        at = tick * 0.02
        if tick == 50:
            recorder.pause(1.0)  # the customer is about to read out a card number
            assert recorder.paused
        if tick == 100:
            recorder.resume(2.0)
        frames = slice(tick * FRAME, (tick + 1) * FRAME)
        recorder.write(Channel.CALLER, caller[frames], at)
        if tick != 95:  # one agent frame of the paused span arrives late, after the resume
            recorder.write(Channel.AGENT, agent[frames], at)
        if tick == 102:
            recorder.write(Channel.AGENT, agent[95 * FRAME : 96 * FRAME], 95 * 0.02)
    info = recorder.close_blocking()
    audio = decode_stereo(info.path)
    assert not audio[8000:16000].any()
    assert np.array_equal(audio[:8000, 0], caller[:8000]) and np.array_equal(audio[16000:, 1], agent[16000:])
    assert info.paused_spans == [(1.0, 2.0)]
    assert not recorder.paused


def test_pause_open_at_hang_up_is_closed_at_the_end(tmp_path: Path, writer: Any) -> None:
    recorder = Recorder(tmp_path, "acme", "call-4", format="wav", writer=writer)
    recorder.write(Channel.CALLER, tone(CALLER_HZ, 0, 0.5), 0.0)
    recorder.pause()
    recorder.write(Channel.CALLER, tone(CALLER_HZ, 0.5, 0.5), 0.5)
    info = recorder.close_blocking(1.5)
    assert info.paused_spans == [(0.5, 1.5)]
    audio = decode_stereo(info.path)
    assert len(audio) == 12000 and audio[:4000, 0].any() and not audio[4000:].any()


def test_silence_on_both_sides_still_advances_the_timeline(tmp_path: Path, writer: Any) -> None:
    recorder = Recorder(tmp_path, "acme", "call-5", format="wav", writer=writer)
    recorder.write(Channel.AGENT, tone(AGENT_HZ, 0, 0.1), 0.0)
    for tick in range(1, 200):  # four seconds on hold without a packet from anyone
        recorder.advance(tick * 0.02)
    mid_call = recorder.info()
    assert mid_call.duration_seconds == pytest.approx(3.98)
    recorder.write(Channel.CALLER, tone(CALLER_HZ, 0, 0.1), 4.0)
    info = recorder.close_blocking()
    audio = decode_stereo(info.path)
    assert len(audio) == round(4.1 * RATE)
    assert onsets_and_ends(audio[:, 0]) == [4.0]
    assert onsets_and_ends(audio[:, 1]) == [0.0, 0.1]


@given(
    delays=st.lists(st.integers(0, 14), min_size=40, max_size=40),
    drops=st.sets(st.integers(0, 39), max_size=8),
)
@settings(max_examples=25, deadline=None)
def test_any_arrival_order_within_the_window_gives_the_same_file(
    tmp_path_factory: pytest.TempPathFactory, delays: list[int], drops: set[int]
) -> None:
    root = tmp_path_factory.mktemp("order")
    audio = tone(CALLER_HZ, 0, 0.8)
    deliveries = sorted(
        (tick + delays[tick], tick) for tick in range(40) if tick not in drops
    )  # reorder_window 0.3 s = 15 frames, so every frame here is in time
    recorder = Recorder(root, "acme", "order", format="wav")
    for _, tick in deliveries:
        recorder.write(Channel.AGENT, audio[tick * FRAME : (tick + 1) * FRAME], tick * 0.02)
    recorder.close_blocking(0.8)
    expected = audio.copy()
    for tick in drops:
        expected[tick * FRAME : (tick + 1) * FRAME] = 0
    decoded = decode_stereo(recorder.path)
    assert np.array_equal(decoded[:, 1], expected)
    assert not decoded[:, 0].any()


def test_frames_too_late_for_the_window_are_counted_not_misplaced(tmp_path: Path, writer: Any) -> None:
    recorder = Recorder(tmp_path, "acme", "call-6", format="wav", reorder_window=0.1, writer=writer)
    audio = tone(CALLER_HZ, 0, 2.0)
    for tick in range(100):
        if tick != 10:
            recorder.write(Channel.CALLER, audio[tick * FRAME : (tick + 1) * FRAME], tick * 0.02)
    recorder.write(Channel.CALLER, audio[10 * FRAME : 11 * FRAME], 10 * 0.02)  # 1.8 s late
    info = recorder.close_blocking()
    assert info.late_frames_dropped == 1
    decoded = decode_stereo(info.path)
    assert not decoded[10 * FRAME : 11 * FRAME].any()
    assert np.array_equal(decoded[11 * FRAME :, 0], audio[11 * FRAME :])


def test_wideband_recording(tmp_path: Path, writer: Any) -> None:
    for format in (RecordingFormat.WAV, RecordingFormat.MP3):
        recorder = Recorder(
            tmp_path, "acme", f"wide-{format.value}", format=format, sample_rate=16000, writer=writer
        )
        t = np.arange(16000) / 16000
        recorder.write(Channel.CALLER, np.round(8000 * np.sin(2 * np.pi * 5000 * t)).astype(np.int16), 0.0)
        info = recorder.close_blocking()
        decoded = decode_stereo(info.path, 16000)
        assert band_level(decoded[2000:14000, 0], 5000, 16000) > 100 * band_level(
            decoded[2000:14000, 1], 5000, 16000
        )


def test_rtp_timeline_places_frames_by_timestamp() -> None:
    timeline = RtpTimeline(8000)
    base = 0xFFFFFF00  # about to wrap around 2**32
    assert timeline.position(base, 0.5) == 0.5
    assert timeline.position(base + 160, 0.52) == pytest.approx(0.52)
    # Lost packets leave a gap; arrival jitter does not move the frame.
    assert timeline.position((base + 800) & 0xFFFFFFFF, 0.61) == pytest.approx(0.6)
    # A packet that arrives late lands where it belongs.
    assert timeline.position((base + 480) & 0xFFFFFFFF, 0.7) == pytest.approx(0.56)
    assert timeline.position((base + 960) & 0xFFFFFFFF, 0.62) == pytest.approx(0.62)
    # A new source (timestamp jump) re-anchors at its arrival.
    assert timeline.position(12345, 0.64) == 0.64
    assert timeline.position(12345 + 160, 0.66) == pytest.approx(0.66)
    wideband = RtpTimeline(8000)  # G.722: RTP clock 8000 even though the audio is 16 kHz
    wideband.position(0, 0.0)
    assert wideband.position(8000, 1.0) == pytest.approx(1.0)


def test_bad_calls_are_clear_errors(tmp_path: Path, writer: Any) -> None:
    recorder = Recorder(tmp_path, "acme", "call-7", format="wav", writer=writer)
    with pytest.raises(ValueError, match="channel"):
        recorder.write(2, np.zeros(FRAME, dtype=np.int16), 0)
    with pytest.raises(ValueError, match="int16"):
        recorder.write(Channel.CALLER, np.zeros(FRAME, dtype=np.float64), 0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="longest recording"):
        recorder.write(Channel.CALLER, np.zeros(FRAME, dtype=np.int16), 10**7)
    recorder.close_blocking()
    with pytest.raises(RecordingError, match="closed"):
        recorder.write(Channel.CALLER, np.zeros(FRAME, dtype=np.int16), 0)
    with pytest.raises(ValueError, match="time zone"):
        Recorder(tmp_path, "acme", "x", started_at=datetime(2024, 1, 1), writer=writer)


async def test_an_existing_recording_is_never_overwritten_and_the_error_is_reported(tmp_path: Path) -> None:
    started = datetime(2024, 3, 5, tzinfo=UTC)
    path = recording_path(tmp_path, "acme", "call-8", started, "mp3")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"an earlier recording")
    reported: list[tuple[RecordingError, int]] = []
    recorder = Recorder(
        tmp_path,
        "acme",
        "call-8",
        started_at=started,
        on_error=lambda e: reported.append((e, threading.get_ident())),
    )
    for _ in range(100):
        if reported:
            break
        await asyncio.sleep(0.01)
    assert len(reported) == 1
    error, thread = reported[0]
    assert "already exists" in str(error) and error.call_id == "call-8" and error.tenant == "acme"
    assert thread == threading.get_ident()  # delivered on the event loop
    with pytest.raises(RecordingError, match="already exists"):
        recorder.write(Channel.CALLER, np.zeros(FRAME, dtype=np.int16), 0.0)
    info = await recorder.close()
    assert not info.complete and "already exists" in (info.error or "")
    assert path.read_bytes() == b"an earlier recording"


class _StalledWriter(RecordingWriter):
    """A writer whose thread waits for a signal, as if the disk had stalled."""

    def __init__(self, max_pending_seconds: float) -> None:
        super().__init__(max_pending_seconds)
        self.release = threading.Event()

    def _run(self) -> None:
        self.release.wait(10)
        super()._run()


def test_a_writer_that_falls_behind_fails_the_recording_loudly(tmp_path: Path) -> None:
    stalled = _StalledWriter(max_pending_seconds=1.0)
    reported: list[RecordingError] = []
    recorder = Recorder(tmp_path, "acme", "call-9", format="wav", on_error=reported.append, writer=stalled)
    audio = tone(CALLER_HZ, 0, 3.0)
    with pytest.raises(RecordingError, match="behind"):
        for tick in range(150):
            recorder.write(Channel.CALLER, audio[tick * FRAME : (tick + 1) * FRAME], tick * 0.02)
    assert len(reported) == 1 and "behind" in str(reported[0])
    stalled.release.set()
    info = recorder.close_blocking()
    assert not info.complete and "behind" in (info.error or "")
    stalled.shutdown()


_CHILD = textwrap.dedent(
    """
    import json, resource, signal, sys, time
    from datetime import datetime, timezone
    import numpy as np
    from hotline.media.recorder import Channel, Recorder, default_writer

    root, format, mode = sys.argv[1], sys.argv[2], sys.argv[3]
    errors = []
    if mode == "disk-full":
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # get EFBIG from write() instead of dying
        limit = int(sys.argv[4])
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    recorder = Recorder(root, "acme", "crash", format=format, on_error=errors.append,
                        started_at=datetime(2024, 3, 5, tzinfo=timezone.utc))
    t = np.arange(160)
    start = time.monotonic()
    for tick in range(10 * 50):
        at = tick * 0.02
        caller = np.round(8000 * np.sin(2 * np.pi * 500 * (t + tick * 160) / 8000)).astype(np.int16)
        agent = np.round(8000 * np.sin(2 * np.pi * 1200 * (t + tick * 160) / 8000)).astype(np.int16)
        try:
            recorder.write(Channel.CALLER, caller, at)
            recorder.write(Channel.AGENT, agent, at)
        except Exception as error:
            errno = errors[0].errno if errors else None
            reported = [str(e) for e in errors]
            failure = {"raised": str(error), "at": at, "reported": reported, "errno": errno}
            print(json.dumps(failure), flush=True)
            break
        if tick % 25 == 0:
            # Report progress once the writer thread has caught up, as it does on a machine that is not
            # starved of CPU: the test is about what a crash leaves in the file, not about scheduling.
            for _ in range(200):
                if default_writer().pending_seconds == 0:
                    break
                time.sleep(0.01)
            print(json.dumps({"at": at}), flush=True)
        time.sleep(max(0.0, start + (tick + 1) * 0.02 - time.monotonic()))  # real time, like a call
    """
)


def _start_child(tmp_path: Path, format: str, mode: str, limit: int = 0) -> subprocess.Popen[str]:
    script = tmp_path / "child.py"
    script.write_text(_CHILD)
    root = tmp_path / format
    return subprocess.Popen(
        [sys.executable, str(script), str(root), format, mode, str(limit)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )


def test_sigkill_leaves_files_playable_up_to_about_the_last_second(tmp_path: Path) -> None:
    children = {format: _start_child(tmp_path, format.value, "crash") for format in FORMATS}
    reached = {}
    try:
        for format, child in children.items():
            assert child.stdout is not None
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                line = child.stdout.readline()
                if not line:
                    break
                at = json.loads(line)["at"]
                if at >= 2.5:
                    child.send_signal(signal.SIGKILL)
                    reached[format] = at
                    break
            child.wait(10)
            assert child.returncode == -signal.SIGKILL, f"{format} recorder did not get to 2.5 s"
    finally:
        for child in children.values():
            if child.poll() is None:
                child.kill()
                child.wait(10)
    for format in FORMATS:
        path = tmp_path / format.value / "acme/2024/03/05" / f"crash.{format.value}"
        audio = decode_stereo(path)
        seconds = len(audio) / RATE
        assert reached[format] - 1.0 <= seconds <= reached[format] + 0.5, format
        steady = audio[RATE // 2 : RATE]
        assert band_level(steady[:, 0], CALLER_HZ) > 10 * band_level(steady[:, 0], AGENT_HZ), format
        assert band_level(steady[:, 1], AGENT_HZ) > 10 * band_level(steady[:, 1], CALLER_HZ), format
        probed = subprocess.run(
            ["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", str(path)],
            capture_output=True, text=True, timeout=30, check=True,
        )  # fmt: skip
        if (
            format is not RecordingFormat.OPUS
        ):  # a killed Ogg stream has no final granule to read a length from
            assert float(probed.stdout) >= reached[format] - 1.0
        if format is not RecordingFormat.OPUS and shutil.which("sox"):
            stat = subprocess.run(
                ["sox", str(path), "-n", "stat"], capture_output=True, text=True, timeout=30
            )
            assert stat.returncode == 0, stat.stderr
            length = next(line for line in stat.stderr.splitlines() if line.startswith("Length"))
            assert float(length.split(":")[1]) >= reached[format] - 1.0


def test_disk_full_is_reported_and_never_silent(tmp_path: Path) -> None:
    # Room for about a second of audio in either format; both children run at once.
    limits = {RecordingFormat.WAV: 32_000, RecordingFormat.MP3: 2_000}
    children = {
        format: _start_child(tmp_path, format.value, "disk-full", limit) for format, limit in limits.items()
    }
    for format, child in children.items():
        output, _ = child.communicate(timeout=30)
        failure = json.loads(output.splitlines()[-1])
        assert "raised" in failure, output
        assert "File too large" in failure["raised"]
        assert failure["reported"] == [failure["raised"]]  # on_error got the same error, once
        assert failure["errno"] == 27  # EFBIG; a full disk gives ENOSPC the same way
        # What was written before the failure is still a playable recording.
        audio = decode_stereo(tmp_path / format.value / "acme/2024/03/05" / f"crash.{format.value}")
        assert len(audio) > RATE // 10


async def test_many_calls_recorded_from_the_event_loop_at_20_ms_ticks(tmp_path: Path) -> None:
    calls = 20
    recorders = [Recorder(tmp_path, "acme", f"busy-{n}", format="mp3") for n in range(calls)]
    caller, agent = tone(CALLER_HZ, 0, 1.0), tone(AGENT_HZ, 0, 1.0)
    loop = asyncio.get_running_loop()
    started = loop.time()
    spent_writing = 0.0
    for tick in range(50):
        before = time.perf_counter()
        for recorder in recorders:
            frames = slice(tick * FRAME, (tick + 1) * FRAME)
            recorder.write(Channel.CALLER, caller[frames], tick * 0.02)
            recorder.write(Channel.AGENT, agent[frames], tick * 0.02)
        spent_writing += time.perf_counter() - before
        await asyncio.sleep(max(0.0, started + (tick + 1) * 0.02 - loop.time()))
    infos = await asyncio.gather(*(recorder.close(1.0) for recorder in recorders))
    # The loop only copies frames: generous bound, typically a few µs per write.
    assert spent_writing / (50 * calls * 2) < 200e-6
    for info in infos:
        assert info.complete and info.duration_seconds == 1.0
        audio = decode_stereo(info.path)
        assert abs(len(audio) / RATE - 1.0) < 0.2
        assert band_level(audio[2000:6000, 0], CALLER_HZ) > 10 * band_level(audio[2000:6000, 0], AGENT_HZ)
