"""DTMF: RFC 4733 telephone events, SIP INFO bodies, and in-band tone detection (ITU-T Q.23/Q.24). Sans-IO.

- `DTMF_DIGITS` ("0123456789*#ABCD", RFC 4733 event codes 0-15), `DTMF_FREQUENCIES[digit] -> (row, column)`
  in Hz, `digit_to_event(digit)`, `event_to_digit(event)`, `ZERO_DBM0_AMPLITUDE` (peak of a 0 dBm0 sine in
  int16), `dbm0(samples)` (RMS level), `dtmf_samples(digit, seconds, sample_rate=8000, level_dbm0=-10)`
  (in-band tones to send to a peer without telephone-event).
- `DtmfError(ValueError)`: malformed payloads and bodies, unknown digits.
- `DtmfDigit(digit, start, duration)`: a detected digit; `start` in the stream's clock (RTP timestamp for
  RFC 4733, sample index for in-band), `duration` in the same units when known.
- `TelephoneEvent(event, end, volume, duration)`: one RFC 4733 payload; `.parse(payload)`, `.serialize()`.
- `DtmfSender(clock_rate=8000, packet_interval=0.02, volume=10)`: `.packets(digit, timestamp, duration=0.1)
  -> list[EventPacket]` (send `offset` seconds after the first; marker on the first; one timestamp; growing
  duration; the end packet sent three times). The caller gives them consecutive sequence numbers.
- `DtmfReceiver(clock_rate=8000)`: `.feed(timestamp, payload) -> DtmfDigit | None`: each event reported
  once, when its first packet arrives (whichever that is), keyed by its timestamp; duplicates, redundant end
  packets, reordered and late packets report nothing more. `.reset()` when the stream changes source.
- `parse_dtmf_info(content_type, body) -> (digit, duration_ms | None)` for SIP INFO bodies
  (application/dtmf-relay "Signal=5\\r\\nDuration=160", application/dtmf "5");
  `build_dtmf_relay(digit, duration_ms) -> bytes`.
- `GoertzelDetector(..., input_rate=8000)`: in-band detector for int16 audio (analysed at 8 kHz; other input
  rates are resampled), `.feed(pcm) -> list[DtmfDigit]`, frames of any size; each digit reported once, when
  it has lasted long enough (Q.24: tones of 40 ms are detected, tones shorter than 23 ms are not; a pause of
  40 ms separates two presses of the same key). `start` is in input samples.
"""

from __future__ import annotations

import functools
import math
import struct
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from hotline.media.codecs.resample import Resampler

DTMF_DIGITS = "0123456789*#ABCD"
ROW_FREQUENCIES = (697.0, 770.0, 852.0, 941.0)
COLUMN_FREQUENCIES = (1209.0, 1336.0, 1477.0, 1633.0)
KEYPAD = ("123A", "456B", "789C", "*0#D")
DTMF_FREQUENCIES: dict[str, tuple[float, float]] = {
    key: (ROW_FREQUENCIES[r], COLUMN_FREQUENCIES[c])
    for r, row in enumerate(KEYPAD)
    for c, key in enumerate(row)
}
# G.711's overload point is +3.17 dBm0 (µ-law) at int16 full scale
ZERO_DBM0_AMPLITUDE = 32768.0 * 10 ** (-3.17 / 20)


class DtmfError(ValueError):
    """A telephone-event payload, SIP INFO body or digit that cannot be used."""


def digit_to_event(digit: str) -> int:
    index = DTMF_DIGITS.find(digit.upper()) if len(digit) == 1 else -1
    if index < 0:
        raise DtmfError(f"not a DTMF digit: {digit!r}")
    return index


def event_to_digit(event: int) -> str:
    if not 0 <= event < len(DTMF_DIGITS):
        raise DtmfError(f"telephone event {event} is not a DTMF digit")
    return DTMF_DIGITS[event]


@dataclass(frozen=True, slots=True)
class DtmfDigit:
    digit: str
    start: int = 0
    duration: int | None = None


# --- RFC 4733 -------------------------------------------------------------------------------------------

_EVENT = struct.Struct("!BBH")


@dataclass(frozen=True, slots=True)
class TelephoneEvent:
    event: int
    end: bool = False
    volume: int = 10  # 0..63, in -dBm0
    duration: int = 0  # timestamp units since the event's start

    @classmethod
    def parse(cls, payload: bytes | bytearray | memoryview) -> TelephoneEvent:
        if len(payload) < 4:
            raise DtmfError(f"telephone-event payload of {len(payload)} bytes, need 4")
        event, flags, duration = _EVENT.unpack_from(payload, 0)
        return cls(event, bool(flags & 0x80), flags & 0x3F, duration)

    def serialize(self) -> bytes:
        if not 0 <= self.event <= 255 or not 0 <= self.volume <= 63 or not 0 <= self.duration <= 0xFFFF:
            raise DtmfError("telephone event field out of range")
        return _EVENT.pack(self.event, (0x80 if self.end else 0) | self.volume, self.duration)


@dataclass(frozen=True, slots=True)
class EventPacket:
    offset: float  # seconds after the first packet of the event
    marker: bool
    timestamp: int
    payload: bytes


class DtmfSender:
    def __init__(
        self, clock_rate: int = 8000, packet_interval: float = 0.02, volume: int = 10, end_repeats: int = 3
    ) -> None:
        self.clock_rate = clock_rate
        self.packet_interval = packet_interval
        self.volume = volume
        self.end_repeats = end_repeats

    def packets(self, digit: str, timestamp: int, duration: float = 0.1) -> list[EventPacket]:
        """The packets of one key press of `duration` seconds, starting at RTP time `timestamp`."""
        event = digit_to_event(digit)
        total = round(duration * self.clock_rate)
        step = max(1, round(self.packet_interval * self.clock_rate))
        if not 0 < total <= 0xFFFF:
            raise DtmfError(f"event duration {duration} s does not fit one RFC 4733 event")
        timestamp &= 0xFFFFFFFF
        packets = []
        elapsed = step
        index = 0
        while elapsed < total:
            payload = TelephoneEvent(event, False, self.volume, elapsed).serialize()
            packets.append(EventPacket(index * self.packet_interval, index == 0, timestamp, payload))
            elapsed += step
            index += 1
        final = TelephoneEvent(event, True, self.volume, total).serialize()
        for _ in range(self.end_repeats):
            packets.append(EventPacket(index * self.packet_interval, index == 0, timestamp, final))
            index += 1
        return packets


class DtmfReceiver:
    """Turns received telephone-event payloads into digits, each key press exactly once."""

    def __init__(self, clock_rate: int = 8000, memory: int = 64) -> None:
        self.clock_rate = clock_rate
        self._memory = memory
        # timestamp -> (event, longest duration seen, end seen)
        self._events: OrderedDict[int, tuple[int, int, bool]] = OrderedDict()

    def reset(self) -> None:
        self._events.clear()

    def feed(self, timestamp: int, payload: bytes | bytearray | memoryview) -> DtmfDigit | None:
        update = TelephoneEvent.parse(payload)
        timestamp &= 0xFFFFFFFF
        known = self._events.get(timestamp)
        if known is not None:
            event, longest, ended = known
            self._events[timestamp] = (event, max(longest, update.duration), ended or update.end)
            return None
        if update.event >= len(DTMF_DIGITS):
            return None  # flash and tones other than digits are not reported
        if self._continues_long_event(timestamp, update.event):
            self._events[timestamp] = (update.event, update.duration, update.end)
            return None
        self._events[timestamp] = (update.event, update.duration, update.end)
        while len(self._events) > self._memory:
            self._events.popitem(last=False)
        return DtmfDigit(DTMF_DIGITS[update.event], timestamp, update.duration if update.end else None)

    def _continues_long_event(self, timestamp: int, event: int) -> bool:
        # RFC 4733 2.5.1.3: an event longer than 0xFFFF ticks goes on in a new segment with a later timestamp
        for start, (known_event, longest, ended) in reversed(self._events.items()):
            if known_event != event or ended:
                continue
            delta = (timestamp - start) & 0xFFFFFFFF
            if longest >= 0xFFFF - self.clock_rate and 0 < delta <= 0xFFFF:
                return True
        return False


# --- SIP INFO ---------------------------------------------------------------------------------------------


def _signal_to_digit(value: str) -> str:
    value = value.strip()
    if len(value) > 1 and value.isdigit():  # an event code: "10" is *, "11" is #
        return event_to_digit(int(value))
    return event_to_digit(digit_to_event(value))


def parse_dtmf_info(content_type: str, body: bytes | str) -> tuple[str, int | None]:
    """The digit and duration (ms, None when absent) of a SIP INFO body."""
    media_type = content_type.split(";", 1)[0].strip().lower()
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    if media_type == "application/dtmf-relay":
        fields: dict[str, str] = {}
        for line in text.replace("\r\n", "\n").split("\n"):
            if "=" in line:
                name, value = line.split("=", 1)
                fields[name.strip().lower()] = value.strip()
        if "signal" not in fields:
            raise DtmfError("application/dtmf-relay body without Signal=")
        digit = _signal_to_digit(fields["signal"])
        duration = None
        if "duration" in fields:
            try:
                duration = int(fields["duration"])
            except ValueError:
                raise DtmfError(f"bad Duration in dtmf-relay: {fields['duration']!r}") from None
            if duration < 0:
                raise DtmfError(f"negative Duration in dtmf-relay: {duration}")
        return digit, duration
    if media_type == "application/dtmf":
        return _signal_to_digit(text), None
    raise DtmfError(f"not a DTMF body: {content_type!r}")


def build_dtmf_relay(digit: str, duration_ms: int = 160) -> bytes:
    return f"Signal={event_to_digit(digit_to_event(digit))}\r\nDuration={int(duration_ms)}\r\n".encode()


# --- in-band detection ----------------------------------------------------------------------------------

_TONES = ROW_FREQUENCIES + COLUMN_FREQUENCIES
_CYCLES = 20  # analysis length per tone: 20 periods, so frequency resolution is the same relative error
_SUB = 0.75  # the two overlapping sub-windows for the frequency estimate cover 3/4 of the tone window each


class GoertzelDetector:
    """In-band DTMF for 8 kHz int16 audio, after ITU-T Q.24.

    Every 5 ms, each of the 8 tones is measured over a window of 20 of its periods (28.75 ms for 697 Hz), the
    single-bin DFT that Goertzel's algorithm computes, here as one matrix product for all tones and windows.
    A window holds a digit when the strongest row and column tones:
    - are each within `max_deviation` (2.5%) of the nominal frequency, estimated from the phase advance
      between two overlapping sub-windows (Q.24: accept 1.5%, reject 3.5%);
    - are each at least `min_level_dbm0`;
    - differ by at most `max_normal_twist_db` (column louder) or `max_reverse_twist_db` (row louder);
    - together carry at least `min_tone_ratio` of the window's energy (speech spreads energy across harmonics
      and formants);
    - have second harmonics at least `max_harmonic_db` below them (voiced speech has strong harmonics);
    - are steady: each quarter of the window holds at least `min_steadiness` of the loudest quarter's energy
      (a tone that starts or stops inside the window does not count; not stricter than one half, because two
      tones 200-300 Hz apart beat, and a quarter of 7 ms does not average that out).
    A digit is reported after 2 consecutive such windows (about 30 ms of tone), and not again until 8
    consecutive windows (40 ms) without it.
    """

    sample_rate = 8000
    hop = 40  # 5 ms
    on_windows = 2
    off_windows = 8

    def __init__(
        self,
        *,
        min_level_dbm0: float = -32.0,
        max_normal_twist_db: float = 8.0,
        max_reverse_twist_db: float = 4.0,
        max_deviation: float = 0.025,
        min_tone_ratio: float = 0.8,
        max_harmonic_db: float = -20.0,
        min_steadiness: float = 0.5,
        input_rate: int = 8000,
    ) -> None:
        self.min_power = (ZERO_DBM0_AMPLITUDE * 10 ** (min_level_dbm0 / 20)) ** 2 / 2
        self.max_normal_twist = 10 ** (max_normal_twist_db / 10)
        self.max_reverse_twist = 10 ** (max_reverse_twist_db / 10)
        self.max_deviation = max_deviation
        self.min_tone_ratio = min_tone_ratio
        self.max_harmonic = 10 ** (max_harmonic_db / 10)
        self.min_steadiness = min_steadiness
        # wideband legs (G.722, Opus) are analysed at 8 kHz; reported positions stay in input samples
        self.input_rate = input_rate
        self._resampler = Resampler(input_rate, self.sample_rate) if input_rate != self.sample_rate else None
        self._build_basis()
        self.reset()

    def _build_basis(self) -> None:
        # Every detector at one rate shares the same read-only tables: built once, not once per call leg.
        tables = _basis_tables(self.sample_rate)
        self.window = tables.window
        self._basis = tables.basis
        self._lengths = tables.lengths
        self._shifts = tables.shifts
        self._freqs = tables.freqs
        self._window_index = tables.window_index
        self._power_scale = tables.power_scale
        self._deviation_scale = tables.deviation_scale
        self._bins_per_deviation = tables.bins_per_deviation
        self._bounds_cache: dict[int, tuple[NDArray[np.int64], NDArray[np.int64]]] = {}
        self._keypad = tables.keypad

    def reset(self) -> None:
        if self._resampler is not None:
            self._resampler.reset()
        self._buffer = np.zeros(0)
        self._next = 0  # sample index where the next window starts
        self._current: int | None = None  # digit being held
        self._run_digit = -1
        self._run_length = 0
        self._run_start = 0
        self._misses = 0

    def feed(self, pcm: NDArray[np.int16]) -> list[DtmfDigit]:
        samples = np.asarray(pcm).reshape(-1)
        if samples.dtype != np.int16:
            raise DtmfError(f"the detector takes int16 samples, got {samples.dtype}")
        if self._resampler is not None:
            samples = self._resampler.process(samples)
        # _buffer starts where the next analysis window starts (sample index _next)
        self._buffer = np.concatenate((self._buffer, samples.astype(np.float64)))
        available = len(self._buffer) - self.window
        if available < 0:
            return []
        count = available // self.hop + 1
        digits = self._classify(self._buffer, count)
        found = []
        if self._current is not None or self._run_length or digits.max() >= 0:
            for i, digit in enumerate(digits.tolist()):
                reported = self._step(digit, self._next + i * self.hop)
                if reported is not None:
                    found.append(reported)
        self._next += count * self.hop
        self._buffer = self._buffer[count * self.hop :]
        return found

    def _quarter_bounds(self, count: int) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        cached = self._bounds_cache.get(count)
        if cached is None:
            starts = np.arange(count) * self.hop
            quarter = self.window // 4
            cached = (starts, starts[:, None] + quarter * np.arange(5)[None, :])
            self._bounds_cache[count] = cached
        return cached

    def _classify(self, buffer: NDArray[np.float64], count: int) -> NDArray[np.int64]:
        """Digit index (0-15, DTMF_DIGITS order) held by each of `count` windows, or -1."""
        result = np.full(count, -1, dtype=np.int64)
        # cheap checks first, from a running sum of energy: enough energy for two tones at the minimum
        # level, and steady across the window's quarters
        energy = np.concatenate(([0.0], np.cumsum(buffer * buffer)))
        starts, bounds = self._quarter_bounds(count)
        quarters = np.diff(energy[bounds], axis=1)
        total = (energy[starts + self.window] - energy[starts]) / self.window
        candidate = total >= 2 * self.min_power * self.min_tone_ratio
        candidate &= np.min(quarters, axis=1) >= self.min_steadiness * np.max(quarters, axis=1)
        if not candidate.any():
            return result
        selected = np.flatnonzero(candidate)
        frames = buffer[starts[selected][:, None] + self._window_index]
        total = total[selected]

        spectrum = frames @ self._basis
        magnitude = (spectrum.real**2 + spectrum.imag**2) * self._power_scale
        cross = spectrum[:, 16:24] * np.conj(spectrum[:, 8:16])
        deviation = np.arctan2(cross.imag, cross.real) * self._deviation_scale
        # undo the rectangular window's loss for an off-centre tone
        power = magnitude[:, :8] / np.maximum(_sinc2(deviation * self._bins_per_deviation), 0.25)
        harmonic = magnitude[:, 24:]
        lengths = self._lengths

        rows = np.argmax(power[:, :4], axis=1)
        cols = np.argmax(power[:, 4:], axis=1) + 4
        index = np.arange(len(frames))
        row_power = power[index, rows]
        col_power = power[index, cols]
        ok = (row_power >= self.min_power) & (col_power >= self.min_power)
        ok &= (col_power <= row_power * self.max_normal_twist) & (
            row_power <= col_power * self.max_reverse_twist
        )
        ok &= np.abs(deviation[index, rows]) <= self.max_deviation
        ok &= np.abs(deviation[index, cols]) <= self.max_deviation
        ok &= row_power + col_power >= self.min_tone_ratio * total
        # a row tone's second harmonic (1394-1882 Hz) sits near the column tones: allow for the column
        # tone's leakage into that bin
        col_freq = self._freqs[cols] * (1 + deviation[index, cols])
        row_length = lengths[rows]
        leak = col_power * _sinc2((2 * self._freqs[rows] - col_freq) * row_length / self.sample_rate)
        allowed_row = (np.sqrt(self.max_harmonic * row_power) + np.sqrt(leak)) ** 2
        ok &= harmonic[index, rows] <= allowed_row
        ok &= harmonic[index, cols] <= self.max_harmonic * col_power
        result[selected] = np.where(ok, self._keypad[rows * 4 + (cols - 4)], -1)
        return result

    def _step(self, digit: int, window_start: int) -> DtmfDigit | None:
        if self._current is not None:
            if digit == self._current:
                self._misses = 0
                return None
            self._misses += 1
            if self._misses < self.off_windows:
                return None
            self._current = None
            self._run_digit = -1
            self._run_length = 0
            return None
        if digit >= 0 and digit == self._run_digit:
            self._run_length += 1
        else:
            self._run_digit = digit
            self._run_length = 1 if digit >= 0 else 0
            self._run_start = window_start
        if self._run_length >= self.on_windows:
            self._current = digit
            self._misses = 0
            start = self._run_start
            if self._resampler is not None:
                start = start * self.input_rate // self.sample_rate
            return DtmfDigit(DTMF_DIGITS[digit], start)
        return None


def dtmf_samples(
    digit: str, seconds: float, sample_rate: int = 8000, level_dbm0: float = -10.0, twist_db: float = 2.0
) -> NDArray[np.int16]:
    """In-band tones of one key press (for a peer without telephone-event): row tone at `level_dbm0`, column
    tone `twist_db` louder, as telephones send them."""
    row, column = DTMF_FREQUENCIES[event_to_digit(digit_to_event(digit))]
    t = np.arange(round(seconds * sample_rate)) / sample_rate
    low = ZERO_DBM0_AMPLITUDE * 10 ** (level_dbm0 / 20)
    high = ZERO_DBM0_AMPLITUDE * 10 ** ((level_dbm0 + twist_db) / 20)
    signal = low * np.sin(2 * np.pi * row * t) + high * np.sin(2 * np.pi * column * t)
    return np.clip(np.rint(signal), -32768, 32767).astype(np.int16)


def _sinc2(x: NDArray[np.float64]) -> NDArray[np.float64]:
    """sinc(x)^2, the power response of a rectangular window `x` bins off a tone."""
    y = np.pi * x + 1e-12
    result: NDArray[np.float64] = (np.sin(y) / y) ** 2
    return result


def dbm0(samples: NDArray[np.int16]) -> float:
    """Level of a signal in dBm0 (its RMS against a 0 dBm0 sine)."""
    values = np.asarray(samples, dtype=np.float64)
    rms = math.sqrt(float(np.mean(values**2))) if len(values) else 0.0
    return 20 * math.log10(max(rms, 1e-9) / (ZERO_DBM0_AMPLITUDE / math.sqrt(2)))


@dataclass(frozen=True)
class _BasisTables:
    window: int
    basis: NDArray[np.complex128]
    lengths: NDArray[np.float64]
    shifts: NDArray[np.float64]
    freqs: NDArray[np.float64]
    window_index: NDArray[np.int64]
    power_scale: NDArray[np.float64]
    deviation_scale: NDArray[np.float64]
    bins_per_deviation: NDArray[np.float64]
    keypad: NDArray[np.int64]


@functools.lru_cache(maxsize=8)
def _basis_tables(rate: int) -> _BasisTables:
    lengths = [round(_CYCLES * rate / f) for f in _TONES]
    window = max(lengths)
    columns = np.zeros((window, 4 * len(_TONES)), dtype=np.complex128)
    sub_shift = []
    for k, (freq, length) in enumerate(zip(_TONES, lengths, strict=True)):
        start = (window - length) // 2
        sub = round(_SUB * length)
        shift = length - sub
        sub_shift.append(shift)
        n = np.arange(window)
        carrier = np.exp(-2j * np.pi * freq * n / rate)
        harmonic = np.exp(-4j * np.pi * freq * n / rate)
        hann = np.hanning(sub + 2)[1:-1]
        columns[start : start + length, k] = carrier[start : start + length]
        columns[start : start + sub, 8 + k] = hann * carrier[start : start + sub]
        columns[start + shift : start + length, 16 + k] = hann * carrier[start + shift : start + length]
        columns[start : start + length, 24 + k] = harmonic[start : start + length]
    columns.flags.writeable = False
    length_array = np.array(lengths, dtype=np.float64)
    shifts = np.array(sub_shift, dtype=np.float64)
    freqs = np.array(_TONES, dtype=np.float64)
    return _BasisTables(
        window=window,
        basis=columns,
        lengths=length_array,
        shifts=shifts,
        freqs=freqs,
        window_index=np.arange(window)[None, :],
        power_scale=np.tile(2 / length_array**2, 4),  # |X|^2 -> power of a sine (A^2 / 2)
        deviation_scale=rate / (2 * np.pi * shifts * freqs),  # phase -> relative error
        bins_per_deviation=freqs * length_array / rate,
        keypad=np.array([DTMF_DIGITS.index(KEYPAD[r][c]) for r in range(4) for c in range(4)]),
    )
