"""Text to speech with espeak-ng, through a content-addressed cache of 8 kHz prompts (IVR-03).

`SpeechSynthesizer(cache_dir, binary="espeak-ng", sample_rate=8000)`:

- `await synthesize(text, language="zh" | "en", *, voice=None, rate=None, pitch=None) -> Path`: a mono
  16-bit WAV at `sample_rate`. The file name is a hash of (engine version, voice, rate, pitch, sample rate,
  text), so the same prompt is synthesised once and then read from disk; concurrent requests for the same
  prompt share one synthesis. espeak-ng runs as a subprocess and the resampling in a worker thread, so the
  event loop never waits. Files are written atomically (temporary file, then rename).
- `await engine_version() -> str`, `cache_path(...)` (where a prompt would be cached), `syntheses` (how many
  times the engine actually ran: a cache hit does not count).

Languages: "zh" (also "zh-CN", "cmn": Mandarin, voice `cmn`) and "en" ("en-US": voice `en-us`; "en-GB":
`en`); any espeak-ng voice can be named with `voice=`. Errors: `TtsUnavailableError` when the binary is
missing, `TtsError` when it fails or produces no sound. Filling variables into prompt templates is the IVR's
business, not this module's.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from hotline.media.player import AudioFileError, decode_audio_file, write_wav

# Bump when the output of this module changes for the same inputs (normalisation, resampling...).
_CACHE_FORMAT = 1
_VOICES = {
    "zh": "cmn",
    "zh-cn": "cmn",
    "cmn": "cmn",
    "en": "en-us",
    "en-us": "en-us",
    "en-gb": "en",
}
MAX_TEXT_LENGTH = 5000
# Prompts are normalised to this peak (about -3 dBFS): loud enough on a phone, never clipping in G.711.
_PEAK_TARGET = 23000


class TtsError(RuntimeError):
    """Speech synthesis failed; the message says why."""


class TtsUnavailableError(TtsError):
    """The speech engine is not installed or cannot be started."""


def voice_for(language: str) -> str:
    """The espeak-ng voice for a language tag ("zh", "en", "en-GB", ...)."""
    try:
        return _VOICES[language.lower()]
    except KeyError:
        raise ValueError(
            f"no voice for language {language!r}; use one of {sorted(_VOICES)} or voice="
        ) from None


class SpeechSynthesizer:
    def __init__(
        self,
        cache_dir: Path | str,
        *,
        binary: str = "espeak-ng",
        sample_rate: int = 8000,
        default_rate: int = 150,
        default_pitch: int = 50,
        timeout: float = 30.0,
        max_parallel: int = 2,
    ) -> None:
        if sample_rate not in (8000, 16000):
            raise ValueError("prompts are cached at 8000 or 16000 Hz")
        self.cache_dir = Path(cache_dir)
        self.binary = binary
        self.sample_rate = sample_rate
        self.default_rate = default_rate
        self.default_pitch = default_pitch
        self.timeout = timeout
        self.syntheses = 0
        self._max_parallel = max_parallel
        self._slots: asyncio.Semaphore | None = None
        self._version: str | None = None
        self._pending: dict[str, asyncio.Task[Path]] = {}

    async def engine_version(self) -> str:
        """The engine's version line (part of every cache key: a new engine re-synthesises)."""
        if self._version is None:
            text = (await self._run([self._executable(), "--version"], None))[0].strip()
            self._version = text.split("Data at:")[0].strip() or text
        return self._version

    def cache_path(self, text: str, voice: str, rate: int, pitch: int, engine_version: str) -> Path:
        """Where the prompt for these parameters lives in the cache."""
        key_material = json.dumps(
            [_CACHE_FORMAT, engine_version, voice, rate, pitch, self.sample_rate, text], ensure_ascii=False
        )
        digest = hashlib.sha256(key_material.encode("utf-8")).hexdigest()
        return self.cache_dir / digest[:2] / f"{digest}.wav"

    async def synthesize(
        self,
        text: str,
        language: str = "zh",
        *,
        voice: str | None = None,
        rate: int | None = None,
        pitch: int | None = None,
    ) -> Path:
        """The cached WAV of `text` spoken in `language` (or `voice`), synthesising it on a miss."""
        text = text.strip()
        if not text:
            raise ValueError("there is no text to speak")
        if len(text) > MAX_TEXT_LENGTH:
            raise ValueError(f"prompt text is longer than {MAX_TEXT_LENGTH} characters")
        chosen_voice = voice or voice_for(language)
        words_per_minute = self.default_rate if rate is None else rate
        chosen_pitch = self.default_pitch if pitch is None else pitch
        if not 80 <= words_per_minute <= 450:
            raise ValueError("speech rate must lie between 80 and 450 words per minute")
        if not 0 <= chosen_pitch <= 99:
            raise ValueError("pitch must lie between 0 and 99")
        path = self.cache_path(
            text, chosen_voice, words_per_minute, chosen_pitch, await self.engine_version()
        )
        if await asyncio.to_thread(path.is_file):
            return path
        key = str(path)
        task = self._pending.get(key)
        if task is None or task.get_loop() is not asyncio.get_running_loop():
            task = asyncio.ensure_future(
                self._produce(path, text, chosen_voice, words_per_minute, chosen_pitch)
            )
            self._pending[key] = task
            task.add_done_callback(lambda _: self._pending.pop(key, None))
        # Shielded: one caller giving up (a hang-up) must not cancel the synthesis others wait for.
        return await asyncio.shield(task)

    async def _produce(self, path: Path, text: str, voice: str, rate: int, pitch: int) -> Path:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self._max_parallel)
        async with self._slots:
            await asyncio.to_thread(path.parent.mkdir, parents=True, exist_ok=True)
            descriptor, raw_name = tempfile.mkstemp(prefix=".espeak-", suffix=".wav", dir=path.parent)
            os.close(descriptor)
            raw_path = Path(raw_name)
            try:
                command = [
                    self._executable(),
                    "-v",
                    voice,
                    "-s",
                    str(rate),
                    "-p",
                    str(pitch),
                    "-b",
                    "1",  # the text on stdin is UTF-8
                    "-w",
                    str(raw_path),
                    "--stdin",
                ]
                self.syntheses += 1
                _, engine_message = await self._run(command, text.encode("utf-8"))
                await asyncio.to_thread(self._convert, raw_path, path, engine_message)
            finally:
                with contextlib.suppress(OSError):
                    raw_path.unlink()
        return path

    def _convert(self, raw_path: Path, path: Path, engine_message: str) -> None:
        # espeak-ng exits 0 even when it cannot write its output, so the output itself is the proof.
        try:
            samples = decode_audio_file(raw_path, self.sample_rate)
        except AudioFileError as error:
            detail = engine_message or error.reason
            raise TtsError(f"espeak-ng produced no readable audio: {detail}") from None
        peak = int(np.max(np.abs(samples.astype(np.int32)))) if len(samples) else 0
        if peak < 64:  # nothing above the noise floor: the voice could not speak this text
            raise TtsError("espeak-ng produced no audible speech (is the text in the voice's language?)")
        scaled = np.clip(np.round(samples * (_PEAK_TARGET / peak)), -32768, 32767).astype(np.int16)
        write_wav(path, scaled, self.sample_rate)

    def _executable(self) -> str:
        found = shutil.which(self.binary)
        if found is None:
            raise TtsUnavailableError(
                f"text to speech needs {self.binary!r}, which is not installed "
                "(on Debian: apt-get install espeak-ng)"
            )
        return found

    async def _run(self, command: list[str], stdin: bytes | None) -> tuple[str, str]:
        """Run the engine: (standard output, error output), or raise with its message."""
        try:
            process = await asyncio.create_subprocess_exec(
                *command,
                stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
        except OSError as error:
            raise TtsUnavailableError(f"cannot start {command[0]}: {error}") from None
        try:
            output, errors = await asyncio.wait_for(process.communicate(stdin), self.timeout)
        except TimeoutError:
            process.kill()
            await process.wait()
            raise TtsError(f"{command[0]} did not finish within {self.timeout:g} s") from None
        except asyncio.CancelledError:
            process.kill()
            await process.wait()
            raise
        message = errors.decode("utf-8", "replace").strip()
        if process.returncode != 0:
            raise TtsError(f"{command[0]} failed with status {process.returncode}: {message or 'no message'}")
        return output.decode("utf-8", "replace"), message
