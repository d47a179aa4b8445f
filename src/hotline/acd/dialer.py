"""What the ACD needs from the switch, and the adapter that gives it (DESIGN.md: acd uses the switch only
through its call-control API).

- :class:`AcdCall`: a call as the ACD sees it (``hotline.switch.call.Call`` satisfies it).
- :class:`Dialer`: ring an agent's device for a call, connect the answered leg to the caller, release a leg
  that lost a ring-all race, hold and resume, and answer the watchdog's questions (is the call still live,
  has the agent's leg ended?). Tests drive the ACD with a fake one.
- :class:`RingResult`: the answered leg, or why there is none (``ring_no_answer``, ``rejected``,
  ``unreachable``: the ``call.offer_failed`` reasons).
- :class:`SwitchDialer`: the real one over :class:`hotline.switch.service.Switch`: ``extension:N`` through
  ``originate_extension``, ``sip:...`` through ``originate_uri``, ``external:N`` through the tenant's trunks
  (``switch.trunks.dial``), ``browser`` through ``switch.browsers.ring`` (the agent's WebRTC channel).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from hotline.acd.agents import AcdError, Device
from hotline.events.models import OfferFailure
from hotline.log import get_logger
from hotline.switch.control import Prompt

log = get_logger("hotline.acd")

# A ring that ends this close to its timeout counts as ring-no-answer rather than a rejection.
_NO_ANSWER_MARGIN = 0.5
# hotline.switch.trunks.DialOutcome causes as offer failures
_DIAL_FAILURES: dict[str, OfferFailure] = {
    "no_answer": "ring_no_answer",
    "busy": "rejected",
    "rejected": "rejected",
}


class AcdCall(Protocol):
    """The parts of a call the ACD uses."""

    @property
    def call_id(self) -> str: ...

    @property
    def tenant(self) -> str: ...

    @property
    def ani(self) -> str | None: ...

    @property
    def dnis(self) -> str: ...

    @property
    def region(self) -> str | None: ...

    @property
    def data(self) -> dict[str, Any]: ...

    @property
    def hung_up(self) -> bool: ...

    language: Any

    async def wait_hung_up(self) -> None: ...

    async def answer(self) -> None: ...

    def music_on_hold(self) -> None: ...

    async def play(self, prompts: Sequence[Prompt], *, interruptible: bool = False) -> str | None: ...

    async def hangup(self, cause: str) -> None: ...


@dataclass(frozen=True, slots=True)
class RingResult:
    leg: Any = None
    failure: OfferFailure | None = None


class Dialer(Protocol):
    def device_problem(self, tenant: str, device: Device) -> str | None:
        """Why calls cannot be rung on `device` (checked at login), or None."""

    async def ring(
        self, call: AcdCall, tenant: str, agent_id: str, device: Device, ring_seconds: float
    ) -> RingResult:
        """Ring the device for `call` for at most `ring_seconds`; cancelling stops the ringing."""

    async def connect(self, call: AcdCall, leg: Any) -> None:
        """Bridge the caller with the answered leg; raises CallGone when the caller has gone."""

    async def release(self, leg: Any) -> None:
        """Hang up an answered leg that was never connected (ring-all loser, caller gone)."""

    def leg_ended(self, leg: Any) -> bool: ...

    def call_live(self, call: AcdCall) -> bool: ...

    def find_call(self, tenant: str, call_id: str) -> AcdCall | None:
        """A live call by id (restoring agents after a restart)."""

    async def hold(self, call: AcdCall, leg: Any) -> None:
        """Raises AcdError("not_supported") when the switch cannot hold."""

    async def resume(self, call: AcdCall, leg: Any) -> None: ...


class SwitchDialer:
    """The Dialer over the real switch."""

    def __init__(self, switch: Any) -> None:
        self.switch = switch

    def _browsers(self) -> Any:
        return getattr(self.switch, "browsers", None)

    def device_problem(self, tenant: str, device: Device) -> str | None:
        directory = self.switch.directory
        if device.kind == "browser" and self._browsers() is None:
            return "browser phones are not available on this server"
        if device.kind == "extension" and directory.extension(tenant, device.address) is None:
            return f"there is no extension {device.address}"
        if device.kind == "external" and not directory.trunks(tenant):
            return "an outside number needs a trunk, and the tenant has none"
        return None

    async def ring(
        self, call: AcdCall, tenant: str, agent_id: str, device: Device, ring_seconds: float
    ) -> RingResult:
        loop = asyncio.get_running_loop()
        started = loop.time()
        switch = self.switch
        if device.kind == "extension":
            if not switch.location.lookup(tenant, device.address, switch.stack.now()):
                return RingResult(failure="unreachable")  # the phone is not registered
            leg = await switch.originate_extension(call, device.address, ring_seconds)
        elif device.kind == "sip":
            leg = await switch.originate_uri(call, device.address, ring_seconds, kind="agent")
        elif device.kind == "browser":
            browsers = self._browsers()
            if browsers is None or not browsers.connected(tenant, agent_id):
                return RingResult(failure="unreachable")  # no media channel from the agent's browser
            leg = await browsers.ring(call, tenant, agent_id, ring_seconds)
        elif getattr(switch, "trunks", None) is not None:
            # a roaming agent's phone, dialled out through the tenant's trunks (caller id and failover rules)
            outcome = await switch.trunks.dial(call, device.address, ring_seconds=ring_seconds)
            if outcome.leg is not None:
                return RingResult(leg=outcome.leg)
            return RingResult(failure=_DIAL_FAILURES.get(outcome.cause, "unreachable"))
        else:
            trunks = switch.directory.trunks(tenant)
            if not trunks:
                return RingResult(failure="unreachable")
            trunk = trunks[0]
            uri = f"sip:{trunk.prefix}{device.address}@{trunk.host}:{trunk.port}"
            leg = await switch.originate_uri(call, uri, ring_seconds, kind="agent")
        if leg is not None:
            return RingResult(leg=leg)
        waited = loop.time() - started
        return RingResult(
            failure="ring_no_answer" if waited >= ring_seconds - _NO_ANSWER_MARGIN else "rejected"
        )

    async def connect(self, call: AcdCall, leg: Any) -> None:
        await self.switch.connect(call, leg)

    async def release(self, leg: Any) -> None:
        # Before the bridge exists, the leg's end does not end the call (Switch._leg_gone).
        await leg.release("cancelled")

    def leg_ended(self, leg: Any) -> bool:
        return bool(leg is not None and leg.ended)

    def call_live(self, call: AcdCall) -> bool:
        return not call.hung_up and call.call_id in self.switch.calls

    def find_call(self, tenant: str, call_id: str) -> AcdCall | None:
        call = self.switch.calls.get(call_id)
        if call is None or call.tenant != tenant or call.hung_up:
            return None
        found: AcdCall = call
        return found

    async def hold(self, call: AcdCall, leg: Any) -> None:
        operation = getattr(self.switch, "hold", None)
        if operation is None:
            raise AcdError("not_supported", "this switch cannot put calls on hold yet")
        await operation(call, leg)

    async def resume(self, call: AcdCall, leg: Any) -> None:
        operation = getattr(self.switch, "resume", None) or getattr(self.switch, "unhold", None)
        if operation is None:
            raise AcdError("not_supported", "this switch cannot resume held calls yet")
        await operation(call, leg)
