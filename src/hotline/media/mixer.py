"""Conference mixing with mix-minus, and the supervisor modes (SUP-03, SUP-04).

`Conference(sample_rate=8000, gain_levelling=False)`: once per 20 ms tick the session `push`es the frame each
participant sent (a participant who sent nothing this tick is silent), then calls `mix()`, which returns
what each participant hears: everyone they may hear except themselves (mix-minus), summed in int32 and
clipped to int16. Frames must be at the conference's rate (`frame_samples` long); resample G.722 legs with
`hotline.media.codecs.Resampler` first.

- `add(participant_id, mode=ParticipantMode.TALK, *, whisper_to=())`, `set_mode(...)` (takes effect at the
  next `mix()`), `remove(participant_id)`, `push(participant_id, frame)`, `mix() -> dict[id, frame]`;
  `participants` (id -> `Participant`), `audible_to(id) -> set of ids heard by id`.
- Modes (`ParticipantMode`): TALK (a party of the call or conference: hears the others, heard by all),
  LISTEN (silent monitoring 监听 and mute: hears all, heard by nobody; adding a listener changes nothing
  anybody else hears, bit for bit), WHISPER (coaching: hears all, heard only by `whisper_to`, normally the
  agent), BARGE (强插: a supervisor joining as a full party, making the call three-way; mixes like TALK).
- Two TALK parties mix to exactly each other's frames, so moving a bridged call into a conference when a
  supervisor joins is inaudible.
- `gain_levelling=True` levels each talker towards `target_dbfs` (slow gain up to `max_gain_db`, fast
  gain down, nothing done to frames below the noise gate) before mixing; per-participant override in `add`.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

import numpy as np
import numpy.typing as npt

Frame = npt.NDArray[np.int16]
_Wide = npt.NDArray[np.int32]


class ParticipantMode(enum.Enum):
    TALK = "talk"
    LISTEN = "listen"
    WHISPER = "whisper"
    BARGE = "barge"

    @property
    def heard_by_all(self) -> bool:
        return self in (ParticipantMode.TALK, ParticipantMode.BARGE)


class ConferenceError(ValueError):
    """A request the conference cannot honour (unknown participant, wrong frame, bad whisper target)."""


@dataclass
class _Levelling:
    gain: float = 1.0


@dataclass(frozen=True)
class Participant:
    participant_id: str
    mode: ParticipantMode
    whisper_to: frozenset[str] = frozenset()
    gain_levelling: bool = False
    levelling: _Levelling = field(default_factory=_Levelling)


class Conference:
    def __init__(
        self,
        sample_rate: int = 8000,
        *,
        gain_levelling: bool = False,
        target_dbfs: float = -20.0,
        max_gain_db: float = 12.0,
        min_gain_db: float = -12.0,
        noise_gate_dbfs: float = -50.0,
    ) -> None:
        if sample_rate not in (8000, 16000, 48000):
            raise ConferenceError(f"sample rate {sample_rate} is not supported")
        self.sample_rate = sample_rate
        self.frame_samples = sample_rate // 50
        self.gain_levelling = gain_levelling
        self._target_rms = 32767 * 10 ** (target_dbfs / 20)
        self._max_gain = 10 ** (max_gain_db / 20)
        self._min_gain = 10 ** (min_gain_db / 20)
        self._gate_rms = 32767 * 10 ** (noise_gate_dbfs / 20)
        self._participants: dict[str, Participant] = {}
        self._frames: dict[str, Frame] = {}
        self._routing: tuple[list[str], _Wide] | None = None

    @property
    def participants(self) -> Mapping[str, Participant]:
        return self._participants

    def __len__(self) -> int:
        return len(self._participants)

    def __contains__(self, participant_id: object) -> bool:
        return participant_id in self._participants

    def add(
        self,
        participant_id: str,
        mode: ParticipantMode = ParticipantMode.TALK,
        *,
        whisper_to: Iterable[str] = (),
        gain_levelling: bool | None = None,
    ) -> Participant:
        if participant_id in self._participants:
            raise ConferenceError(f"participant {participant_id!r} is already in the conference")
        targets = self._whisper_targets(participant_id, mode, whisper_to)
        levelling = self.gain_levelling if gain_levelling is None else gain_levelling
        participant = Participant(participant_id, mode, targets, levelling)
        self._participants[participant_id] = participant
        self._routing = None
        return participant

    def set_mode(
        self, participant_id: str, mode: ParticipantMode, *, whisper_to: Iterable[str] = ()
    ) -> Participant:
        participant = replace(
            self._get(participant_id),
            mode=mode,
            whisper_to=self._whisper_targets(participant_id, mode, whisper_to),
        )
        self._participants[participant_id] = participant
        self._routing = None
        return participant

    def remove(self, participant_id: str) -> None:
        self._get(participant_id)
        del self._participants[participant_id]
        self._frames.pop(participant_id, None)
        for other in list(self._participants.values()):
            if participant_id in other.whisper_to:
                self._participants[other.participant_id] = replace(
                    other, whisper_to=other.whisper_to - {participant_id}
                )
        self._routing = None

    def push(self, participant_id: str, frame: Frame) -> None:
        """The frame `participant_id` sent in this tick (a second push in one tick replaces the first)."""
        self._get(participant_id)
        if frame.dtype != np.int16 or frame.shape != (self.frame_samples,):
            raise ConferenceError(
                f"frames must be {self.frame_samples} int16 samples at {self.sample_rate} Hz, "
                f"got {frame.dtype} {frame.shape}"
            )
        self._frames[participant_id] = frame

    def audible_to(self, participant_id: str) -> set[str]:
        """Whom `participant_id` hears under the current modes."""
        self._get(participant_id)
        return {
            other.participant_id
            for other in self._participants.values()
            if other.participant_id != participant_id
            and (other.mode.heard_by_all or participant_id in other.whisper_to)
        }

    def mix(self) -> dict[str, Frame]:
        """What each participant hears in this tick; clears the pushed frames for the next tick."""
        frames = self._frames
        self._frames = {}
        order, routing = self._routing_matrix()
        spoken: _Wide = np.zeros((len(order), self.frame_samples), dtype=np.int32)
        for row, participant_id in enumerate(order):
            frame = frames.get(participant_id)
            if frame is not None:
                participant = self._participants[participant_id]
                spoken[row] = self._level(participant, frame) if participant.gain_levelling else frame
        # heard[listener] = sum over speakers of routing[listener, speaker] * spoken[speaker], in int32:
        # int16 sums cannot overflow it below 65536 parties.
        heard = routing @ spoken
        np.clip(heard, -32768, 32767, out=heard)
        narrow = heard.astype(np.int16)
        return {participant_id: narrow[row] for row, participant_id in enumerate(order)}

    def _routing_matrix(self) -> tuple[list[str], _Wide]:
        """Who hears whom as a 0/1 matrix, rebuilt only when membership or modes change."""
        if self._routing is not None:
            return self._routing
        order = list(self._participants)
        index = {participant_id: row for row, participant_id in enumerate(order)}
        routing: _Wide = np.zeros((len(order), len(order)), dtype=np.int32)
        for speaker in self._participants.values():
            column = index[speaker.participant_id]
            if speaker.mode.heard_by_all:
                routing[:, column] = 1
                routing[column, column] = 0  # mix-minus: nobody hears themselves
            elif speaker.mode is ParticipantMode.WHISPER:
                for target in speaker.whisper_to:
                    routing[index[target], column] = 1
        self._routing = (order, routing)
        return self._routing

    def _level(self, participant: Participant, frame: Frame) -> npt.NDArray[np.float32]:
        samples = frame.astype(np.float32)
        rms = float(np.sqrt(np.mean(samples * samples)))
        state = participant.levelling
        if rms > self._gate_rms:  # below the gate it is silence or line noise: leave the gain alone
            desired = min(self._max_gain, max(self._min_gain, self._target_rms / rms))
            # Quick to turn a shout down (about 3 frames), slow to turn a quiet voice up (about 1 s).
            rate = 0.3 if desired < state.gain else 0.02
            state.gain += (desired - state.gain) * rate
        return np.round(samples * state.gain)

    def _get(self, participant_id: str) -> Participant:
        try:
            return self._participants[participant_id]
        except KeyError:
            raise ConferenceError(f"participant {participant_id!r} is not in the conference") from None

    def _whisper_targets(
        self, participant_id: str, mode: ParticipantMode, whisper_to: Iterable[str]
    ) -> frozenset[str]:
        targets = frozenset(whisper_to)
        if mode is not ParticipantMode.WHISPER:
            if targets:
                raise ConferenceError("only a whispering participant has whisper targets")
            return targets
        if not targets:
            raise ConferenceError("whisper needs the participants to whisper to (the agent)")
        if participant_id in targets:
            raise ConferenceError("a participant cannot whisper to themselves")
        unknown = targets - self._participants.keys()
        if unknown:
            raise ConferenceError(f"cannot whisper to {sorted(unknown)}: not in the conference")
        return targets


Mixer = Conference  # the name DESIGN.md's media door uses
