"""Per-call recording on the media path, one channel per party (REC-01..REC-04, REC-08, FM-07, FM-08, FM-17).

One file per call, stereo: left = caller, right = agent (`Channel.CALLER`, `Channel.AGENT`). Both channels
share one timeline, so a party's silence, lost packets and late packets never shift the other party:
each frame is written at its media time, gaps stay silent, and a late frame lands where it belongs.

`Recorder(root, tenant, call_id, *, started_at=None, format="mp3", sample_rate=8000, bitrate=None,
reorder_window=0.3, on_error=None, writer=None, path=None)`:

- Times (`at`) are seconds on the recording's timeline: 0 is the start of the recording. The session
  gives each frame its media time, e.g. with `RtpTimeline(clock_rate).position(rtp_timestamp, arrival)`
  where `arrival = loop.time() - recording_started`.
- `write(channel, frame, at)`: a frame (mono int16 at `sample_rate`, any length) heard from one party.
  Cheap (a copy into a ring buffer); frames later than `reorder_window` behind the newest are dropped and
  counted (`late_frames_dropped`).
- `advance(at)`: the clock moved on (call every tick or so, so silence on both sides is still written).
- `pause(at=None)`, `resume(at=None)`: the span is written as silence and listed in `paused_spans`
  (card numbers, REC privacy); `paused`.
- `await close(at=None) -> RecordingInfo` (or `close_blocking()`): writes the rest, pads to `at`,
  finishes and fsyncs the file. `info()` is a snapshot while recording.
- Errors (REC-08): a write error (disk full, permissions, an existing file: recordings are never
  overwritten) is delivered once to `on_error(RecordingError)` (on the event loop the recorder was created
  in, else on the writer thread); from then on `write`/`advance`/`pause` raise it, and `close()` returns a
  `RecordingInfo` whose `error` says what happened. Recording never stops silently.

Path: `<root>/<tenant>/<YYYY>/<MM>/<DD>/<call id>.<mp3|opus|wav>` (`recording_path`), the date of
`started_at` as given (pass the tenant's local time to file by local day; metadata is UTC).

Formats (`RecordingFormat`): MP3 (default, REC-04; a plain stream of MP3 frames, 16 kbps for 8 kHz
stereo, about 7 MB per hour; decoders start it about 0.14 s late, LAME's encoder delay, the same for both
channels), Opus in Ogg (24 kbps: less folds the channels together; pages of at most 0.2 s), or WAV
(16-bit PCM, 32 KB/s; the header's sizes are rewritten after every block). All three stay playable after
a crash or `kill -9` up to about the last second written: MP3 frames and Ogg pages are self-delimiting and
a WAV header is at most one block stale.

CPU per call-second, both channels (2 vCPU VM, measured): WAV about 0.45 ms, MP3 about 2.2 ms with the
system's libmp3lame (preferred over PyAV's, which is four times slower), Opus about 5 ms. A relayed
G.711 call costs about 1.7 ms (100 packets at 17 µs), so WAV adds about a quarter; MP3 more than doubles it.

The event loop never encodes or touches the disk: every `flush_interval` (0.25 s) of finished audio is
copied out of the ring buffer and handed to `RecordingWriter`, one background thread shared by all
recordings (bounded backlog: if it falls more than `max_pending_seconds` behind, the recording fails
with an error rather than losing audio quietly).
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import ctypes
import ctypes.util
import enum
import functools
import io
import os
import re
import struct
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import av
import numpy as np
import numpy.typing as npt

Frame = npt.NDArray[np.int16]
Stereo = npt.NDArray[np.int16]  # shape (samples, 2): caller, agent

_INT16 = np.dtype(np.int16)
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_MAX_RECORDING_SECONDS = 24 * 3600


class Channel(enum.IntEnum):
    CALLER = 0  # left
    AGENT = 1  # right


class RecordingFormat(enum.StrEnum):
    MP3 = "mp3"
    OPUS = "opus"
    WAV = "wav"

    @property
    def extension(self) -> str:
        return f".{self.value}"


class RecordingError(Exception):
    """Recording failed: `path`, `call_id`, `tenant` and `errno` (when there is one) say where and why."""

    def __init__(
        self,
        message: str,
        *,
        path: Path | None = None,
        call_id: str = "",
        tenant: str = "",
        errno: int | None = None,
    ) -> None:
        super().__init__(message)
        self.path = path
        self.call_id = call_id
        self.tenant = tenant
        self.errno = errno


@dataclass
class RecordingInfo:
    """What the database row of a recording needs (REC-05) and what happened to it."""

    call_id: str
    tenant: str
    path: Path
    format: RecordingFormat
    sample_rate: int
    started_at: datetime
    duration_seconds: float
    channels: tuple[str, str] = ("caller", "agent")
    paused_spans: list[tuple[float, float | None]] = field(default_factory=list)
    bytes: int = 0
    late_frames_dropped: int = 0
    complete: bool = False  # closed and flushed to disk without error
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "call_id": self.call_id,
            "tenant": self.tenant,
            "path": str(self.path),
            "format": self.format.value,
            "sample_rate": self.sample_rate,
            "started_at": self.started_at.isoformat(),
            "duration_seconds": self.duration_seconds,
            "channels": list(self.channels),
            "paused_spans": [list(span) for span in self.paused_spans],
            "bytes": self.bytes,
            "late_frames_dropped": self.late_frames_dropped,
            "complete": self.complete,
            "error": self.error,
        }


def recording_path(
    root: Path | str, tenant: str, call_id: str, started_at: datetime, format: RecordingFormat | str
) -> Path:
    """`<root>/<tenant>/<YYYY>/<MM>/<DD>/<call id>.<ext>`; tenant and call id must be plain names."""
    for what, name in (("tenant", tenant), ("call id", call_id)):
        if not _SAFE_NAME.match(name):
            raise ValueError(
                f"{what} {name!r} cannot be used in a file name (letters, digits, '.', '_', '-')"
            )
    extension = RecordingFormat(format).extension
    day = started_at.strftime("%Y/%m/%d")
    return Path(root) / tenant / day / f"{call_id}{extension}"


class RtpTimeline:
    """Maps a stream's RTP timestamps to recording time.

    The first packet is placed at its arrival time; later packets at their RTP distance from it, so loss
    leaves a gap and a late packet lands where it belongs. When the mapping and the arrival time disagree
    by more than `max_drift` seconds (a new SSRC after a transfer, a timestamp jump, clock drift over a long
    call), the timeline re-anchors at the arrival time.
    """

    def __init__(self, clock_rate: int = 8000, max_drift: float = 1.0) -> None:
        if clock_rate <= 0:
            raise ValueError("the RTP clock rate must be positive")
        self.clock_rate = clock_rate
        self.max_drift = max_drift
        self._last_timestamp: int | None = None
        self._extended = 0
        self._anchor_extended = 0
        self._anchor_position = 0.0

    def position(self, rtp_timestamp: int, arrival: float) -> float:
        timestamp = rtp_timestamp & 0xFFFFFFFF
        if self._last_timestamp is None:
            return self._anchor(timestamp, arrival)
        delta = ((timestamp - self._last_timestamp + 0x80000000) & 0xFFFFFFFF) - 0x80000000
        self._extended += delta
        self._last_timestamp = timestamp
        position = self._anchor_position + (self._extended - self._anchor_extended) / self.clock_rate
        if abs(position - arrival) > self.max_drift:
            return self._anchor(timestamp, arrival)
        return position

    def _anchor(self, timestamp: int, arrival: float) -> float:
        self._last_timestamp = timestamp
        self._anchor_extended = self._extended
        self._anchor_position = arrival
        return arrival


# --- the writer thread and the file formats -------------------------------------------------------------


def _write_all(descriptor: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        written = os.write(descriptor, view)
        if written <= 0:  # pragma: no cover - os.write raises rather than return 0 on regular files
            raise OSError("write made no progress")
        view = view[written:]


def _create_exclusive(path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    # O_EXCL: a recording is never overwritten, even when a call id were to repeat (REC-03).
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o640)


class _Sink:
    """A file format: receives stereo int16 blocks in the writer thread."""

    def __init__(self, path: Path, sample_rate: int, bitrate: int) -> None:
        self.path = path
        self.sample_rate = sample_rate
        self.bitrate = bitrate
        self.descriptor = _create_exclusive(path)
        self.bytes_written = 0

    def write(self, block: Stereo) -> None:
        raise NotImplementedError

    def finish(self) -> None:
        os.fsync(self.descriptor)
        self.abort()

    def abort(self) -> None:
        if self.descriptor >= 0:
            with contextlib.suppress(OSError):
                os.close(self.descriptor)
            self.descriptor = -1

    def _emit(self, data: bytes | memoryview) -> None:
        _write_all(self.descriptor, data)
        self.bytes_written += len(data)


class _WavSink(_Sink):
    _HEADER = struct.Struct("<4sI4s4sIHHIIHH4sI")

    def __init__(self, path: Path, sample_rate: int, bitrate: int) -> None:
        super().__init__(path, sample_rate, bitrate)
        self.data_bytes = 0
        self._emit(self._header())

    def _header(self) -> bytes:
        return self._HEADER.pack(
            b"RIFF", 36 + self.data_bytes, b"WAVE", b"fmt ", 16, 1, 2,
            self.sample_rate, self.sample_rate * 4, 4, 16, b"data", self.data_bytes,
        )  # fmt: skip

    def write(self, block: Stereo) -> None:
        data = np.ascontiguousarray(block, dtype="<i2").tobytes()
        self._emit(data)
        self.data_bytes += len(data)
        # Keep the sizes current so a crash leaves a WAV that says how long it is.
        os.pwrite(self.descriptor, struct.pack("<I", 36 + self.data_bytes), 4)
        os.pwrite(self.descriptor, struct.pack("<I", self.data_bytes), 40)


class _SystemLame:
    """The system's libmp3lame through ctypes.

    PyAV's wheels bundle a LAME built without its SIMD code paths, about four times slower than the Debian
    library; recording CPU is what FM-17 is about, so the system library is preferred when present.
    """

    def __init__(self, library: ctypes.CDLL, sample_rate: int, bitrate: int) -> None:
        self._library = library
        handle = library.lame_init()
        if not handle:
            raise RecordingError("libmp3lame could not allocate an encoder")
        self._handle = ctypes.c_void_p(handle)
        settings = (
            (library.lame_set_in_samplerate, sample_rate),
            (library.lame_set_out_samplerate, sample_rate),
            (library.lame_set_num_channels, 2),
            (library.lame_set_mode, 1),  # joint stereo
            (library.lame_set_brate, max(8, bitrate // 1000)),
            (library.lame_set_quality, 7),  # -q 7: fast, and speech loses nothing audible at this bitrate
            (
                library.lame_set_bWriteVbrTag,
                0,
            ),  # no Xing frame: it would claim a length of zero after a crash
        )
        for setter, value in settings:
            setter(self._handle, value)
        if library.lame_init_params(self._handle) < 0:
            self.close()
            raise RecordingError(f"libmp3lame refused {sample_rate} Hz stereo at {bitrate} bit/s")
        self._output = ctypes.create_string_buffer(16384)

    def encode(self, block: Stereo) -> bytes:
        samples = np.ascontiguousarray(block, dtype=np.int16)
        needed = len(samples) * 5 // 4 + 7200  # LAME's documented worst case
        if len(self._output) < needed:
            self._output = ctypes.create_string_buffer(needed)
        size = self._library.lame_encode_buffer_interleaved(
            self._handle, samples.ctypes.data, len(samples), self._output, len(self._output)
        )
        if size < 0:
            raise RecordingError(f"libmp3lame failed to encode (error {size})")
        return self._output.raw[:size]

    def flush(self) -> bytes:
        size = self._library.lame_encode_flush(self._handle, self._output, len(self._output))
        if size < 0:
            raise RecordingError(f"libmp3lame failed to flush (error {size})")
        return self._output.raw[:size]

    def close(self) -> None:
        if self._handle:
            self._library.lame_close(self._handle)
            self._handle = ctypes.c_void_p()

    @staticmethod
    @functools.cache
    def load() -> ctypes.CDLL | None:
        name = ctypes.util.find_library("mp3lame")
        if name is None:
            return None
        try:
            library = ctypes.CDLL(name)
        except OSError:
            return None
        library.lame_init.restype = ctypes.c_void_p
        library.lame_init.argtypes = []
        for setter in (
            "lame_set_in_samplerate", "lame_set_out_samplerate", "lame_set_num_channels", "lame_set_mode",
            "lame_set_brate", "lame_set_quality", "lame_set_bWriteVbrTag",
        ):  # fmt: skip
            function = getattr(library, setter)
            function.argtypes = [ctypes.c_void_p, ctypes.c_int]
            function.restype = ctypes.c_int
        library.lame_init_params.argtypes = [ctypes.c_void_p]
        library.lame_encode_buffer_interleaved.argtypes = [
            ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_int,
        ]  # fmt: skip
        library.lame_encode_flush.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]
        library.lame_close.argtypes = [ctypes.c_void_p]
        return library


class _PyAvLame:
    """LAME as bundled with PyAV: the fallback when the system has no libmp3lame."""

    def __init__(self, sample_rate: int, bitrate: int) -> None:
        self._encoder: Any = av.CodecContext.create("libmp3lame", "w")
        self._encoder.sample_rate = sample_rate
        self._encoder.layout = "stereo"
        self._encoder.format = "s16p"
        self._encoder.bit_rate = bitrate
        self._encoder.options = {"compression_level": "7"}
        self._encoder.open()
        self._sample_rate = sample_rate
        self._samples_in = 0

    def encode(self, block: Stereo) -> bytes:
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(block.T), format="s16p", layout="stereo")
        frame.sample_rate = self._sample_rate
        frame.pts = self._samples_in
        self._samples_in += len(block)
        return b"".join(bytes(packet) for packet in self._encoder.encode(frame))

    def flush(self) -> bytes:
        return b"".join(bytes(packet) for packet in self._encoder.encode(None))

    def close(self) -> None:
        return None


class _Mp3Sink(_Sink):
    """MP3 frames straight into the file: no header to fix up later, every frame decodable on its own."""

    def __init__(self, path: Path, sample_rate: int, bitrate: int) -> None:
        library = _SystemLame.load()
        self.encoder: _SystemLame | _PyAvLame = (
            _SystemLame(library, sample_rate, bitrate)
            if library is not None
            else _PyAvLame(sample_rate, bitrate)
        )
        try:
            super().__init__(path, sample_rate, bitrate)
        except BaseException:
            self.encoder.close()
            raise

    def write(self, block: Stereo) -> None:
        data = self.encoder.encode(block)
        if data:
            self._emit(data)

    def finish(self) -> None:
        self._emit(self.encoder.flush())
        self.encoder.close()
        super().finish()

    def abort(self) -> None:
        self.encoder.close()
        super().abort()


class _NonSeekableFile(io.RawIOBase):
    """The Ogg muxer writes through this: every page goes to the file at once, and nothing seeks back."""

    def __init__(self, sink: _Sink) -> None:
        self._sink = sink

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data)
        self._sink._emit(view)
        return len(view)


class _OpusSink(_Sink):
    def __init__(self, path: Path, sample_rate: int, bitrate: int) -> None:
        super().__init__(path, sample_rate, bitrate)
        try:
            self.container: Any = av.open(
                _NonSeekableFile(self), "w", format="ogg", options={"page_duration": "200000"}
            )
            self.stream: Any = self.container.add_stream("libopus", rate=sample_rate)
            context = self.stream.codec_context
            context.layout = "stereo"
            context.format = "s16"
            context.bit_rate = bitrate
            # Complexity 0 costs a quarter of the default 10; at 24 kbit/s speech stays clear.
            context.options = {"application": "voip", "compression_level": "0"}
        except BaseException:
            self.abort()
            raise
        self.samples_in = 0

    def write(self, block: Stereo) -> None:
        interleaved = np.ascontiguousarray(block).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(interleaved, format="s16", layout="stereo")
        frame.sample_rate = self.sample_rate
        frame.pts = self.samples_in
        self.samples_in += len(block)
        for packet in self.stream.encode(frame):
            self.container.mux(packet)

    def finish(self) -> None:
        for packet in self.stream.encode(None):
            self.container.mux(packet)
        self.container.close()
        super().finish()


_SINKS: dict[RecordingFormat, type[_Sink]] = {
    RecordingFormat.MP3: _Mp3Sink,
    RecordingFormat.OPUS: _OpusSink,
    RecordingFormat.WAV: _WavSink,
}
# Opus below about 24 kbit/s folds a stereo pair towards mono, which would mix the parties together.
_DEFAULT_BITRATES = {RecordingFormat.MP3: 16000, RecordingFormat.OPUS: 24000, RecordingFormat.WAV: 0}


class _Track:
    """One recording as the writer thread sees it. Shared with the Recorder; fields change in one thread."""

    def __init__(
        self,
        recorder_label: tuple[Path, str, str],
        format: RecordingFormat,
        sample_rate: int,
        bitrate: int,
        report: Callable[[RecordingError], None],
    ) -> None:
        self.path, self.call_id, self.tenant = recorder_label
        self.format = format
        self.sample_rate = sample_rate
        self.bitrate = bitrate
        self.report = report
        self.sink: _Sink | None = None
        self.error: RecordingError | None = None
        self.bytes_written = 0
        self.completed = False
        self._failing = threading.Lock()

    def fail(self, error: BaseException) -> None:
        """Record the first failure and report it once (from whichever thread saw it)."""
        if isinstance(error, RecordingError):
            failure = error
        else:
            number = error.errno if isinstance(error, OSError) else None
            reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
            failure = RecordingError(
                f"recording {self.path} failed: {reason}",
                path=self.path,
                call_id=self.call_id,
                tenant=self.tenant,
                errno=number,
            )
        with self._failing:
            if self.error is not None:
                return
            self.error = failure  # the writer thread closes the file when it next handles this track
        self.report(failure)

    # The methods below run in the writer thread.

    def abort(self) -> None:
        if self.sink is not None:
            self.bytes_written = self.sink.bytes_written
            self.sink.abort()

    def open(self) -> None:
        if self.error is None:
            try:
                self.sink = _SINKS[self.format](self.path, self.sample_rate, self.bitrate)
            except FileExistsError:
                message = f"recording {self.path} already exists; it is never overwritten"
                self.fail(RecordingError(message, path=self.path, call_id=self.call_id, tenant=self.tenant))

    def write(self, block: Stereo | int) -> None:
        if self.error is not None or self.sink is None:
            self.abort()
            return
        if isinstance(block, int):  # that many samples of silence, written a second at a time
            remaining = block
            silence = np.zeros((self.sample_rate, 2), dtype=np.int16)
            while remaining > 0:
                step = min(remaining, len(silence))
                self.sink.write(silence[:step])
                remaining -= step
        else:
            self.sink.write(block)
        self.bytes_written = self.sink.bytes_written

    def close(self) -> None:
        if self.error is None and self.sink is not None:
            self.sink.finish()
            self.bytes_written = self.sink.bytes_written
            self.completed = True
        else:
            self.abort()


class RecordingWriter:
    """The thread that encodes and writes every recording, so the event loop never does.

    One thread serves all recordings (LAME and libopus run without the GIL). The backlog is bounded:
    `max_pending_seconds` of audio across all recordings. `shutdown()` finishes the queued work.
    """

    def __init__(self, max_pending_seconds: float = 600.0, name: str = "hotline-recording-writer") -> None:
        self.max_pending_seconds = max_pending_seconds
        self.name = name
        self._jobs: deque[tuple[_Track, str, Any]] = deque()
        self._ready = threading.Condition()
        self._pending_seconds = 0.0
        self._thread: threading.Thread | None = None
        self._stopping = False

    @property
    def pending_seconds(self) -> float:
        return self._pending_seconds

    def submit(self, track: _Track, action: str, payload: Any = None, seconds: float = 0.0) -> bool:
        """Queue work; False (and nothing queued) when audio would push the backlog over its bound."""
        with self._ready:
            if seconds and self._pending_seconds + seconds > self.max_pending_seconds:
                return False
            if self._stopping:
                raise RuntimeError("the recording writer has been shut down")
            self._pending_seconds += seconds
            self._jobs.append((track, action, (payload, seconds)))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread.start()
            self._ready.notify()
        return True

    def shutdown(self, timeout: float = 30.0) -> None:
        """Finish the queued work and stop the thread."""
        with self._ready:
            self._stopping = True
            self._ready.notify()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._ready:
                while not self._jobs and not self._stopping:
                    self._ready.wait()
                if not self._jobs:
                    return
                track, action, (payload, seconds) = self._jobs.popleft()
            try:
                if action == "open":
                    track.open()
                elif action == "write":
                    track.write(payload)
                elif action == "close":
                    track.close()
            except Exception as error:  # every failure is reported, none ends the thread
                track.fail(error)
                track.abort()
            finally:
                if action == "close":
                    payload.set_result(None)
                with self._ready:
                    self._pending_seconds -= seconds


_default_writer: RecordingWriter | None = None
_default_writer_lock = threading.Lock()


def default_writer() -> RecordingWriter:
    global _default_writer
    with _default_writer_lock:
        if _default_writer is None:
            _default_writer = RecordingWriter()
            # A clean exit finishes what is queued; a crash still leaves playable files.
            atexit.register(_default_writer.shutdown)
        return _default_writer


# --- the recorder -----------------------------------------------------------------------------------------


@dataclass
class _Span:
    """A paused span in samples; `end` is None while the pause lasts."""

    start: int
    end: int | None = None


class Recorder:
    def __init__(
        self,
        root: Path | str,
        tenant: str,
        call_id: str,
        *,
        started_at: datetime | None = None,
        format: RecordingFormat | str = RecordingFormat.MP3,
        sample_rate: int = 8000,
        bitrate: int | None = None,
        reorder_window: float = 0.3,
        flush_interval: float = 0.25,
        on_error: Callable[[RecordingError], None] | None = None,
        writer: RecordingWriter | None = None,
        path: Path | str | None = None,
    ) -> None:
        if sample_rate not in (8000, 16000):
            raise ValueError("recordings are made at 8000 or 16000 Hz")
        if not 0 <= reorder_window <= 5 or not 0.02 <= flush_interval <= 5:
            raise ValueError("reorder_window must lie in 0-5 s and flush_interval in 0.02-5 s")
        self.tenant = tenant
        self.call_id = call_id
        self.format = RecordingFormat(format)
        self.sample_rate = sample_rate
        self.started_at = started_at or datetime.now(UTC)
        if self.started_at.tzinfo is None:
            raise ValueError("started_at must carry a time zone")
        if path is None:
            path = recording_path(root, tenant, call_id, self.started_at, self.format)
        self.path = Path(path)
        default_bitrate = _DEFAULT_BITRATES[self.format] * sample_rate // 8000
        self.bitrate = bitrate or default_bitrate
        self.on_error = on_error
        self._writer = writer or default_writer()
        try:
            self._loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            self._loop = None
        self._window = round(reorder_window * sample_rate)
        self._chunk = max(1, round(flush_interval * sample_rate))
        self._capacity = self._window + self._chunk + 2 * sample_rate
        self._ring: Stereo = np.zeros((self._capacity, 2), dtype=np.int16)
        self._base = 0  # first sample not yet handed to the writer
        self._high = 0  # end of the furthest audio written (or time advanced to)
        self._written_high = 0  # end of the furthest audio actually put in the ring
        self._paused: list[_Span] = []
        self.late_frames_dropped = 0
        self._closing: concurrent.futures.Future[None] | None = None
        self._track = _Track(
            (self.path, call_id, tenant), self.format, sample_rate, self.bitrate, self._report
        )
        self._writer.submit(self._track, "open")

    # -- the hot path (event loop) --

    def write(self, channel: Channel | int, frame: Frame, at: float) -> None:
        """Put one party's frame at `at` seconds on the recording timeline."""
        if self._track.error is not None or self._closing is not None:
            self._check_usable()
        if frame.dtype is not _INT16 or frame.ndim != 1:
            raise ValueError("frames are one-dimensional arrays of native int16")
        if channel != 0 and channel != 1:
            raise ValueError(f"channel must be Channel.CALLER (0) or Channel.AGENT (1), not {channel!r}")
        start = self._sample(at)
        end = start + len(frame)
        base = self._base
        if end <= base:
            self.late_frames_dropped += 1
            return
        if start < base:
            frame = frame[base - start :]
            start = base
        capacity = self._capacity
        if end - base > capacity:
            self._flush_to(end - capacity)  # what falls out of the ring is final now
        offset = start % capacity
        if offset + len(frame) <= capacity:
            self._ring[offset : offset + len(frame), channel] = frame
        else:
            first = capacity - offset
            self._ring[offset:, channel] = frame[:first]
            self._ring[: len(frame) - first, channel] = frame[first:]
        if end > self._written_high:
            self._written_high = end
        if end > self._high:
            self._advance_to(end)

    def advance(self, at: float) -> None:
        """Time has moved on to `at` (silence if no frames come)."""
        self._check_usable()
        self._advance_to(self._sample(at))

    def pause(self, at: float | None = None) -> None:
        """From `at` (default: the newest audio) the recording is silence until `resume`.

        Audio older than the reorder window is already on its way to the disk: a pause reaches back at
        most that far.
        """
        self._check_usable()
        if not self.paused:
            start = max(self._base, self._high if at is None else self._sample(at))
            self._paused.append(_Span(start))

    def resume(self, at: float | None = None) -> None:
        """Record again from `at` (default: the newest audio)."""
        self._check_usable()
        if self.paused:
            span = self._paused[-1]
            span.end = max(span.start, self._high if at is None else self._sample(at))

    @property
    def paused(self) -> bool:
        return bool(self._paused) and self._paused[-1].end is None

    @property
    def error(self) -> RecordingError | None:
        return self._track.error

    def info(self) -> RecordingInfo:
        """The metadata as of now (final after `close`)."""
        closed = self._closing is not None and self._closing.done()
        return RecordingInfo(
            call_id=self.call_id,
            tenant=self.tenant,
            path=self.path,
            format=self.format,
            sample_rate=self.sample_rate,
            started_at=self.started_at.astimezone(UTC),
            duration_seconds=(self._base if self._closing else self._high) / self.sample_rate,
            paused_spans=[
                (span.start / self.sample_rate, None if span.end is None else span.end / self.sample_rate)
                for span in self._paused
            ],
            bytes=self._track.bytes_written,
            late_frames_dropped=self.late_frames_dropped,
            complete=closed and self._track.completed,
            error=None if self._track.error is None else str(self._track.error),
        )

    async def close(self, at: float | None = None) -> RecordingInfo:
        """Write the rest (padding silence up to `at`), finish the file, and return its metadata."""
        await asyncio.wrap_future(self._finish(at))
        return self.info()

    def close_blocking(self, at: float | None = None, timeout: float = 30.0) -> RecordingInfo:
        """`close` for code outside an event loop."""
        self._finish(at).result(timeout)
        return self.info()

    # -- internals --

    def _finish(self, at: float | None) -> concurrent.futures.Future[None]:
        if self._closing is None:
            end = self._high if at is None else max(self._high, self._sample(at))
            if self._track.error is None:
                self._flush_to(end)
            if self.paused:
                self._paused[-1].end = max(self._paused[-1].start, end)
            self._closing = concurrent.futures.Future()
            self._writer.submit(self._track, "close", self._closing)
        return self._closing

    def _sample(self, at: float) -> int:
        position = round(at * self.sample_rate)
        if not 0 <= position <= _MAX_RECORDING_SECONDS * self.sample_rate:
            if position < 0:
                return 0
            raise ValueError(f"time {at} s is beyond the longest recording ({_MAX_RECORDING_SECONDS} s)")
        return position

    def _check_usable(self) -> None:
        if self._track.error is not None:
            raise self._track.error
        if self._closing is not None:
            message = f"recording {self.path} is closed"
            raise RecordingError(message, path=self.path, call_id=self.call_id, tenant=self.tenant)

    def _advance_to(self, end: int) -> None:
        if end > self._high:
            self._high = end
        target = self._high - self._window
        if target - self._base >= self._chunk:
            self._flush_to(target)

    def _flush_to(self, target: int) -> None:
        """Hand [base, target) to the writer: the ring where audio was written, then a count of silence."""
        audio_end = min(target, max(self._base, self._written_high))
        while self._base < audio_end:
            count = min(audio_end - self._base, self._capacity)
            offset = self._base % self._capacity
            first = min(count, self._capacity - offset)
            block = np.empty((count, 2), dtype=np.int16)
            block[:first] = self._ring[offset : offset + first]
            self._ring[offset : offset + first] = 0
            if first < count:
                block[first:] = self._ring[: count - first]
                self._ring[: count - first] = 0
            self._silence_paused(block, self._base)
            self._submit(block, count)
            self._base += count
        if self._base < target:
            self._submit(target - self._base, target - self._base)
            self._base = target

    def _silence_paused(self, block: Stereo, start: int) -> None:
        end = start + len(block)
        for span in self._paused:
            if span.start < end and (span.end is None or span.end > start):
                silent_until = len(block) if span.end is None else span.end - start
                block[max(0, span.start - start) : silent_until] = 0

    def _submit(self, block: Stereo | int, samples: int) -> None:
        if self._track.error is not None:
            return
        if not self._writer.submit(self._track, "write", block, samples / self.sample_rate):
            self._track.fail(
                RecordingError(
                    f"recording {self.path} failed: the recording writer is "
                    f"{self._writer.pending_seconds:.0f} s behind (disk or CPU too slow)",
                    path=self.path,
                    call_id=self.call_id,
                    tenant=self.tenant,
                )
            )

    def _report(self, error: RecordingError) -> None:
        callback = self.on_error
        if callback is None:
            return
        loop = self._loop
        if loop is not None and not loop.is_closed():
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if running is loop:
                callback(error)
            else:
                with contextlib.suppress(RuntimeError):  # the loop closed in between
                    loop.call_soon_threadsafe(callback, error)
                return
        else:
            callback(error)
