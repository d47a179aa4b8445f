"""Text to speech through espeak-ng and the prompt cache (IVR-03)."""

from __future__ import annotations

import asyncio
import shutil
import stat
import wave
from pathlib import Path

import numpy as np
import pytest

from hotline.media.tts import SpeechSynthesizer, TtsError, TtsUnavailableError, voice_for

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")


def read_wav(path: Path) -> tuple[np.ndarray, int, int, int]:
    with wave.open(str(path), "rb") as wav:
        samples = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
        return samples, wav.getframerate(), wav.getnchannels(), wav.getsampwidth()


@pytest.fixture
def logged_engine(tmp_path: Path) -> tuple[str, Path]:
    """An espeak-ng wrapper that logs every invocation, so a test can count real syntheses."""
    log = tmp_path / "invocations.log"
    wrapper = tmp_path / "espeak-logged"
    real = shutil.which("espeak-ng")
    wrapper.write_text(f'#!/bin/sh\necho "$@" >> {log}\nexec {real} "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IEXEC)
    return str(wrapper), log


def syntheses_logged(log: Path) -> int:
    if not log.exists():
        return 0
    return sum(1 for line in log.read_text().splitlines() if "--stdin" in line)


@pytest.mark.parametrize(
    ("text", "language", "min_seconds", "max_seconds"),
    [
        ("您好，欢迎致电客服中心。请按一号键查询订单。", "zh", 3.0, 14.0),
        ("Welcome to the help line. Press one to check your order.", "en", 1.5, 7.0),
    ],
)
async def test_speech_in_both_languages_is_audible_8k_audio_of_plausible_length(
    tmp_path: Path, text: str, language: str, min_seconds: float, max_seconds: float
) -> None:
    synthesizer = SpeechSynthesizer(tmp_path / "cache")
    path = await synthesizer.synthesize(text, language)
    samples, rate, channels, width = read_wav(path)
    assert (rate, channels, width) == (8000, 1, 2)
    seconds = len(samples) / rate
    assert min_seconds < seconds < max_seconds
    voiced = samples.astype(np.float64)
    assert np.sqrt(np.mean(voiced**2)) > 1000  # clearly audible, not near-silence
    # Speech has pauses: the loudest 100 ms window is far louder than the quietest one.
    windows = np.sqrt(np.mean(voiced[: len(voiced) // 800 * 800].reshape(-1, 800) ** 2, axis=1))
    assert windows.max() > 10 * (windows.min() + 1)


async def test_mandarin_and_english_voices_differ(tmp_path: Path) -> None:
    synthesizer = SpeechSynthesizer(tmp_path)
    assert voice_for("zh-CN") == "cmn"
    assert voice_for("en") == "en-us"
    chinese = await synthesizer.synthesize("一二三", "zh")
    english = await synthesizer.synthesize("一二三", "en")
    assert chinese != english
    assert not np.array_equal(read_wav(chinese)[0], read_wav(english)[0])


async def test_second_request_is_a_cache_hit_without_a_subprocess(
    tmp_path: Path, logged_engine: tuple[str, Path]
) -> None:
    binary, log = logged_engine
    synthesizer = SpeechSynthesizer(tmp_path / "cache", binary=binary)
    first = await synthesizer.synthesize("Your call is important to us.", "en")
    assert syntheses_logged(log) == 1
    second = await synthesizer.synthesize("  Your call is important to us. ", "en")
    assert second == first
    assert syntheses_logged(log) == 1
    assert synthesizer.syntheses == 1
    # A new process (a new synthesizer) finds the prompt on disk.
    restarted = SpeechSynthesizer(tmp_path / "cache", binary=binary)
    assert await restarted.synthesize("Your call is important to us.", "en") == first
    assert syntheses_logged(log) == 1
    # A different rate is a different prompt.
    slower = await synthesizer.synthesize("Your call is important to us.", "en", rate=120)
    assert slower != first
    assert syntheses_logged(log) == 2
    assert len(read_wav(slower)[0]) > len(read_wav(first)[0])
    leftovers = [p.name for p in (tmp_path / "cache").rglob("*") if p.is_file() and p.suffix != ".wav"]
    assert leftovers == []


async def test_concurrent_requests_for_one_prompt_synthesise_once(
    tmp_path: Path, logged_engine: tuple[str, Path]
) -> None:
    binary, log = logged_engine
    synthesizer = SpeechSynthesizer(tmp_path, binary=binary)
    paths = await asyncio.gather(*(synthesizer.synthesize("请稍候，正在为您转接。", "zh") for _ in range(6)))
    assert len(set(paths)) == 1
    assert syntheses_logged(log) == 1


async def test_a_cancelled_caller_does_not_cancel_the_shared_synthesis(tmp_path: Path) -> None:
    synthesizer = SpeechSynthesizer(tmp_path)
    impatient = asyncio.ensure_future(synthesizer.synthesize("Please hold the line.", "en"))
    patient = asyncio.ensure_future(synthesizer.synthesize("Please hold the line.", "en"))
    await asyncio.sleep(0.01)
    impatient.cancel()
    path = await patient
    assert len(read_wav(path)[0]) > 8000


async def test_missing_engine_is_a_clear_error(tmp_path: Path) -> None:
    synthesizer = SpeechSynthesizer(tmp_path, binary="espeak-ng-not-installed")
    with pytest.raises(TtsUnavailableError, match="not installed"):
        await synthesizer.synthesize("hello", "en")


async def test_engine_failure_and_bad_input_are_clear_errors(tmp_path: Path) -> None:
    synthesizer = SpeechSynthesizer(tmp_path)
    with pytest.raises(TtsError, match="voice does not exist"):
        await synthesizer.synthesize("hello", voice="zz-qq")
    with pytest.raises(ValueError, match="no text"):
        await synthesizer.synthesize("   ", "en")
    with pytest.raises(ValueError, match="language"):
        await synthesizer.synthesize("bonjour", "fr-xx")
    with pytest.raises(ValueError, match="rate"):
        await synthesizer.synthesize("hello", "en", rate=5)
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


async def test_engine_that_writes_nothing_is_an_error(tmp_path: Path) -> None:
    silent_engine = tmp_path / "silent-engine"
    silent_engine.write_text('#!/bin/sh\ncat > /dev/null\necho "Can\'t write to: somewhere" >&2\n')
    silent_engine.chmod(0o755)
    synthesizer = SpeechSynthesizer(tmp_path / "cache", binary=str(silent_engine))
    with pytest.raises(TtsError, match="no readable audio: Can't write"):
        await synthesizer.synthesize("hello", "en")
    assert [p for p in (tmp_path / "cache").rglob("*") if p.is_file()] == []


async def test_16k_prompts_for_wideband_legs(tmp_path: Path) -> None:
    synthesizer = SpeechSynthesizer(tmp_path, sample_rate=16000)
    samples, rate, _, _ = read_wav(await synthesizer.synthesize("Hello.", "en"))
    assert rate == 16000
    spectrum = np.abs(np.fft.rfft(samples.astype(np.float64)))
    frequencies = np.fft.rfftfreq(len(samples), 1 / 16000)
    # Wideband speech keeps energy above the 4 kHz telephone limit (fricatives).
    assert spectrum[frequencies > 4200].sum() > 0.01 * spectrum.sum()
