"""Browser agents' audio: one WebRTC peer connection per signed-in agent (aiortc), bridged to SIP legs
(issue #3 item 7; TEL-11, FM-04, FM-16, OPS-10).

`IceServer(urls, username=None, credential=None)` and `IceSettings(servers=(), host_addresses=None,
gather_timeout=10.0)`: STUN/TURN servers for server-reflexive and relayed candidates, and the addresses
offered as host candidates (None: every interface's address but loopback, i.e. the LAN; tests pass
`("127.0.0.1",)`). No server is used unless configured (aiortc would otherwise ask a public STUN server).
`host_addresses(addresses)` is the context manager that applies a host-address choice to any aiortc peer
connection set up inside it (tests use it for their stand-in browser).

`WebRtcChannel(*, ice=IceSettings(), name="", on_state=None, inactivity_timeout=10.0)`: the agent's media
channel, kept up for the whole signed-in session while calls are bridged in and out of it.
- `await accept_offer(offer_sdp) -> answer_sdp`: non-trickle; the browser sends its offer once its ICE
  gathering is complete, our answer carries our candidates. The offer must hold one audio stream; Opus is
  preferred, then PCMU, PCMA. Raises `WebRtcError` for a bad offer or a gathering that takes too long.
  DTLS-SRTP is aiortc's (OPS-10): media to and from the browser is always encrypted.
- Audio in: while `receiving` (a bridge is listening: `start_receiving()` / `stop_receiving()`), aiortc
  decodes (Opus or G.711) and the channel keeps channel 0, resamples it to 8 kHz and buffers 20 ms frames
  for `read_frame() -> frame | None`. Between calls aiortc's receiver drops the browser's packets before
  its jitter buffer and decoder, so an idle agent costs little even if the browser keeps sending.
- Audio out: `send_frame(frame, now)` takes one 20 ms 8 kHz frame, encodes it at once in the negotiated
  codec (Opus from 8 kHz PCM, or G.711) and hands the packet to aiortc's sender. Nothing is sent while
  no call is bridged in (the browser plays its own ring tone).
- `state` (`ChannelState`: new, connecting, connected, failed, closed), reported to `on_state(channel,
  state)` on every change so the switch can end or move a call whose browser vanished (FM-16). A browser
  that closes its tab ends DTLS at once (closed); one that loses its network is caught by ICE consent
  checks (about 30 s) or, during a call, sooner by `check(now)`: no audio for `inactivity_timeout`
  seconds reads as failed (browsers send audio continuously while the microphone track is on, silence
  included).
- `codec`, `frames_received`, `frames_sent`, `last_frame_at`; `await close()` (idempotent).

`ChannelBridge(session, channel, recorder=None, *, recording_started=None)`: a call between a SIP leg's
`MediaSession` (the caller) and a `WebRtcChannel` (the agent). The session decodes what the caller sends
into its receive buffer (as for a conference); on each tick of the engine's shared clock the bridge takes
one frame from each side and sends it to the other: caller audio to the browser, agent audio to the
caller in the SIP leg's codec, silence when a side has nothing. Both go to the `recorder` on one timeline
(caller left, agent right). DTMF from the SIP side is still reported by the session (`on_dtmf`,
`digits`). Holding the SIP leg stops both directions. `replace_channel(channel)` moves the call to the
agent's new channel (a reloaded browser, AGT-13); `unbridge()` ends it, leaving both the session and the
channel open.

Why this design keeps one event loop healthy with 100 agents: no timer or task per channel drives media;
the engine's phased 20 ms tick does both directions of every bridged call. Encoding happens once, on the
tick, at 8 kHz mono (Opus at 32 kbit/s or a G.711 table lookup) and the track hands aiortc a ready
packet, so aiortc's sender neither resamples to 48 kHz stereo nor hops to a thread pool per frame.
Idle channels (no call) send nothing and do not decode what they receive. What remains per channel is
aiortc's own: SRTP, its decoder thread, its sender and RTCP tasks, and ICE consent checks every 5 s.

Measured with aiortc 1.16 on a 2 vCPU machine that was busy with other work (load average about 10), an
aiortc peer in another process, Opus: a signed-in idle agent costs about 8 ms of CPU per second (SRTP and
RTP parsing of what the browser sends, before dropping it), a bridged call about 40 ms (33 ms with PCMU),
nearly all of it aiortc's per-packet Python (SRTP, RTP, jitter buffer, its decoder thread posting each
frame to the loop). Our share on the tick is about 0.3 ms per frame for Opus (encode at 8 kHz, resample
48 to 8 kHz), 0.01 ms for PCMU. So one process carries a few dozen concurrent browser calls per core, not
100: more needs media worker processes or a media relay (rtpengine) behind the same call-control API.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import enum
import fractions
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import aioice.ice
import av
import numpy as np
from aiortc import (
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpReceiver,
    RTCRtpTransceiver,
    RTCSessionDescription,
)
from aiortc import sdp as aiortc_sdp
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtcrtpparameters import RTCRtpCodecCapability
from av.audio.frame import AudioFrame
from av.frame import Frame as AvFrame
from av.packet import Packet
from av.stream import Stream

from hotline.log import get_logger
from hotline.media.codecs import CodecError, Encoder, Resampler, make_encoder
from hotline.media.recorder import Channel, Recorder, RecordingError
from hotline.media.session import Frame, MediaError, MediaSession, SampleFifo, SessionMode

__all__ = [
    "ChannelBridge",
    "ChannelState",
    "IceServer",
    "IceSettings",
    "WebRtcChannel",
    "WebRtcError",
    "host_addresses",
]

log = get_logger(__name__)

RATE = 8000
FRAME_SAMPLES = RATE // 50
_SILENCE: Frame = np.zeros(FRAME_SAMPLES, dtype=np.int16)
_SILENCE.flags.writeable = False
_MAX_QUEUED_PACKETS = 5  # 100 ms: beyond that aiortc's sender is behind and the oldest audio goes
_OFFER_LIMIT = 64 * 1024
# what we answer with, in our order of preference (the browser's order decides among equals)
_PREFERRED_CODECS = (
    RTCRtpCodecCapability(mimeType="audio/opus", clockRate=48000, channels=2),
    RTCRtpCodecCapability(mimeType="audio/PCMU", clockRate=8000, channels=1),
    RTCRtpCodecCapability(mimeType="audio/PCMA", clockRate=8000, channels=1),
)
_RTP_CLOCKS = {"opus": 48000, "PCMU": 8000, "PCMA": 8000}


class WebRtcError(MediaError):
    """A WebRTC operation that cannot be done (bad offer, no candidates in time); the message says why."""


# --- ICE settings -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IceServer:
    """One STUN or TURN server: `urls` like "stun:host:3478", "turn:host:3478?transport=udp",
    "turns:host:5349"; TURN needs `username` and `credential`."""

    urls: tuple[str, ...]
    username: str | None = None
    credential: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.urls, str):
            object.__setattr__(self, "urls", (self.urls,))
        if not self.urls:
            raise WebRtcError("an ICE server needs at least one URL")
        for url in self.urls:
            scheme = url.split(":", 1)[0].lower()
            if scheme not in ("stun", "stuns", "turn", "turns") or ":" not in url:
                raise WebRtcError(f"ICE server URL {url!r} must start with stun:, stuns:, turn: or turns:")
            if scheme.startswith("turn") and (not self.username or not self.credential):
                raise WebRtcError(f"TURN server {url!r} needs a username and a credential")


@dataclass(frozen=True)
class IceSettings:
    servers: tuple[IceServer, ...] = ()
    host_addresses: tuple[str, ...] | None = None  # None: every interface's address but loopback
    gather_timeout: float = 10.0

    def configuration(self) -> RTCConfiguration:
        # an explicit (possibly empty) list: aiortc falls back to a public STUN server on None
        return RTCConfiguration(
            iceServers=[
                RTCIceServer(urls=list(server.urls), username=server.username, credential=server.credential)
                for server in self.servers
            ]
        )


_HOST_ADDRESSES: contextvars.ContextVar[tuple[str, ...] | None] = contextvars.ContextVar(
    "hotline_ice_host_addresses", default=None
)
_original_host_addresses = aioice.ice.get_host_addresses


def _chosen_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    chosen = _HOST_ADDRESSES.get()
    if chosen is None:
        return _original_host_addresses(use_ipv4, use_ipv6)
    return [
        address for address in chosen if (":" in address and use_ipv6) or (":" not in address and use_ipv4)
    ]


# aioice asks this module-level function for host addresses while gathering; the choice is per context, so
# every peer connection gathers with the settings of the code that set it up.
aioice.ice.get_host_addresses = _chosen_host_addresses


@contextlib.contextmanager
def host_addresses(addresses: Sequence[str] | None) -> Iterator[None]:
    """Peer connections gathering inside this block offer `addresses` as host candidates (None: the
    default, every interface's address but loopback)."""
    token = _HOST_ADDRESSES.set(None if addresses is None else tuple(addresses))
    try:
        yield
    finally:
        _HOST_ADDRESSES.reset(token)


# --- the channel --------------------------------------------------------------------------------------------


class ChannelState(enum.StrEnum):
    NEW = "new"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    FAILED = "failed"
    CLOSED = "closed"

    @property
    def alive(self) -> bool:
        return self in (ChannelState.NEW, ChannelState.CONNECTING, ChannelState.CONNECTED)


class _OutgoingTrack(MediaStreamTrack):
    """Our audio to the browser: packets encoded on the media tick, handed to aiortc's sender as they come."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._packets: deque[Packet[Stream]] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self.dropped = 0

    def push(self, packet: Packet[Stream]) -> None:
        if len(self._packets) >= _MAX_QUEUED_PACKETS:
            self._packets.popleft()
            self.dropped += 1
        self._packets.append(packet)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def recv(self) -> AvFrame | Packet[Stream]:
        while not self._packets:
            if self.readyState != "live":
                raise MediaStreamError
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._packets.popleft()

    def stop(self) -> None:
        super().stop()
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class WebRtcChannel:
    """An agent's browser media channel (one RTCPeerConnection); see the module docstring."""

    def __init__(
        self,
        *,
        ice: IceSettings | None = None,
        name: str = "",
        on_state: Callable[[WebRtcChannel, ChannelState], None] | None = None,
        inactivity_timeout: float | None = 10.0,
    ) -> None:
        self.ice = ice or IceSettings()
        self.name = name or f"webrtc-{id(self):x}"
        self.on_state = on_state
        self.inactivity_timeout = inactivity_timeout
        self.state = ChannelState.NEW
        self.codec: str | None = None  # what we send: "opus", "PCMU" or "PCMA"
        self.frames_received = 0
        self.frames_sent = 0
        self.last_frame_at: float | None = None  # time.monotonic() of the newest frame from the browser
        self._pc: RTCPeerConnection | None = None
        self._track = _OutgoingTrack()
        self._reader: asyncio.Task[None] | None = None
        self._closing: asyncio.Task[None] | None = None
        self._fifo: SampleFifo | None = None
        self._resamplers: dict[int, Resampler] = {}
        self._encoder: Encoder | None = None
        self._clock = RATE
        self._time_base = fractions.Fraction(1, RATE)
        self._pts = 0
        self._sent_at: float | None = None
        self._receiving_since: float | None = None
        self._receiver: RTCRtpReceiver | None = None

    def __repr__(self) -> str:
        return f"<WebRtcChannel {self.name} {self.state.value} {self.codec or '-'}>"

    # -- negotiation --

    async def accept_offer(self, offer_sdp: str) -> str:
        """Answer the browser's (complete, non-trickle) offer; our answer carries our candidates."""
        if self._pc is not None or not self.state.alive:
            raise WebRtcError(f"channel {self.name} already negotiated: make a new channel for a new offer")
        _check_offer(offer_sdp)
        pc = RTCPeerConnection(self.ice.configuration())
        self._pc = pc
        pc.on("connectionstatechange", self._on_connection_state)
        pc.on("track", self._on_track)
        transceiver: RTCRtpTransceiver = pc.addTransceiver(self._track, direction="sendrecv")
        transceiver.setCodecPreferences(list(_PREFERRED_CODECS))
        self._receiver = transceiver.receiver
        self._set_state(ChannelState.CONNECTING)
        try:
            with host_addresses(self.ice.host_addresses):
                async with asyncio.timeout(self.ice.gather_timeout):
                    await pc.setRemoteDescription(RTCSessionDescription(offer_sdp, "offer"))
                    await pc.setLocalDescription(await pc.createAnswer())
        except TimeoutError:
            await self.close()
            raise WebRtcError(f"no ICE candidates within {self.ice.gather_timeout:g} s") from None
        except Exception as error:  # aiortc raises ValueError, InvalidAccessError, OperationError...
            await self.close()
            raise WebRtcError(f"cannot answer the offer: {error or type(error).__name__}") from None
        self._set_receiver_enabled(self._fifo is not None)  # negotiation enabled it
        local = pc.localDescription
        if "a=candidate:" not in local.sdp:
            # An answer without candidates "succeeds" and then never connects: say why now instead.
            await self.close()
            raise WebRtcError(
                "no address to offer the browser: the host has no LAN address besides loopback; "
                "set HOTLINE_ICE_HOST_ADDRESSES or HOTLINE_ICE_SERVERS"
            )
        self.codec = _sending_codec(local.sdp)
        self._clock = _RTP_CLOCKS[self.codec]
        self._time_base = fractions.Fraction(1, self._clock)
        self._encoder = make_encoder(self.codec, RATE if self.codec == "opus" else None)
        return local.sdp

    def _on_connection_state(self) -> None:
        pc = self._pc
        if pc is None or not self.state.alive:
            return
        value = pc.connectionState
        if value == "connected":
            self._set_state(ChannelState.CONNECTED)
        elif value == "failed":
            self._fail("ICE or DTLS failed")
        elif value == "closed":
            self._fail("the browser closed the connection", ChannelState.CLOSED)

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "audio" and self._reader is None:
            self._reader = asyncio.ensure_future(self._read(track))

    async def _read(self, track: MediaStreamTrack) -> None:
        with contextlib.suppress(MediaStreamError, asyncio.CancelledError):
            while True:
                frame = await track.recv()
                if not isinstance(frame, AudioFrame):
                    continue
                self.frames_received += 1
                self.last_frame_at = time.monotonic()
                fifo = self._fifo
                if fifo is not None:
                    pcm = self._to_8k(frame)
                    if pcm is not None:
                        fifo.push(pcm)

    def _to_8k(self, frame: AudioFrame) -> Frame | None:
        try:
            samples = frame.to_ndarray()
        except (ValueError, av.FFmpegError):
            return None
        if frame.format.is_planar or samples.shape[0] > 1:
            first = samples[0]
        else:
            first = samples.reshape(-1, max(1, frame.layout.nb_channels))[:, 0]
        if first.dtype != np.int16:
            first = np.clip(np.rint(first * 32768.0), -32768, 32767).astype(np.int16)
        rate = frame.sample_rate
        if rate == RATE:
            return np.ascontiguousarray(first)
        resampler = self._resamplers.get(rate)
        if resampler is None:
            resampler = self._resamplers[rate] = Resampler(rate, RATE)
        return resampler.process(first)

    # -- audio --

    @property
    def receiving(self) -> bool:
        return self._fifo is not None

    def start_receiving(self) -> None:
        """Buffer the agent's audio for `read_frame` (a bridge is listening)."""
        if self._fifo is None:
            self._fifo = SampleFifo(FRAME_SAMPLES)
            self._receiving_since = time.monotonic()
            self._set_receiver_enabled(True)

    def stop_receiving(self) -> None:
        self._fifo = None
        self._receiving_since = None
        self._set_receiver_enabled(False)
        for resampler in self._resamplers.values():
            resampler.reset()

    def _set_receiver_enabled(self, enabled: bool) -> None:
        # An idle agent's browser may keep sending its microphone; decoding it would cost about as much as
        # a call (aiortc decodes in a thread and posts every frame to the loop). aiortc's receiver drops
        # packets before its jitter buffer and decoder while disabled (the flag its transceiver sets for
        # a send-only direction); the attribute is checked so that a changed aiortc only costs CPU.
        receiver = self._receiver
        if receiver is not None and isinstance(getattr(receiver, "_enabled", None), bool):
            receiver._enabled = enabled

    def read_frame(self) -> Frame | None:
        """The next 20 ms (8 kHz) of the agent's audio, or None when not enough is buffered."""
        fifo = self._fifo
        return None if fifo is None else fifo.pull()

    def send_frame(self, frame: Frame, now: float) -> None:
        """Send one 20 ms 8 kHz frame to the browser (encoded now); ignored until connected."""
        encoder = self._encoder
        if encoder is None or self.state is not ChannelState.CONNECTED:
            return
        try:
            payload = encoder.encode(frame)
        except CodecError:
            log.exception("cannot encode a frame for the browser", channel=self.name, codec=self.codec)
            return
        step = self._clock // 50
        if self._sent_at is None:
            self._pts = 0
        else:
            # after a pause (no call bridged) the timestamp follows the clock, so the browser's jitter
            # buffer sees the gap for what it was
            elapsed = round((now - self._sent_at) * 50)
            self._pts += step * (elapsed if elapsed > 2 else 1)
        self._sent_at = now
        packet = Packet(payload)
        packet.pts = self._pts
        packet.time_base = self._time_base
        self._track.push(packet)
        self.frames_sent += 1

    @property
    def packets_dropped(self) -> int:
        """Packets the sender was too slow to take (should stay 0)."""
        return self._track.dropped

    # -- health --

    def check(self, now: float) -> None:
        """Declare the channel failed when, during a call (`receiving`), the browser sent no audio for
        `inactivity_timeout` seconds (`now` is time.monotonic()). Between calls a browser may rightly send
        nothing; ICE consent checks and DTLS find it gone then. The owner calls this about once a second."""
        since = self._receiving_since
        if self.state is not ChannelState.CONNECTED or self.inactivity_timeout is None or since is None:
            return
        last = max(self.last_frame_at or 0.0, since)
        if now - last >= self.inactivity_timeout:
            self._fail(f"no audio from the browser for {now - last:.0f} s")

    def _fail(self, reason: str, state: ChannelState = ChannelState.FAILED) -> None:
        if not self.state.alive:
            return
        log.info("webrtc.channel_down", channel=self.name, state=state.value, reason=reason)
        self._set_state(state)
        if self._closing is None:
            self._closing = asyncio.ensure_future(self._shutdown())

    def _set_state(self, state: ChannelState) -> None:
        if state is self.state:
            return
        self.state = state
        if self.on_state is not None:
            try:
                self.on_state(self, state)
            except Exception:
                log.exception("on_state callback failed", channel=self.name)

    async def _shutdown(self) -> None:
        self._fifo = None
        self._track.stop()
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        pc = self._pc
        if pc is not None:
            with contextlib.suppress(Exception):
                await pc.close()

    async def close(self) -> None:
        """Close the peer connection (the browser sees it end). Safe to call twice."""
        if self.state.alive:
            self._set_state(ChannelState.CLOSED)
        if self._closing is None:
            self._closing = asyncio.ensure_future(self._shutdown())
        await asyncio.shield(self._closing)


def _check_offer(offer_sdp: str) -> None:
    if not isinstance(offer_sdp, str) or not offer_sdp.strip():
        raise WebRtcError("the offer is empty")
    if len(offer_sdp) > _OFFER_LIMIT:
        raise WebRtcError(f"the offer is longer than {_OFFER_LIMIT} characters")
    if not offer_sdp.lstrip().startswith("v=0"):
        raise WebRtcError("the offer is not valid SDP: it must start with v=0")
    try:
        description = aiortc_sdp.SessionDescription.parse(offer_sdp)
    except Exception as error:
        raise WebRtcError(f"the offer is not valid SDP: {error or type(error).__name__}") from None
    kinds = [media.kind for media in description.media]
    if kinds != ["audio"]:
        raise WebRtcError(f"the offer must carry exactly one audio stream, not {kinds or 'none'}")
    media = description.media[0]
    if media.ice is None or not media.ice.usernameFragment or not media.ice.password or media.dtls is None:
        raise WebRtcError("the offer lacks ICE credentials or a DTLS fingerprint")
    if not media.ice_candidates:
        raise WebRtcError("the offer has no ICE candidates: send it after gathering is complete")


def _sending_codec(answer_sdp: str) -> str:
    description = aiortc_sdp.SessionDescription.parse(answer_sdp)
    codecs = description.media[0].rtp.codecs
    for codec in codecs:
        name = codec.mimeType.split("/", 1)[1]
        for known in _RTP_CLOCKS:
            if name.lower() == known.lower():
                return known
    raise WebRtcError("no common audio codec with the browser (Opus, PCMU or PCMA)")


# --- bridging a SIP leg with a browser channel -------------------------------------------------------------


class ChannelBridge:
    """A two-party call between a SIP leg (`session`, the caller) and a browser channel (the agent)."""

    def __init__(
        self,
        session: MediaSession,
        channel: WebRtcChannel,
        recorder: Recorder | None = None,
        *,
        recording_started: float | None = None,
    ) -> None:
        if session.closed:
            raise MediaError(f"media session {session.id} is closed")
        if session.codecs is None:
            raise MediaError(f"media session {session.id} has no negotiated parameters yet")
        if session.bridge is not None or session.conference is not None:
            raise MediaError(f"media session {session.id} is already {session.mode.value}")
        if not channel.state.alive:
            raise MediaError(f"channel {channel.name} is {channel.state.value}")
        self.session = session
        self.channel = channel
        self.engine = session.engine
        self.recorder = recorder
        self.recording_started = time.monotonic() if recording_started is None else recording_started
        self.active = True
        self.to_browser = 0  # frames of the caller's audio sent to the browser
        self.to_caller = 0  # frames of the agent's audio sent to the caller
        self._anchor: float | None = None  # recording position of tick 0 of the current run
        self._ticks = 0
        session.stop_playing()
        session.bridge = self  # type: ignore[assignment]  # closing or holding the session reaches us
        session.mode = SessionMode.BRIDGED
        session._audio_in = SampleFifo(FRAME_SAMPLES)
        channel.start_receiving()
        self.engine.add_ticker(self)

    # The hooks a `MediaSession` calls on its bridge (held, resumed, re-negotiated, the peer's address
    # latched): each tick reads the session's state anyway.
    def _legs_changed(self) -> None:
        pass

    def _addresses_changed(self) -> None:
        pass

    def _position(self, now: float) -> float:
        """Where this tick's frames go on the recording: whole frames from an anchor, so the recording has no
        jitter of its own, re-anchored when the clock skipped (a stalled loop)."""
        wall = max(0.0, now - self.recording_started)
        if self._anchor is not None:
            at = self._anchor + self._ticks * 0.02
            if abs(at - wall) < 0.06:
                self._ticks += 1
                return at
        self._anchor = wall
        self._ticks = 1
        return wall

    def on_media_tick(self, now: float) -> None:
        session, channel = self.session, self.channel
        fifo = session._audio_in
        caller = fifo.pull() if fifo is not None else None
        agent = channel.read_frame()
        held = session.on_hold
        if held:
            caller = agent = None  # hold stops both directions; the session plays hold music itself
        channel.send_frame(_SILENCE if caller is None else caller, now)
        if caller is not None:
            self.to_browser += 1
        if not held and session._relay_addr is not None:  # not while the session sends DTMF
            session.send_audio(_SILENCE if agent is None else agent, now)
            if agent is not None:
                self.to_caller += 1
        recorder = self.recorder
        if recorder is not None:
            at = self._position(now)
            try:
                if caller is not None:
                    recorder.write(Channel.CALLER, caller, at)
                if agent is not None:
                    recorder.write(Channel.AGENT, agent, at)
                recorder.advance(at + 0.02)
            except RecordingError as error:
                log.error("recording failed; the call goes on unrecorded", error=str(error), a=session.id)
                self.recorder = None

    def replace_channel(self, channel: WebRtcChannel) -> None:
        """Continue the call on another channel of the same agent (the browser reloaded)."""
        if not self.active:
            raise MediaError("the bridge has ended")
        if channel is self.channel:
            return
        self.channel.stop_receiving()
        self.channel = channel
        channel.start_receiving()

    def unbridge(self) -> None:
        """End the call's media: the session returns to idle, the channel stays up for the next call."""
        if not self.active:
            return
        self.active = False
        self.engine.remove_ticker(self)
        self.channel.stop_receiving()
        session = self.session
        if session.bridge is self:  # type: ignore[comparison-overlap]
            session.bridge = None
            session._audio_in = None
            if session.mode is SessionMode.BRIDGED:
                session.mode = SessionMode.IDLE
        recorder = self.recorder
        if recorder is not None:
            with contextlib.suppress(RecordingError):
                recorder.advance(max(0.0, time.monotonic() - self.recording_started))

    close = unbridge

    def __repr__(self) -> str:
        return (
            f"<ChannelBridge {self.session.id} <-> {self.channel.name}{' recorded' if self.recorder else ''}>"
        )
