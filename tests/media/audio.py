"""Test audio: tones, DTMF, noise and real speech (espeak-ng) as int16 numpy arrays, and ways to compare them.

- `amplitude_for_dbm0(level)`: peak amplitude of a sine at `level` dBm0 (G.711 scale, 0 dBm0 = 3.17 dB below
  full scale).
- `tone(freqs, seconds, rate=8000, level_dbm0=-10.0, amplitude=None)`: sum of sines, each at that level.
- `dtmf(digit, seconds, rate=8000, level_dbm0=-10.0, twist_db=0.0, row_shift=0.0, column_shift=0.0)`:
  twist = high-group level minus low-group level (dB); shifts are relative frequency errors (0.035 = +3.5%).
- `silence(seconds, rate=8000)`, `white_noise(n, rms, seed)`, `add_noise(signal, snr_db, seed)`.
- `speech(text, voice="en", rate=8000, level_dbm0=-16.0)`: espeak-ng speech, resampled and normalised.
- `snr_db(reference, test)`, `align(reference, test, max_lag) -> (lag, correlation)`.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import wave
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from hotline.media.codecs import resample
from hotline.media.dtmf import DTMF_FREQUENCIES, ZERO_DBM0_AMPLITUDE

ESPEAK = shutil.which("espeak-ng")


def amplitude_for_dbm0(level_dbm0: float) -> float:
    return ZERO_DBM0_AMPLITUDE * 10 ** (level_dbm0 / 20)


def _to_int16(samples: NDArray[np.float64]) -> NDArray[np.int16]:
    return np.clip(np.rint(samples), -32768, 32767).astype(np.int16)


def tone(
    freqs: float | Sequence[float],
    seconds: float,
    rate: int = 8000,
    level_dbm0: float = -10.0,
    amplitude: float | None = None,
    phase: float = 0.0,
) -> NDArray[np.int16]:
    freq_list = [freqs] if isinstance(freqs, int | float) else list(freqs)
    t = np.arange(round(seconds * rate)) / rate
    peak = amplitude if amplitude is not None else amplitude_for_dbm0(level_dbm0)
    total = sum(peak * np.sin(2 * np.pi * f * t + phase + i) for i, f in enumerate(freq_list))
    return _to_int16(np.asarray(total, dtype=np.float64))


def dtmf(
    digit: str,
    seconds: float,
    rate: int = 8000,
    level_dbm0: float = -10.0,
    twist_db: float = 0.0,
    row_shift: float = 0.0,
    column_shift: float = 0.0,
) -> NDArray[np.int16]:
    low, high = DTMF_FREQUENCIES[digit]
    t = np.arange(round(seconds * rate)) / rate
    low_peak = amplitude_for_dbm0(level_dbm0)
    high_peak = amplitude_for_dbm0(level_dbm0 + twist_db)
    signal = low_peak * np.sin(2 * np.pi * low * (1 + row_shift) * t) + high_peak * np.sin(
        2 * np.pi * high * (1 + column_shift) * t + 1.0
    )
    return _to_int16(signal)


def silence(seconds: float, rate: int = 8000) -> NDArray[np.int16]:
    return np.zeros(round(seconds * rate), dtype=np.int16)


def white_noise(n: int, rms: float, seed: int = 0) -> NDArray[np.float64]:
    return np.random.default_rng(seed).normal(0.0, rms, n)


def add_noise(signal: NDArray[np.int16], snr_db: float, seed: int = 0) -> NDArray[np.int16]:
    """`signal` plus white noise whose power is `snr_db` below the signal's (non-silent) power."""
    values = signal.astype(np.float64)
    active = values[np.abs(values) > 0]
    power = float(np.mean(active**2)) if len(active) else 1.0
    rms = np.sqrt(power / 10 ** (snr_db / 10))
    return _to_int16(values + white_noise(len(values), rms, seed))


def read_wav(path: Path) -> tuple[NDArray[np.int16], int]:
    with wave.open(str(path), "rb") as wav:
        if wav.getsampwidth() != 2:
            raise ValueError("expected 16-bit WAV")
        frames = wav.readframes(wav.getnframes())
        samples = np.frombuffer(frames, dtype="<i2").reshape(-1, wav.getnchannels())[:, 0]
        return samples.astype(np.int16), wav.getframerate()


def speech(text: str, voice: str = "en", rate: int = 8000, level_dbm0: float = -16.0) -> NDArray[np.int16]:
    """`text` spoken by espeak-ng, at `rate`, scaled so its active speech is at `level_dbm0` (RMS)."""
    if ESPEAK is None:
        raise RuntimeError("espeak-ng is not installed (scripts/setup installs it)")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "speech.wav"
        subprocess.run(
            [ESPEAK, "-v", voice, "-w", str(path), text], check=True, capture_output=True, timeout=60
        )
        samples, source_rate = read_wav(path)
    pcm = resample(samples, source_rate, rate).astype(np.float64)
    active = pcm[np.abs(pcm) > 0.01 * np.max(np.abs(pcm))]
    rms = float(np.sqrt(np.mean(active**2)))
    target_rms = amplitude_for_dbm0(level_dbm0) / np.sqrt(2)
    return _to_int16(pcm * target_rms / rms)


def snr_db(reference: NDArray[np.int16], test: NDArray[np.int16]) -> float:
    ref = reference.astype(np.float64)
    err = ref - test.astype(np.float64)
    return float(10 * np.log10(np.sum(ref**2) / max(np.sum(err**2), 1e-12)))


def align(reference: NDArray[np.int16], test: NDArray[np.int16], max_lag: int) -> tuple[int, float]:
    """The delay of `test` behind `reference` (0..max_lag samples) and their normalised correlation there."""
    ref = reference.astype(np.float64)
    best = (0, -1.0)
    for lag in range(max_lag + 1):
        a = ref[: len(ref) - lag] if lag else ref
        b = test[lag : lag + len(a)].astype(np.float64)
        a = a[: len(b)]
        denominator = np.sqrt(np.sum(a**2) * np.sum(b**2))
        correlation = float(np.sum(a * b) / denominator) if denominator else 0.0
        if correlation > best[1]:
            best = (lag, correlation)
    return best
