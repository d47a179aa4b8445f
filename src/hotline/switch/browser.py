"""Browser agents' phones: one WebRTC media channel per signed-in agent, calls bridged in and out of it
(issue #6, issue #3 item 7; TEL-11, AGT-13, FM-04, FM-16).

`BrowserPhones(switch, *, ice=None, reconnect_grace=10.0, inactivity_timeout=10.0, sweep_interval=1.0,
notify=None)`, built by the switch as `switch.browsers`:
- `await attach(tenant, agent_id, offer_sdp) -> answer_sdp`: the CTI `webrtc.offer`. A newer channel of the
  same agent replaces the older one (which is closed); a call in progress moves to the new channel, so a
  reloaded browser keeps its call (AGT-13). Raises `WebRtcError` for an offer that cannot be answered.
- `await detach(tenant, agent_id)`: the agent signed out: the channel is closed, an offer is withdrawn and
  a call in progress ends.
- `connected(tenant, agent_id) -> bool`: a channel is up (ICE and DTLS connected).
- `await ring(call, tenant, agent_id, timeout) -> Leg | None`: offer `call` to the agent (the ACD). It
  resolves with an answered `Leg` (no SIP dialog, `media` = the agent's channel, `browser` = its
  `BrowserLeg`) once `answer(...)` is called, ready for `switch.connect(call, leg)`; None after
  `reject(...)`, `timeout` seconds, the caller hanging up, or the channel dropping. Cancelling it
  withdraws the offer. One offer or call per agent at a time: otherwise None at once.
- `answer(tenant, agent_id, call_id) -> bool`, `reject(tenant, agent_id, call_id) -> bool`: the agent's
  click (CTI `call.answer` / `call.reject`); False when no such call is ringing there.
- `await hangup(tenant, agent_id, call_id) -> bool`: the agent hangs up (CTI `call.hangup`): the call ends,
  the caller gets a BYE. A ringing call is rejected instead.
- When a call ends for any reason the browser leg is unbridged and `notify(BrowserNotice)` tells the CTI
  layer; the channel stays up for the next call.
- The channel dropping during a call (browser gone: FM-16) is given `reconnect_grace` seconds for the
  agent to attach again (a reload); after that the agent's leg ends with cause `agent_connection_lost`
  and the call is released. One sweep task checks every channel's inbound audio each `sweep_interval`.
- Events: `leg.created` (kind agent, endpoint `browser:<agent id>`), `leg.answered`, `leg.ended`.
- `await close()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from hotline.log import get_logger
from hotline.media.webrtc import (
    ChannelBridge,
    ChannelState,
    IceServer,
    IceSettings,
    WebRtcChannel,
)
from hotline.switch.call import Call, Leg

if TYPE_CHECKING:
    from hotline.config import Settings
    from hotline.switch.service import Switch

__all__ = ["BrowserLeg", "BrowserNotice", "BrowserPhones", "ice_settings"]

log = get_logger("hotline.switch.browser")

AGENT_HANGUP = "agent hangup"
CONNECTION_LOST = "agent_connection_lost"
SIGNED_OUT = "agent_signed_out"

NoticeKind = Literal["offer_withdrawn", "call_ended"]
Outcome = Literal["answered", "rejected", "channel_lost"]


@dataclass(frozen=True)
class BrowserNotice:
    """Something the agent's browser must be told (pushed by the CTI gateway)."""

    tenant: str
    agent_id: str
    kind: NoticeKind
    call_id: str
    cause: str


def ice_settings(settings: Settings) -> IceSettings:
    """The media layer's ICE settings from HOTLINE_ICE_SERVERS and HOTLINE_ICE_HOST_ADDRESSES."""
    servers = tuple(IceServer(tuple(s.urls), s.username, s.credential) for s in settings.ice_servers)
    return IceSettings(servers, tuple(settings.ice_host_addresses) or None)


@dataclass(eq=False)
class _Offer:
    call: Call
    leg: Leg
    outcome: asyncio.Future[Outcome]


@dataclass(eq=False)
class _Phone:
    tenant: str
    agent_id: str
    channel: WebRtcChannel | None = None
    offer: _Offer | None = None
    leg: Leg | None = None
    lost_timer: asyncio.TimerHandle | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class BrowserLeg:
    """The signalling side of an agent's browser leg (what an `InviteSession` is for a SIP leg)."""

    def __init__(self, phones: BrowserPhones, phone: _Phone) -> None:
        self.phones = phones
        self.phone = phone
        self.ended = asyncio.Event()
        self.end_reason = ""

    @property
    def agent_id(self) -> str:
        return self.phone.agent_id

    async def release(self, cause: str) -> None:
        """Unbridge and tell the browser; the channel stays up. Safe to call twice."""
        await self.phones._release(self, cause)


class BrowserPhones:
    def __init__(
        self,
        switch: Switch,
        *,
        ice: IceSettings | None = None,
        reconnect_grace: float = 10.0,
        inactivity_timeout: float | None = 10.0,
        sweep_interval: float = 1.0,
        notify: Callable[[BrowserNotice], None] | None = None,
    ) -> None:
        self.switch = switch
        self.ice = ice if ice is not None else ice_settings(switch.settings)
        self.reconnect_grace = reconnect_grace
        self.inactivity_timeout = inactivity_timeout
        self.sweep_interval = sweep_interval
        self.notify = notify
        self._phones: dict[tuple[str, str], _Phone] = {}
        self._sweeper: asyncio.Task[None] | None = None
        self._closed = False

    # -- the agent's channel --

    async def attach(self, tenant: str, agent_id: str, offer_sdp: str) -> str:
        if self._closed:
            raise RuntimeError("browser phones are closed")
        phone = self._phones.get((tenant, agent_id))
        if phone is None:
            phone = self._phones[(tenant, agent_id)] = _Phone(tenant, agent_id)
        async with phone.lock:
            channel = WebRtcChannel(
                ice=self.ice,
                name=f"{tenant}/{agent_id}",
                on_state=lambda changed, state: self._on_channel_state(phone, changed, state),
                inactivity_timeout=self.inactivity_timeout,
            )
            try:
                answer = await channel.accept_offer(offer_sdp)
            except BaseException:
                if phone.channel is None and phone.leg is None and phone.offer is None:
                    self._phones.pop((tenant, agent_id), None)  # nothing to keep for a failed first offer
                raise
            old, phone.channel = phone.channel, channel
            if phone.lost_timer is not None:
                phone.lost_timer.cancel()
                phone.lost_timer = None
            leg = phone.leg
            if leg is not None:
                leg.media = channel
                bridge = leg.call.bridge
                if isinstance(bridge, ChannelBridge) and bridge.active:
                    bridge.replace_channel(channel)
                log.info("browser.call_moved", tenant=tenant, agent_id=agent_id, call_id=leg.call.id)
            if self._phones.get((tenant, agent_id)) is not phone:  # detached meanwhile
                self._phones[(tenant, agent_id)] = phone
        if old is not None:
            await old.close()
        self._ensure_sweeping()
        return answer

    async def detach(self, tenant: str, agent_id: str) -> None:
        phone = self._phones.pop((tenant, agent_id), None)
        if phone is None:
            return
        async with phone.lock:
            channel, phone.channel = phone.channel, None
            self._channel_gone(phone, SIGNED_OUT, grace=False)
        if channel is not None:
            await channel.close()

    def connected(self, tenant: str, agent_id: str) -> bool:
        phone = self._phones.get((tenant, agent_id))
        return (
            phone is not None and phone.channel is not None and phone.channel.state is ChannelState.CONNECTED
        )

    def channel(self, tenant: str, agent_id: str) -> WebRtcChannel | None:
        phone = self._phones.get((tenant, agent_id))
        return None if phone is None else phone.channel

    def _on_channel_state(self, phone: _Phone, channel: WebRtcChannel, state: ChannelState) -> None:
        if channel is not phone.channel or state.alive:
            return  # a replaced channel closing, or good news
        self._channel_gone(phone, CONNECTION_LOST, grace=True)

    def _channel_gone(self, phone: _Phone, cause: str, *, grace: bool) -> None:
        offer = phone.offer
        if offer is not None and not offer.outcome.done():
            offer.outcome.set_result("channel_lost")
        leg = phone.leg
        if leg is None:
            return
        if grace and self.reconnect_grace > 0:
            if phone.lost_timer is None:
                log.info(
                    "browser.channel_lost", tenant=phone.tenant, agent_id=phone.agent_id, call_id=leg.call.id
                )
                loop = asyncio.get_running_loop()
                phone.lost_timer = loop.call_later(self.reconnect_grace, self._grace_over, phone, leg, cause)
            return
        self._end_leg(leg, cause)

    def _grace_over(self, phone: _Phone, leg: Leg, cause: str) -> None:
        phone.lost_timer = None
        channel = phone.channel
        if phone.leg is leg and (channel is None or not channel.state.alive):
            self._end_leg(leg, cause)

    def _end_leg(self, leg: Leg, cause: str) -> None:
        browser = leg.browser
        if browser is None or browser.ended.is_set():
            return
        browser.end_reason = browser.end_reason or cause
        self.switch._leg_gone(leg)

    # -- offering calls --

    async def ring(self, call: Call, tenant: str, agent_id: str, timeout: float) -> Leg | None:
        phone = self._phones.get((tenant, agent_id))
        if (
            phone is None
            or phone.channel is None
            or not phone.channel.state.alive
            or phone.offer is not None
            or phone.leg is not None
            or call.hung_up
            or call.tenant != tenant
        ):
            return None
        leg = Leg(call, "agent", None, phone.channel, browser=BrowserLeg(self, phone))
        offer = _Offer(call, leg, asyncio.get_running_loop().create_future())
        phone.offer = offer
        try:
            await self.switch.emit(
                call,
                "leg.created",
                leg_id=leg.id,
                kind="agent",
                direction="outbound",
                endpoint=f"browser:{agent_id}",
                agent_id=agent_id,
            )
            hangup: asyncio.Future[None] = asyncio.ensure_future(call.wait_hung_up())
            waiting: set[asyncio.Future[Any]] = {offer.outcome, hangup}
            try:
                await asyncio.wait(waiting, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            finally:
                hangup.cancel()
        except asyncio.CancelledError:  # withdrawn by the ACD (another agent answered a ring-all)
            self._offer_over(phone, offer, "cancelled")
            raise
        outcome = offer.outcome.result() if offer.outcome.done() else None
        channel = phone.channel
        if outcome == "answered" and not call.hung_up and channel is not None and channel.state.alive:
            phone.offer = None
            leg.media = channel
            leg.answered_at = time.monotonic()
            call.legs.append(leg)
            phone.leg = leg
            await self.switch.emit(call, "leg.answered", leg_id=leg.id)
            log.info("browser.answered", tenant=tenant, agent_id=agent_id, call_id=call.id)
            return leg
        if call.hung_up:
            cause = "cancelled"
        elif outcome == "rejected":
            cause = "rejected"
        elif outcome == "channel_lost" or outcome == "answered":
            cause = CONNECTION_LOST
        else:
            cause = "no_answer"
        self._offer_over(phone, offer, cause)
        return None

    def _offer_over(self, phone: _Phone, offer: _Offer, cause: str) -> None:
        if phone.offer is offer:
            phone.offer = None
        if not offer.outcome.done():
            offer.outcome.cancel()
        self._notify(phone, "offer_withdrawn", offer.call.id, cause)
        self.switch._spawn(
            self.switch.emit(offer.call, "leg.ended", leg_id=offer.leg.id, cause=cause[:64], sip_status=None)
        )

    def answer(self, tenant: str, agent_id: str, call_id: str) -> bool:
        return self._decide(tenant, agent_id, call_id, "answered")

    def reject(self, tenant: str, agent_id: str, call_id: str) -> bool:
        return self._decide(tenant, agent_id, call_id, "rejected")

    def _decide(self, tenant: str, agent_id: str, call_id: str, outcome: Outcome) -> bool:
        phone = self._phones.get((tenant, agent_id))
        offer = None if phone is None else phone.offer
        if offer is None or offer.call.id != call_id or offer.outcome.done():
            return False
        offer.outcome.set_result(outcome)
        return True

    # -- calls in progress --

    async def hangup(self, tenant: str, agent_id: str, call_id: str) -> bool:
        phone = self._phones.get((tenant, agent_id))
        if phone is None:
            return False
        if phone.offer is not None and phone.offer.call.id == call_id:
            return self.reject(tenant, agent_id, call_id)
        leg = phone.leg
        if leg is None or leg.call.id != call_id or leg.browser is None:
            return False
        leg.browser.end_reason = leg.browser.end_reason or AGENT_HANGUP
        await leg.call.hangup(AGENT_HANGUP)
        return True

    async def _release(self, browser: BrowserLeg, cause: str) -> None:
        if browser.ended.is_set():
            return
        browser.end_reason = browser.end_reason or cause
        browser.ended.set()
        phone = browser.phone
        leg = phone.leg
        if leg is None or leg.browser is not browser:
            return
        phone.leg = None
        if phone.lost_timer is not None:
            phone.lost_timer.cancel()
            phone.lost_timer = None
        bridge = leg.call.bridge
        if isinstance(bridge, ChannelBridge):
            bridge.unbridge()
        self._notify(phone, "call_ended", leg.call.id, browser.end_reason)
        await self.switch.emit(
            leg.call, "leg.ended", leg_id=leg.id, cause=browser.end_reason[:64], sip_status=None
        )

    def _notify(self, phone: _Phone, kind: NoticeKind, call_id: str, cause: str) -> None:
        if self.notify is None:
            return
        try:
            self.notify(BrowserNotice(phone.tenant, phone.agent_id, kind, call_id, cause))
        except Exception:
            log.exception("browser.notify_failed", tenant=phone.tenant, agent_id=phone.agent_id)

    # -- housekeeping --

    def _ensure_sweeping(self) -> None:
        if self._sweeper is None and not self._closed:
            self._sweeper = asyncio.ensure_future(self._sweep())

    async def _sweep(self) -> None:
        """One task for every channel: a browser that went silent is found out (FM-16)."""
        while not self._closed:
            await asyncio.sleep(self.sweep_interval)
            now = time.monotonic()
            for phone in list(self._phones.values()):
                if phone.channel is not None:
                    phone.channel.check(now)

    async def close(self) -> None:
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        phones, self._phones = list(self._phones.values()), {}
        for phone in phones:
            if phone.lost_timer is not None:
                phone.lost_timer.cancel()
            channel, phone.channel = phone.channel, None
            if channel is not None:
                await channel.close()
