"""Turning rendered prompts (speech, files, tones, silence) into an audio source a leg can play.

Speech is synthesised once per text and voice (the TTS cache is content-addressed); files come from the
tenant's prompt library, so a prompt can be replaced without republishing a flow (IVR-03).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from hotline.media import player as audio
from hotline.media.tts import SpeechSynthesizer
from hotline.switch.control import AudioFile, Prompt, Silence, Speech, Tone


class PromptError(Exception):
    """A prompt that cannot be played (a missing file, a TTS failure)."""


class PromptRenderer:
    def __init__(self, tts: SpeechSynthesizer, library: Path) -> None:
        self.tts = tts
        self.library = library  # <data>/tenants/<tenant>/prompts/<ref>

    async def render(self, tenant: str, prompts: Sequence[Prompt], sample_rate: int) -> audio.AudioSource:
        sources: list[audio.AudioSource] = []
        for prompt in prompts:
            sources.append(await self._source(tenant, prompt, sample_rate))
        return audio.Playlist(sources) if len(sources) != 1 else sources[0]

    async def _source(self, tenant: str, prompt: Prompt, sample_rate: int) -> audio.AudioSource:
        if isinstance(prompt, Speech):
            path = await self.tts.synthesize(prompt.text, prompt.language)
            return await audio.FileSource.open(path, sample_rate)
        if isinstance(prompt, AudioFile):
            path = self._library_file(tenant, prompt.ref, prompt.language)
            try:
                return await audio.FileSource.open(path, sample_rate)
            except audio.AudioFileError as error:
                raise PromptError(f"prompt {prompt.ref!r}: {error}") from error
        if isinstance(prompt, Tone):
            spec = audio.Tone("prompt", tuple(prompt.frequencies))
            return audio.ToneSource(spec, sample_rate, duration=prompt.duration_ms / 1000)
        if isinstance(prompt, Silence):
            return audio.SilenceSource(prompt.duration_ms / 1000, sample_rate)
        raise PromptError(f"unknown prompt {prompt!r}")

    def _library_file(self, tenant: str, ref: str, language: str | None) -> Path:
        base = (self.library / tenant / "prompts").resolve()
        candidates = [base / language / ref] if language else []
        candidates.append(base / ref)
        for path in candidates:
            resolved = path.resolve()
            if base in resolved.parents and resolved.is_file():
                return resolved
        raise PromptError(f"prompt file {ref!r} is not in the prompt library")
