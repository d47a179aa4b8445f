"""Sample-rate conversion for int16 mono audio (8k <-> 16k <-> 48k and any rational ratio).

- `Resampler(from_rate, to_rate)`: streaming polyphase FIR (Kaiser-windowed sinc, about 70 dB stopband,
  passband flat to 90% of the lower Nyquist). `.process(pcm) -> int16 array`, carrying state between calls so
  20 ms frames convert without clicks. `.delay` is the filter's latency in output samples.
- `resample(pcm, from_rate, to_rate) -> int16 array`: one-shot, latency removed, output length
  `round(len(pcm) * to_rate / from_rate)`.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from numpy.typing import NDArray

_STOPBAND_DB = 70.0


def _kaiser_beta(attenuation_db: float) -> float:
    if attenuation_db > 50:
        return 0.1102 * (attenuation_db - 8.7)
    if attenuation_db >= 21:
        return 0.5842 * math.pow(attenuation_db - 21, 0.4) + 0.07886 * (attenuation_db - 21)
    return 0.0


class Resampler:
    def __init__(self, from_rate: int, to_rate: int) -> None:
        if from_rate <= 0 or to_rate <= 0:
            raise ValueError("sample rates must be positive")
        self.from_rate = from_rate
        self.to_rate = to_rate
        g = math.gcd(from_rate, to_rate)
        self.up = to_rate // g
        self.down = from_rate // g
        up, down = self.up, self.down
        upsampled_rate = from_rate * up
        nyquist = min(from_rate, to_rate) / 2.0
        transition = 0.2 * nyquist  # 0.9 .. 1.1 of the lower Nyquist; aliases land above 90% of it
        width = 2 * math.pi * transition / upsampled_rate
        taps = math.ceil((_STOPBAND_DB - 7.95) / (2.285 * width)) + 1
        half = math.ceil(taps / 2 / down) * down  # latency a whole number of output samples
        length = 2 * half + 1
        n = np.arange(length) - half
        cutoff = nyquist / upsampled_rate  # cycles per upsampled sample
        h = 2 * cutoff * np.sinc(2 * cutoff * n) * np.kaiser(length, _kaiser_beta(_STOPBAND_DB)) * up
        self.taps_per_phase = math.ceil(length / up)
        padded = np.zeros(self.taps_per_phase * up)
        padded[:length] = h
        # phases[p, k] = h[p + k * up]
        self._phases = np.ascontiguousarray(padded.reshape(self.taps_per_phase, up).T)
        self._reversed = np.ascontiguousarray(padded[::-1]) if up == 1 else padded
        self.delay = half // down
        self._history = np.zeros(self.taps_per_phase - 1)
        self._consumed = 0  # input samples seen
        self._produced = 0  # output samples made

    def reset(self) -> None:
        self._history[:] = 0.0
        self._consumed = 0
        self._produced = 0

    def process(self, pcm: NDArray[np.int16]) -> NDArray[np.int16]:
        samples = np.asarray(pcm).reshape(-1)
        if self.up == self.down:
            return samples.astype(np.int16, copy=True)
        out = self.process_float(samples.astype(np.float64))
        return np.clip(np.rint(out), -32768, 32767).astype(np.int16)

    def process_float(self, samples: NDArray[np.float64]) -> NDArray[np.float64]:
        """Like `process` on float samples (same scale), without rounding."""
        if len(samples) == 0:
            return np.zeros(0)
        k = self.taps_per_phase
        buffer = np.concatenate((self._history, samples))
        start_input = self._consumed  # global index of samples[0]
        self._consumed += len(samples)
        total_out = -(-self._consumed * self.up // self.down)
        first = self._produced
        count = total_out - first
        self._produced = total_out
        self._history = buffer[len(buffer) - (k - 1) :] if k > 1 else np.zeros(0)
        if count <= 0:
            return np.zeros(0)
        up, down = self.up, self.down
        if down == 1:
            # every input sample yields `up` outputs, one per phase
            interleaved = np.empty((len(samples), up))
            for phase in range(up):
                interleaved[:, phase] = np.convolve(buffer, self._phases[phase], mode="valid")
            return interleaved.reshape(-1)
        if up == 1:
            offset = first * down - start_input  # buffer index of the window ending at the first output
            windows = sliding_window_view(buffer, k)[offset : offset + (count - 1) * down + 1 : down]
            result: NDArray[np.float64] = windows @ self._reversed
            return result
        # any other ratio: gather each output's input samples and its phase's taps, in blocks that keep the
        # index arrays small
        out = np.empty(count)
        taps = np.arange(k)[None, :]
        for block in range(0, count, 2048):
            n = np.arange(first + block, first + min(count, block + 2048))
            base = n * down // up
            phase_index = n * down - base * up
            index = (base - start_input + k - 1)[:, None] - taps
            out[block : block + len(n)] = np.einsum("ij,ij->i", buffer[index], self._phases[phase_index])
        return out


def resample(pcm: NDArray[np.int16], from_rate: int, to_rate: int) -> NDArray[np.int16]:
    """Whole-signal conversion, aligned in time with the input (the filter latency is removed)."""
    samples = np.asarray(pcm).reshape(-1)
    if from_rate == to_rate:
        return samples.astype(np.int16, copy=True)
    resampler = Resampler(from_rate, to_rate)
    wanted = round(len(samples) * to_rate / from_rate)
    flush = math.ceil((resampler.delay + 2) * from_rate / to_rate) + resampler.taps_per_phase
    out = resampler.process_float(np.concatenate((samples.astype(np.float64), np.zeros(flush))))
    out = out[resampler.delay : resampler.delay + wanted]
    return np.clip(np.rint(out), -32768, 32767).astype(np.int16)
