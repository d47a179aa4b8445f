"""Audio sources, tones, playlists, the player and music on hold (IVR-03)."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hotline.media.player import (
    DBM0_PEAK,
    AudioFileError,
    DecodedAudioCache,
    FileSource,
    PcmSource,
    PlaybackOutcome,
    Player,
    Playlist,
    SilenceSource,
    Tone,
    ToneSource,
    decode_audio_file,
    ensure_music_on_hold_file,
    music_on_hold,
    music_on_hold_source,
    open_music_on_hold,
    open_playlist,
    tone,
    write_wav,
)

needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed")


def dominant_frequency(samples: np.ndarray, rate: int) -> float:
    windowed = samples.astype(np.float64) * np.hanning(len(samples))
    spectrum = np.abs(np.fft.rfft(windowed))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[np.argmax(spectrum)])


def spectral_peaks(samples: np.ndarray, rate: int, count: int) -> list[float]:
    spectrum = np.abs(np.fft.rfft(samples.astype(np.float64) * np.hanning(len(samples))))
    frequencies = np.fft.rfftfreq(len(samples), 1 / rate)
    peaks = [i for i in range(1, len(spectrum) - 1) if spectrum[i - 1] < spectrum[i] >= spectrum[i + 1]]
    strongest = sorted(peaks, key=lambda i: spectrum[i], reverse=True)[:count]
    return sorted(float(frequencies[i]) for i in strongest)


def drain(source: PcmSource | ToneSource | SilenceSource | Playlist | Player, max_frames: int) -> np.ndarray:
    frames = []
    for _ in range(max_frames):
        frame = source.next_frame() if isinstance(source, Player) else source.read_frame()
        if frame is None:
            break
        frames.append(frame)
    return np.concatenate(frames) if frames else np.zeros(0, dtype=np.int16)


def sine(frequency: float, seconds: float, rate: int = 8000, amplitude: float = 8000) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return np.round(amplitude * np.sin(2 * np.pi * frequency * t)).astype(np.int16)


def ffmpeg(*arguments: str) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-y", *arguments], check=True, timeout=30)


# --- files ---


@needs_ffmpeg
@pytest.mark.parametrize(
    ("suffix", "codec_arguments", "source_rate"),
    [
        (".wav", ["-c:a", "pcm_s16le"], 44100),
        (".mp3", ["-c:a", "libmp3lame", "-b:a", "64k"], 22050),
        (".ogg", ["-c:a", "libopus", "-b:a", "48k"], 48000),
        (".opus", ["-c:a", "libopus", "-b:a", "32k"], 48000),
        (".oga", ["-c:a", "flac"], 32000),
    ],
)
@pytest.mark.parametrize("target_rate", [8000, 16000])
def test_files_decode_to_mono_at_the_target_rate_keeping_the_pitch(
    tmp_path: Path, suffix: str, codec_arguments: list[str], source_rate: int, target_rate: int
) -> None:
    path = tmp_path / f"prompt{suffix}"
    ffmpeg(
        "-f", "lavfi", "-i", f"sine=frequency=1000:sample_rate={source_rate}:duration=1.5",
        "-ac", "2", *codec_arguments, str(path),
    )  # fmt: skip
    samples = decode_audio_file(path, target_rate)
    assert samples.dtype == np.int16 and samples.ndim == 1
    assert abs(len(samples) / target_rate - 1.5) < 0.1  # codec priming may add a few ms
    middle = samples[target_rate // 4 : target_rate]
    assert abs(dominant_frequency(middle, target_rate) - 1000) < 5
    assert np.sqrt(np.mean(middle.astype(np.float64) ** 2)) > 1000


@pytest.mark.skipif(shutil.which("sox") is None, reason="sox is not installed")
def test_vorbis_file_from_sox_and_stereo_downmix(tmp_path: Path) -> None:
    path = tmp_path / "stereo.ogg"
    subprocess.run(
        ["sox", "-n", "-r", "44100", "-c", "2", str(path), "synth", "1", "sine", "600", "sine", "1400"],
        check=True,
        timeout=30,
    )
    samples = decode_audio_file(path, 8000)
    assert spectral_peaks(samples[2000:6000], 8000, 2) == pytest.approx([600, 1400], abs=5)


def test_resampling_keeps_a_tone_at_its_frequency(tmp_path: Path) -> None:
    path = tmp_path / "tone.wav"
    write_wav(path, sine(2500, 1.0, rate=48000), 48000)
    for target in (8000, 16000):
        assert abs(dominant_frequency(decode_audio_file(path, target), target) - 2500) < 3


def test_unreadable_files_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(AudioFileError, match="no such file"):
        decode_audio_file(tmp_path / "missing.wav")
    garbage = tmp_path / "garbage.mp3"
    garbage.write_bytes(b"this is not audio at all" * 10)
    with pytest.raises(AudioFileError, match=r"garbage\.mp3"):
        decode_audio_file(garbage)
    with pytest.raises(AudioFileError, match="no such file"):
        FileSource.open_sync(tmp_path / "missing.wav", cache=DecodedAudioCache())
    with pytest.raises(ValueError, match="sample rate"):
        decode_audio_file(garbage, 11025)


def test_cache_decodes_once_per_file_version(tmp_path: Path) -> None:
    cache = DecodedAudioCache()
    path = tmp_path / "prompt.wav"
    write_wav(path, sine(440, 0.5), 8000)
    first = FileSource.open_sync(path, cache=cache)
    second = FileSource.open_sync(path, cache=cache)
    assert cache.decodes == 1
    assert first.samples is second.samples
    FileSource.open_sync(path, 16000, cache=cache)
    assert cache.decodes == 2
    # Replacing the prompt (IVR-03) is picked up without any call to invalidate.
    write_wav(path, sine(880, 0.5), 8000)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    replaced = FileSource.open_sync(path, cache=cache)
    assert cache.decodes == 3
    assert abs(dominant_frequency(replaced.samples, 8000) - 880) < 5


def test_cache_evicts_least_recently_used(tmp_path: Path) -> None:
    cache = DecodedAudioCache(max_bytes=20_000)  # room for one 1 s file (16 000 bytes)
    paths = [tmp_path / f"{n}.wav" for n in range(3)]
    for path in paths:
        write_wav(path, sine(500, 1.0), 8000)
        cache.get_sync(path)
    cache.get_sync(paths[2])
    assert cache.decodes == 3
    cache.get_sync(paths[0])
    assert cache.decodes == 4


async def test_async_open_decodes_off_the_loop_once_for_concurrent_callers(tmp_path: Path) -> None:
    cache = DecodedAudioCache()
    path = tmp_path / "long.wav"
    write_wav(path, sine(700, 20.0, rate=48000), 48000)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.005)
            ticks += 1

    running = asyncio.ensure_future(ticker())
    sources = await asyncio.gather(*(FileSource.open(path, cache=cache) for _ in range(4)))
    running.cancel()
    assert cache.decodes == 1
    assert all(source.samples is sources[0].samples for source in sources)
    assert len(sources[0].samples) == 160_000
    assert ticks >= 1  # the loop kept ticking while the file decoded


async def test_open_playlist_plays_files_in_order(tmp_path: Path) -> None:
    paths = []
    for n, frequency in enumerate((500, 1000, 1500)):
        paths.append(tmp_path / f"{n}.wav")
        write_wav(paths[-1], sine(frequency, 0.4), 8000)
    playlist = await open_playlist(paths)
    audio = drain(playlist, 1000)
    assert len(audio) == 3 * 3200
    heard = [dominant_frequency(audio[i * 3200 : (i + 1) * 3200], 8000) for i in range(3)]
    assert heard == pytest.approx([500, 1000, 1500], abs=5)


# --- PCM, silence, playlists ---


@given(length=st.integers(0, 2000), rate=st.sampled_from([8000, 16000]))
@settings(max_examples=40, deadline=None)
def test_pcm_source_frames_cover_the_samples_then_silence(length: int, rate: int) -> None:
    samples = np.arange(length, dtype=np.int16)
    source = PcmSource(samples, rate)
    frames = []
    for _ in range(length // 10 + 2):
        frame = source.read_frame()
        if frame is None:
            break
        assert len(frame) == rate // 50
        frames.append(frame)
    assert source.read_frame() is None
    joined = np.concatenate(frames) if frames else np.zeros(0, dtype=np.int16)
    assert len(joined) == -(-length // (rate // 50)) * (rate // 50)
    assert np.array_equal(joined[:length], samples)
    assert not joined[length:].any()


def test_frames_are_read_only_views() -> None:
    source = PcmSource(sine(440, 0.1))
    frame = source.read_frame()
    assert frame is not None
    with pytest.raises(ValueError):
        frame[0] = 1


def test_silence_lasts_its_duration_or_forever() -> None:
    assert len(drain(SilenceSource(0.5), 1000)) == 4000
    assert not drain(SilenceSource(0.5), 1000).any()
    assert len(drain(SilenceSource(None, 16000), 300)) == 300 * 320
    with pytest.raises(ValueError):
        SilenceSource(-1)


def test_playlist_plays_in_order_and_loops_forever_when_asked() -> None:
    low, high = sine(500, 0.2), sine(1500, 0.2)
    once = Playlist([PcmSource(low), SilenceSource(0.1), PcmSource(high)])
    assert once.duration == pytest.approx(0.5)
    audio = drain(once, 1000)
    assert len(audio) == 4000
    assert np.array_equal(audio[:1600], low) and not audio[1600:2400].any()
    assert np.array_equal(audio[2400:], high)
    looping = Playlist([PcmSource(low), PcmSource(high)], loop=True)
    assert looping.duration is None
    audio = drain(looping, 100)  # 2 s: five rounds of 0.4 s
    assert len(audio) == 16000
    for start in range(0, 16000, 3200):
        assert np.array_equal(audio[start : start + 1600], low)
        assert np.array_equal(audio[start + 1600 : start + 3200], high)


def test_a_looping_playlist_of_empty_sources_ends_instead_of_spinning() -> None:
    empty = Playlist([PcmSource(np.zeros(0, dtype=np.int16)), SilenceSource(0)], loop=True)
    assert empty.read_frame() is None


def test_playlist_refuses_mixed_rates_and_nothing() -> None:
    with pytest.raises(ValueError, match="sample rate"):
        Playlist([SilenceSource(1, 8000), SilenceSource(1, 16000)])
    with pytest.raises(ValueError):
        Playlist([])


# --- tones ---


def frame_levels(audio: np.ndarray, rate: int, seconds: float = 0.01) -> np.ndarray:
    size = round(seconds * rate)
    usable = len(audio) // size * size
    return np.sqrt(np.mean(audio[:usable].astype(np.float64).reshape(-1, size) ** 2, axis=1))


def on_off_runs(levels: np.ndarray, threshold: float) -> list[tuple[bool, int]]:
    runs: list[tuple[bool, int]] = []
    for on in levels > threshold:
        if runs and runs[-1][0] == on:
            runs[-1] = (on, runs[-1][1] + 1)
        else:
            runs.append((bool(on), 1))
    return runs


@pytest.mark.parametrize("rate", [8000, 16000])
def test_china_ringback_is_450_hz_one_second_on_four_off(rate: int) -> None:
    audio = drain(ToneSource(tone("ringback", "cn"), rate), 600)  # 12 s
    assert len(audio) == 12 * rate
    runs = on_off_runs(frame_levels(audio, rate), 100)
    # 10 ms windows: 1 s on, 4 s off, 1 s on, 4 s off, 1 s on, 1 s off (edges may blur by one window)
    expected = [(True, 100), (False, 400), (True, 100), (False, 400), (True, 100), (False, 100)]
    assert [on for on, _ in runs] == [on for on, _ in expected]
    for (_, length), (_, wanted) in zip(runs, expected, strict=True):
        assert abs(length - wanted) <= 1
    assert abs(dominant_frequency(audio[:rate], rate) - 450) < 2
    # -10 dBm0: the peak of the tone
    assert abs(int(np.max(np.abs(audio.astype(np.int32)))) - DBM0_PEAK * 10 ** (-10 / 20)) < 5


def test_china_busy_is_450_hz_350_ms_on_350_ms_off() -> None:
    audio = drain(ToneSource(tone("busy")), 250)  # 5 s
    runs = on_off_runs(frame_levels(audio, 8000, 0.005), 100)
    assert all(abs(length - 70) <= 1 for _, length in runs[:-1])  # 350 ms in 5 ms windows
    assert [on for on, _ in runs[:4]] == [True, False, True, False]
    assert abs(dominant_frequency(audio[:2800], 8000) - 450) < 3


def test_dual_frequency_tones_of_other_countries() -> None:
    us_ringback = drain(ToneSource(tone("ringback", "us")), 100)  # 2 s on
    assert spectral_peaks(us_ringback, 8000, 2) == pytest.approx([440, 480], abs=2)
    uk = drain(ToneSource(tone("ringback", "uk")), 150)  # 0.4 on, 0.2 off, 0.4 on, 2.0 off
    runs = on_off_runs(frame_levels(uk, 8000), 100)
    assert [(on, round(length / 10)) for on, length in runs[:4]] == [
        (True, 4),
        (False, 2),
        (True, 4),
        (False, 20),
    ]
    custom = Tone("special", (950.0, 1400.0, 1800.0), (0.33, 0.03) * 3 + (0.0, 1.0))
    peaks = spectral_peaks(drain(ToneSource(custom, duration=0.33), 100)[:2640], 8000, 3)
    assert peaks == pytest.approx([950, 1400, 1800], abs=15)


def test_continuous_tone_is_seamless_across_frames_and_cycles() -> None:
    audio = drain(ToneSource(tone("dial"), 8000), 100)  # 2 s: crosses the 1 s cycle twice
    expected = DBM0_PEAK * 10 ** (-10 / 20) * np.sin(2 * np.pi * 450 * np.arange(16000) / 8000)
    assert np.max(np.abs(audio - expected)) <= 1


def test_tone_with_a_duration_stops() -> None:
    audio = drain(ToneSource(tone("dial"), duration=0.5), 1000)
    assert len(audio) == 4000
    assert drain(ToneSource(tone("dial"), duration=0.51), 1000)[4080:].max() == 0


def test_bad_tones_are_refused() -> None:
    with pytest.raises(ValueError):
        Tone("x", ())
    with pytest.raises(ValueError):
        Tone("x", (400.0,), (1.0,))
    with pytest.raises(ValueError, match="Nyquist"):
        ToneSource(Tone("x", (5000.0,)), 8000)
    with pytest.raises(ValueError, match="no 'howler' tone"):
        tone("howler")


# --- the player ---


def test_player_plays_to_the_end_and_reports_it_once() -> None:
    finished: list[Player] = []
    player = Player(PcmSource(sine(440, 0.1)), on_finished=finished.append)
    audio = drain(player, 100)
    assert len(audio) == 800
    assert player.finished and player.outcome is PlaybackOutcome.COMPLETED
    assert finished == [player]
    assert player.next_frame() is None
    assert finished == [player]
    assert player.position == pytest.approx(0.1)


def test_interrupt_ends_playback_at_the_next_frame() -> None:
    finished: list[Player] = []
    player = Player(ToneSource(tone("dial")), on_finished=finished.append)
    assert len(drain(player, 10)) == 1600
    assert player.interrupt("dtmf:5") is True
    assert player.next_frame() is None
    assert player.outcome is PlaybackOutcome.INTERRUPTED and player.interrupted_by == "dtmf:5"
    assert player.interrupt() is False
    assert finished == [player]


def test_a_prompt_that_must_be_heard_ignores_interrupt_but_not_stop() -> None:
    player = Player(PcmSource(sine(440, 1.0)), interruptible=False)
    player.next_frame()
    assert player.interrupt() is False
    assert player.next_frame() is not None
    player.stop()
    assert player.outcome is PlaybackOutcome.STOPPED and player.next_frame() is None


async def test_wait_reports_how_playback_ended() -> None:
    player = Player(PcmSource(sine(440, 0.06)))

    async def ticks() -> None:
        for _ in range(10):
            await asyncio.sleep(0)
            player.next_frame()

    outcome, _ = await asyncio.gather(player.wait(), ticks())
    assert outcome is PlaybackOutcome.COMPLETED
    assert await player.wait() is PlaybackOutcome.COMPLETED
    music = Player(await open_music_on_hold())
    waiter = asyncio.ensure_future(music.wait())
    await asyncio.sleep(0)
    music.stop()
    assert await asyncio.wait_for(waiter, 1) is PlaybackOutcome.STOPPED


# --- music on hold ---


def test_music_on_hold_is_soft_in_band_music_that_loops_seamlessly() -> None:
    music = music_on_hold(8000)
    assert len(music) == 16 * 8000
    peak = int(np.max(np.abs(music.astype(np.int32))))
    assert 16000 < peak <= 32767 * 10 ** (-6 / 20) + 1
    spectrum = np.abs(np.fft.rfft(music.astype(np.float64))) ** 2
    frequencies = np.fft.rfftfreq(len(music), 1 / 8000)
    in_band = spectrum[(frequencies >= 250) & (frequencies <= 3400)].sum()
    assert in_band > 0.95 * spectrum.sum()
    # Not a constant drone: the chords change every 4 s.
    chords = [dominant_frequency(music[i * 32000 + 4000 : (i + 1) * 32000], 8000) for i in range(4)]
    assert len({round(c) for c in chords}) >= 3
    # The seam of the loop is no bigger a step than the music makes anyway.
    steps = np.abs(np.diff(music.astype(np.int32)))
    assert abs(int(music[0]) - int(music[-1])) <= steps.max()
    looping = drain(Player(music_on_hold_source()), 1000)  # 20 s: past the end of one pass
    assert len(looping) == 160_000
    assert np.array_equal(looping[128_000:], music[:32_000])


def test_music_on_hold_file_is_written_once_and_decodes(tmp_path: Path) -> None:
    path = ensure_music_on_hold_file(tmp_path / "moh")
    first_mtime = path.stat().st_mtime_ns
    assert ensure_music_on_hold_file(tmp_path / "moh") == path
    assert path.stat().st_mtime_ns == first_mtime
    decoded = decode_audio_file(path, 8000)
    assert np.array_equal(decoded, music_on_hold(8000))
    wideband = decode_audio_file(ensure_music_on_hold_file(tmp_path / "moh", 16000), 16000)
    assert len(wideband) == 16 * 16000
