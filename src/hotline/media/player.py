"""Audio sources and the player a leg pulls 20 ms frames from.

Audio inside the media engine is mono int16 numpy arrays at 8000 Hz (16000 Hz for G.722 legs), in 20 ms
frames (`frame_samples(rate)` samples: 160 at 8 kHz). Frames handed out by sources are read-only views
into cached audio; copy one before changing it.

Sources (`AudioSource`: `.sample_rate`, `.frame_samples`, `.duration`, `read_frame() -> frame | None`,
`rewind()`):

- `PcmSource(samples, sample_rate)`: an array already in memory.
- `FileSource`: a WAV/MP3/OGG (Opus, Vorbis)/... file, decoded with PyAV to mono at the target rate once
  and cached in memory by (path, mtime, size, rate). Decoding is slow, so open it with
  `await FileSource.open(path, sample_rate)` (decodes in a worker thread) or `FileSource.open_sync(...)`
  outside the event loop. `await load_audio(path, rate)` gives the array itself.
- `ToneSource(tone, sample_rate, duration=None)`: cadenced single or dual-frequency tones. `tone(name,
  country="cn")` looks up the standard ones (`TONES`): China's dial, ringback (450 Hz, 1 s on / 4 s off),
  busy (450 Hz, 0.35 s / 0.35 s), congestion and call waiting; US and UK sets too; `Tone(...)` builds others.
- `SilenceSource(duration=None, sample_rate)`: silence, endless when duration is None.
- `Playlist(sources, loop=False)`: plays sources in order; `loop=True` starts again forever (music on hold).

`Player(source, interruptible=True, on_finished=None)`: the session calls `next_frame()` every 20 ms and
gets a frame, or None once playback is over. `interrupt(reason)` ends an interruptible prompt (a DTMF digit
barging in) and `stop()` ends any playback; `finished`, `outcome` (`PlaybackOutcome`), `on_finished(player)`
and `await player.wait()` report the end.

Music on hold without licensing questions: `music_on_hold(rate)` synthesises a soft 16-second chord loop
(cached; the first call takes about 0.1 s), `await open_music_on_hold(rate)` / `music_on_hold_source(rate)`
play it forever, `ensure_music_on_hold_file(directory)` writes it as a WAV once.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
import math
import os
import tempfile
import threading
import wave
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import numpy.typing as npt

Frame = npt.NDArray[np.int16]

FRAME_SECONDS = 0.02
SUPPORTED_RATES = (8000, 16000, 48000)
# Peak amplitude of a 0 dBm0 sine in 16-bit linear PCM: full scale is +3.17 dBm0 for G.711 mu-law.
DBM0_PEAK = 32767 / 10 ** (3.17 / 20)


def frame_samples(sample_rate: int) -> int:
    """Samples in one 20 ms frame at `sample_rate`."""
    return sample_rate // 50


def _check_rate(sample_rate: int) -> None:
    if sample_rate not in SUPPORTED_RATES:
        raise ValueError(f"sample rate {sample_rate} is not supported; use one of {SUPPORTED_RATES}")


def _read_only(samples: Frame) -> Frame:
    samples.flags.writeable = False
    return samples


class AudioFileError(Exception):
    """A file could not be read or decoded as audio; the message says which file and why."""

    def __init__(self, path: Path | str, reason: str) -> None:
        super().__init__(f"cannot play {path}: {reason}")
        self.path = Path(path)
        self.reason = reason


# --- decoding and the decoded-audio cache -------------------------------------------------------------


def decode_audio_file(path: Path | str, sample_rate: int = 8000) -> Frame:
    """Decode any audio file PyAV reads to mono int16 at `sample_rate`. Slow: keep it off the event loop."""
    _check_rate(sample_rate)
    path = Path(path)
    try:
        container = av.open(str(path))
    except FileNotFoundError:
        raise AudioFileError(path, "no such file") from None
    except (av.FFmpegError, OSError, UnicodeDecodeError) as error:
        raise AudioFileError(path, f"not a readable audio file ({error})") from None
    chunks: list[Frame] = []
    try:
        if not container.streams.audio:
            raise AudioFileError(path, "the file has no audio stream")
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="s16", layout="mono", rate=sample_rate)
        for decoded in container.decode(stream):
            for converted in resampler.resample(decoded):
                chunks.append(converted.to_ndarray().reshape(-1).astype(np.int16, copy=False))
        for converted in resampler.resample(None):
            chunks.append(converted.to_ndarray().reshape(-1).astype(np.int16, copy=False))
    except av.FFmpegError as error:
        raise AudioFileError(path, f"decoding failed ({error})") from None
    finally:
        container.close()
    if not chunks:
        return _read_only(np.zeros(0, dtype=np.int16))
    return _read_only(np.concatenate(chunks))


class DecodedAudioCache:
    """Decoded files in memory, least recently used evicted beyond `max_bytes`.

    The key is (resolved path, mtime, size, rate), so replacing a prompt file is picked up on the next play
    (IVR-03) without any invalidation call. Concurrent loads of one file decode it once.
    """

    def __init__(self, max_bytes: int = 64 * 1024 * 1024) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple[str, int, int, int], Frame] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self._loading: dict[tuple[str, int, int, int], asyncio.Future[Frame]] = {}
        self.decodes = 0  # how many times a file was actually decoded (cache misses)

    @staticmethod
    def _key(path: Path, sample_rate: int) -> tuple[str, int, int, int]:
        try:
            resolved = path.resolve()
            status = resolved.stat()
        except FileNotFoundError:
            raise AudioFileError(path, "no such file") from None
        except OSError as error:
            raise AudioFileError(path, error.strerror or str(error)) from None
        return (str(resolved), status.st_mtime_ns, status.st_size, sample_rate)

    def _lookup(self, key: tuple[str, int, int, int]) -> Frame | None:
        with self._lock:
            samples = self._entries.get(key)
            if samples is not None:
                self._entries.move_to_end(key)
            return samples

    def _store(self, key: tuple[str, int, int, int], samples: Frame) -> None:
        with self._lock:
            if key in self._entries:
                return
            self._entries[key] = samples
            self._bytes += samples.nbytes
            while self._bytes > self.max_bytes and len(self._entries) > 1:
                _, evicted = self._entries.popitem(last=False)
                self._bytes -= evicted.nbytes

    def _decode(self, key: tuple[str, int, int, int], path: Path, sample_rate: int) -> Frame:
        samples = decode_audio_file(path, sample_rate)
        with self._lock:
            self.decodes += 1
        self._store(key, samples)
        return samples

    def get_sync(self, path: Path | str, sample_rate: int = 8000) -> Frame:
        """The decoded file, decoding it in this thread on a miss."""
        path = Path(path)
        key = self._key(path, sample_rate)
        cached = self._lookup(key)
        return cached if cached is not None else self._decode(key, path, sample_rate)

    async def get(self, path: Path | str, sample_rate: int = 8000) -> Frame:
        """The decoded file, decoding it in a worker thread on a miss (the event loop keeps running)."""
        _check_rate(sample_rate)
        path = Path(path)
        key = await asyncio.to_thread(self._key, path, sample_rate)
        cached = self._lookup(key)
        if cached is not None:
            return cached
        pending = self._loading.get(key)
        if pending is None or pending.get_loop() is not asyncio.get_running_loop():
            pending = asyncio.ensure_future(asyncio.to_thread(self._decode, key, path, sample_rate))
            self._loading[key] = pending
            pending.add_done_callback(lambda _: self._loading.pop(key, None))
        return await asyncio.shield(pending)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0


default_audio_cache = DecodedAudioCache()


async def load_audio(
    path: Path | str, sample_rate: int = 8000, cache: DecodedAudioCache | None = None
) -> Frame:
    """Decoded mono int16 audio of a file at `sample_rate`, through the (default) cache."""
    return await (cache or default_audio_cache).get(path, sample_rate)


def write_wav(path: Path | str, samples: Frame, sample_rate: int) -> None:
    """Write mono int16 samples as a WAV file atomically (temporary file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(descriptor, "wb") as raw, wave.open(raw, "wb") as output:
            output.setnchannels(1)
            output.setsampwidth(2)
            output.setframerate(sample_rate)
            output.writeframes(np.ascontiguousarray(samples, dtype="<i2").tobytes())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


# --- sources ----------------------------------------------------------------------------------------------


class AudioSource(ABC):
    """Something that yields 20 ms frames of mono int16 audio."""

    sample_rate: int

    @property
    def frame_samples(self) -> int:
        return frame_samples(self.sample_rate)

    @property
    @abstractmethod
    def duration(self) -> float | None:
        """Seconds of audio from the start, or None when endless."""

    @abstractmethod
    def read_frame(self) -> Frame | None:
        """The next frame (exactly `frame_samples` samples), or None when the source has ended."""

    @abstractmethod
    def rewind(self) -> None:
        """Start again from the beginning."""


class PcmSource(AudioSource):
    """Plays an array of samples once; the last frame is padded with silence."""

    def __init__(self, samples: Frame, sample_rate: int = 8000) -> None:
        _check_rate(sample_rate)
        if samples.ndim != 1 or samples.dtype != np.int16:
            raise ValueError("PCM samples must be a one-dimensional int16 array")
        self.sample_rate = sample_rate
        self.samples = samples if not samples.flags.writeable else _read_only(samples.copy())
        self._position = 0

    @property
    def duration(self) -> float:
        return len(self.samples) / self.sample_rate

    @property
    def position(self) -> int:
        return self._position

    def read_frame(self) -> Frame | None:
        start, size = self._position, self.frame_samples
        if start >= len(self.samples):
            return None
        self._position = start + size
        frame = self.samples[start : start + size]
        if len(frame) < size:
            padded = np.zeros(size, dtype=np.int16)
            padded[: len(frame)] = frame
            return padded
        return frame

    def rewind(self) -> None:
        self._position = 0


class FileSource(PcmSource):
    """A decoded audio file; build it with `await FileSource.open(...)` so decoding never blocks the loop."""

    def __init__(self, path: Path | str, samples: Frame, sample_rate: int = 8000) -> None:
        super().__init__(samples, sample_rate)
        self.path = Path(path)

    @classmethod
    async def open(
        cls, path: Path | str, sample_rate: int = 8000, cache: DecodedAudioCache | None = None
    ) -> FileSource:
        return cls(path, await load_audio(path, sample_rate, cache), sample_rate)

    @classmethod
    def open_sync(
        cls, path: Path | str, sample_rate: int = 8000, cache: DecodedAudioCache | None = None
    ) -> FileSource:
        return cls(path, (cache or default_audio_cache).get_sync(path, sample_rate), sample_rate)


class SilenceSource(AudioSource):
    """Silence for `duration` seconds (rounded up to whole frames), or forever when None."""

    def __init__(self, duration: float | None = None, sample_rate: int = 8000) -> None:
        _check_rate(sample_rate)
        if duration is not None and duration < 0:
            raise ValueError("silence duration must not be negative")
        self.sample_rate = sample_rate
        self._duration = duration
        self._frames_total = None if duration is None else math.ceil(round(duration * 50, 6))
        self._frames_read = 0
        self._frame = _read_only(np.zeros(frame_samples(sample_rate), dtype=np.int16))

    @property
    def duration(self) -> float | None:
        return self._duration

    def read_frame(self) -> Frame | None:
        if self._frames_total is not None and self._frames_read >= self._frames_total:
            return None
        self._frames_read += 1
        return self._frame

    def rewind(self) -> None:
        self._frames_read = 0


@dataclass(frozen=True)
class Tone:
    """A call-progress tone: the sum of `frequencies` switched by `cadence`.

    `cadence` is (on, off, on, off, ...) in seconds; empty means a continuous tone. `level_dbm0` is the level
    of each frequency component.
    """

    name: str
    frequencies: tuple[float, ...]
    cadence: tuple[float, ...] = ()
    level_dbm0: float = -10.0

    def __post_init__(self) -> None:
        if not self.frequencies or any(f <= 0 for f in self.frequencies):
            raise ValueError(f"tone {self.name!r} needs positive frequencies")
        if len(self.cadence) % 2 or any(part < 0 for part in self.cadence):
            raise ValueError(f"tone {self.name!r}: cadence must be (on, off) pairs of non-negative seconds")
        if self.cadence and sum(self.cadence) <= 0:
            raise ValueError(f"tone {self.name!r}: cadence must last longer than zero")


TONES: dict[str, dict[str, Tone]] = {
    # China: YD/T 1277 / GB 3380 signal tones, all at 450 Hz.
    "cn": {
        "dial": Tone("dial", (450.0,)),
        "ringback": Tone("ringback", (450.0,), (1.0, 4.0)),
        "busy": Tone("busy", (450.0,), (0.35, 0.35)),
        "congestion": Tone("congestion", (450.0,), (0.7, 0.7)),
        "call_waiting": Tone("call_waiting", (450.0,), (0.4, 4.0)),
    },
    # North America: the "precise tone plan", each component at -13 dBm0.
    "us": {
        "dial": Tone("dial", (350.0, 440.0), (), -13.0),
        "ringback": Tone("ringback", (440.0, 480.0), (2.0, 4.0), -19.0),
        "busy": Tone("busy", (480.0, 620.0), (0.5, 0.5), -24.0),
        "congestion": Tone("congestion", (480.0, 620.0), (0.25, 0.25), -24.0),
        "call_waiting": Tone("call_waiting", (440.0,), (0.3, 9.7), -13.0),
    },
    "uk": {
        "dial": Tone("dial", (350.0, 450.0), (), -13.0),
        "ringback": Tone("ringback", (400.0, 450.0), (0.4, 0.2, 0.4, 2.0), -13.0),
        "busy": Tone("busy", (400.0,), (0.375, 0.375)),
        "congestion": Tone("congestion", (400.0,), (0.4, 0.35, 0.225, 0.525)),
        "call_waiting": Tone("call_waiting", (400.0,), (0.1, 3.0)),
    },
}


def tone(name: str, country: str = "cn") -> Tone:
    """The standard tone `name` (dial, ringback, busy, congestion, call_waiting) of `country`."""
    try:
        return TONES[country.lower()][name]
    except KeyError:
        raise ValueError(f"no {name!r} tone for country {country!r}; known: {sorted(TONES)}") from None


def _render_tone_cycle(spec: Tone, sample_rate: int) -> Frame:
    """One whole cadence cycle (or one second of a continuous tone) with short ramps at each edge."""
    cycle_seconds = sum(spec.cadence) if spec.cadence else 1.0
    length = max(1, round(cycle_seconds * sample_rate))
    t = np.arange(length, dtype=np.float64) / sample_rate
    amplitude = DBM0_PEAK * 10 ** (spec.level_dbm0 / 20)
    signal = np.zeros(length, dtype=np.float64)
    for frequency in spec.frequencies:
        if frequency >= sample_rate / 2:
            raise ValueError(
                f"tone {spec.name!r}: {frequency} Hz is above the Nyquist limit of {sample_rate} Hz"
            )
        signal += amplitude * np.sin(2 * np.pi * frequency * t)
    if spec.cadence:
        envelope = np.zeros(length, dtype=np.float64)
        ramp = max(1, int(0.004 * sample_rate))  # 4 ms raised-cosine edges keep the switching click-free
        start = 0.0
        for index in range(0, len(spec.cadence), 2):
            on_begin = round(start * sample_rate)
            on_end = min(length, round((start + spec.cadence[index]) * sample_rate))
            span = on_end - on_begin
            if span > 0:
                envelope[on_begin:on_end] = 1.0
                edge = min(ramp, span // 2)
                if edge > 0:
                    rise = 0.5 - 0.5 * np.cos(np.pi * np.arange(edge) / edge)
                    envelope[on_begin : on_begin + edge] = rise
                    envelope[on_end - edge : on_end] = rise[::-1]
            start += spec.cadence[index] + spec.cadence[index + 1]
        signal *= envelope
    return _read_only(np.clip(np.round(signal), -32768, 32767).astype(np.int16))


@functools.lru_cache(maxsize=64)
def _tone_cycle(spec: Tone, sample_rate: int) -> Frame:
    return _render_tone_cycle(spec, sample_rate)


class ToneSource(AudioSource):
    """A tone played for `duration` seconds, or forever when None."""

    def __init__(self, spec: Tone, sample_rate: int = 8000, duration: float | None = None) -> None:
        _check_rate(sample_rate)
        if duration is not None and duration < 0:
            raise ValueError("tone duration must not be negative")
        self.sample_rate = sample_rate
        self.tone = spec
        self._cycle = _tone_cycle(spec, sample_rate)
        self._duration = duration
        self._limit = None if duration is None else round(duration * sample_rate)
        self._position = 0

    @property
    def duration(self) -> float | None:
        return self._duration

    def read_frame(self) -> Frame | None:
        size = self.frame_samples
        if self._limit is not None and self._position >= self._limit:
            return None
        offset = self._position % len(self._cycle)
        if offset + size <= len(self._cycle):
            frame = self._cycle[offset : offset + size]
        else:
            frame = np.take(self._cycle, np.arange(offset, offset + size), mode="wrap")
        if self._limit is not None and self._position + size > self._limit:
            frame = frame.copy()
            frame[self._limit - self._position :] = 0
        self._position += size
        return frame

    def rewind(self) -> None:
        self._position = 0


class Playlist(AudioSource):
    """Sources played one after another; with `loop=True` it starts over forever (music on hold)."""

    def __init__(self, sources: Sequence[AudioSource], loop: bool = False) -> None:
        if not sources:
            raise ValueError("a playlist needs at least one source")
        rates = {source.sample_rate for source in sources}
        if len(rates) != 1:
            raise ValueError(f"all sources of a playlist must share one sample rate, got {sorted(rates)}")
        self.sample_rate = rates.pop()
        self.sources = list(sources)
        self.loop = loop
        self._index = 0

    @property
    def duration(self) -> float | None:
        if self.loop:
            return None
        total = 0.0
        for source in self.sources:
            part = source.duration
            if part is None:
                return None
            total += part
        return total

    @property
    def index(self) -> int:
        """Which source is playing now."""
        return self._index

    def read_frame(self) -> Frame | None:
        # Bounded: at most one pass over every source, plus one restart when looping.
        passes = 2 if self.loop else 1
        for _ in range(passes * len(self.sources) + 1):
            if self._index >= len(self.sources):
                if not self.loop:
                    return None
                self.rewind()
            frame = self.sources[self._index].read_frame()
            if frame is not None:
                return frame
            self._index += 1
        return None  # every source is empty: even a loop has nothing to play

    def rewind(self) -> None:
        for source in self.sources:
            source.rewind()
        self._index = 0


# --- the player -------------------------------------------------------------------------------------------


class PlaybackOutcome(enum.Enum):
    COMPLETED = "completed"  # the source ran out
    INTERRUPTED = "interrupted"  # interrupt(): a DTMF digit or speech barged in
    STOPPED = "stopped"  # stop(): the call or the application ended it


class Player:
    """Hands a leg one frame per 20 ms tick from `source` until it ends, is interrupted or stopped."""

    def __init__(
        self,
        source: AudioSource,
        *,
        interruptible: bool = True,
        on_finished: Callable[[Player], None] | None = None,
    ) -> None:
        self.source = source
        self.interruptible = interruptible
        self.on_finished = on_finished
        self.outcome: PlaybackOutcome | None = None
        self.interrupted_by: str | None = None
        self.frames_played = 0
        self._done: asyncio.Event | None = None

    @property
    def sample_rate(self) -> int:
        return self.source.sample_rate

    @property
    def finished(self) -> bool:
        return self.outcome is not None

    @property
    def position(self) -> float:
        """Seconds played so far."""
        return self.frames_played * FRAME_SECONDS

    def next_frame(self) -> Frame | None:
        """The frame to send in this tick, or None when playback is over (and from then on)."""
        if self.outcome is not None:
            return None
        frame = self.source.read_frame()
        if frame is None:
            self._finish(PlaybackOutcome.COMPLETED)
            return None
        self.frames_played += 1
        return frame

    def interrupt(self, reason: str = "dtmf") -> bool:
        """End an interruptible playback now; returns whether it did (False if not interruptible or over)."""
        if self.outcome is not None or not self.interruptible:
            return False
        self.interrupted_by = reason
        self._finish(PlaybackOutcome.INTERRUPTED)
        return True

    def stop(self) -> None:
        """End the playback whether or not it is interruptible."""
        if self.outcome is None:
            self._finish(PlaybackOutcome.STOPPED)

    async def wait(self) -> PlaybackOutcome:
        """Wait until the playback is over and say how it ended."""
        if self.outcome is None:
            if self._done is None:
                self._done = asyncio.Event()
            await self._done.wait()
        assert self.outcome is not None
        return self.outcome

    def _finish(self, outcome: PlaybackOutcome) -> None:
        self.outcome = outcome
        if self._done is not None:
            self._done.set()
        if self.on_finished is not None:
            self.on_finished(self)


def play_files_sync(paths: Iterable[Path | str], sample_rate: int = 8000, loop: bool = False) -> Playlist:
    """A playlist of decoded files (decoding here: use `open_playlist` on the event loop)."""
    return Playlist([FileSource.open_sync(path, sample_rate) for path in paths], loop=loop)


async def open_playlist(paths: Iterable[Path | str], sample_rate: int = 8000, loop: bool = False) -> Playlist:
    """A playlist of files decoded in worker threads (prompt lists, or a looping music-on-hold list)."""
    sources = await asyncio.gather(*(FileSource.open(path, sample_rate) for path in paths))
    return Playlist(list(sources), loop=loop)


# --- music on hold ----------------------------------------------------------------------------------------

_MOH_BEATS_PER_SECOND = 1.0  # a calm 60 beats per minute, four beats to a chord
_MOH_CHORDS = (  # C major, A minor, F major, G major (I - vi - IV - V), as MIDI notes
    (60, 64, 67),
    (57, 60, 64),
    (53, 57, 60),
    (55, 59, 62),
)


def _midi_hz(note: int) -> float:
    return 440.0 * 2 ** ((note - 69) / 12)


@functools.lru_cache(maxsize=4)
def music_on_hold(sample_rate: int = 8000) -> Frame:
    """A soft I-vi-IV-V loop (pad chords and a gentle arpeggio), 16 s, seamless when repeated.

    Synthesised here so every installation has hold music without licensing questions. Energy sits in the
    300-3400 Hz telephone band; peaks stay below -6 dBFS.
    """
    _check_rate(sample_rate)
    chord_seconds = 4 / _MOH_BEATS_PER_SECOND
    total = round(chord_seconds * len(_MOH_CHORDS) * sample_rate)
    music = np.zeros(total, dtype=np.float64)

    def add_wrapped(start: int, samples: npt.NDArray[np.float64]) -> None:
        # Tails that run past the end wrap to the start, so the loop has no seam.
        head = min(len(samples), total - start)
        music[start : start + head] += samples[:head]
        music[: len(samples) - head] += samples[head:]

    def voice(frequency: float, seconds: float, attack: float, decay: float) -> npt.NDArray[np.float64]:
        t = np.arange(round(seconds * sample_rate)) / sample_rate
        tone_ = np.sin(2 * np.pi * frequency * t) + 0.3 * np.sin(4 * np.pi * frequency * t)
        envelope = np.minimum(1.0, t / attack) * np.exp(-t / decay)
        fade = np.minimum(1.0, (seconds - t) / 0.05)  # end every note softly at zero
        return np.asarray(tone_ * envelope * fade, dtype=np.float64)

    for chord_index, chord in enumerate(_MOH_CHORDS):
        chord_start = round(chord_index * chord_seconds * sample_rate)
        for note in chord:  # the pad an octave up keeps it inside the telephone band
            add_wrapped(chord_start, 0.16 * voice(_midi_hz(note + 12), chord_seconds + 0.6, 0.4, 3.0))
        pattern = (chord[0], chord[1], chord[2], chord[1]) * 2  # eighth-note arpeggio two octaves up
        for step, note in enumerate(pattern):
            note_start = chord_start + round(step * chord_seconds / len(pattern) * sample_rate)
            add_wrapped(note_start, 0.12 * voice(_midi_hz(note + 24), 0.9, 0.01, 0.25))
    peak = float(np.max(np.abs(music)))
    scale = (32767 * 10 ** (-6 / 20)) / peak if peak > 0 else 0.0
    return _read_only(np.round(music * scale).astype(np.int16))


def music_on_hold_source(sample_rate: int = 8000) -> Playlist:
    """The built-in music on hold, looping forever. The first call per rate synthesises it (about 0.1 s of
    CPU): on the event loop use `await open_music_on_hold()`, or call this once at start-up."""
    return Playlist([PcmSource(music_on_hold(sample_rate), sample_rate)], loop=True)


async def open_music_on_hold(sample_rate: int = 8000) -> Playlist:
    """`music_on_hold_source`, synthesising in a worker thread the first time."""
    samples = await asyncio.to_thread(music_on_hold, sample_rate)
    return Playlist([PcmSource(samples, sample_rate)], loop=True)


def ensure_music_on_hold_file(directory: Path | str, sample_rate: int = 8000) -> Path:
    """Write the built-in music on hold as `<directory>/music-on-hold-<rate>.wav` unless it exists."""
    path = Path(directory) / f"music-on-hold-{sample_rate}.wav"
    if not path.exists():
        write_wav(path, music_on_hold(sample_rate), sample_rate)
    return path
