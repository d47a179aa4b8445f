"""The composition root: builds every service, wires events, starts the transports. The one place that
knows everybody (DESIGN.md)."""

from __future__ import annotations

import asyncio
import signal
from dataclasses import dataclass

import httpx
import uvloop

from hotline.acd.service import AcdService
from hotline.api.server import HttpServer, create_app
from hotline.config import Settings
from hotline.events.bus import InProcessBus
from hotline.ivr.interpreter import Interpreter
from hotline.log import configure, get_logger
from hotline.reporting.cdr import CdrProjection, reconcile_unfinished_calls
from hotline.storage.engines import Storage
from hotline.storage.eventlog import EventLog
from hotline.switch.call import Call
from hotline.switch.service import build_switch
from hotline.tenancy.service import TenancyService

log = get_logger("hotline.app")


@dataclass
class App:
    settings: Settings

    async def start(self) -> None:
        settings = self.settings
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.storage = Storage(settings.data_dir, settings.database_url)
        await self.storage.migrate()
        self.bus = InProcessBus()
        self.events = EventLog(self.storage, self.bus)
        self.tenancy = TenancyService(self.storage)
        # Calls that were live when the node stopped are closed in the log before anything else (FM-15);
        # then the CDR projection catches up from the log and follows the bus.
        self.cdr = CdrProjection(self.storage, self.events)
        for tenant in await self.storage.tenant_databases():
            await reconcile_unfinished_calls(self.events, tenant)
            await self.cdr.catch_up(tenant)
        self.cdr.start(self.bus)
        self.switch = await build_switch(settings, self.storage, self.tenancy, self.events)
        self.http = httpx.AsyncClient(timeout=10.0)
        self.switch.targets["flow"] = self._run_flow
        self.acd = AcdService(self.switch, self.events, self.storage, self.switch.directory)
        await self.acd.start()
        self.switch.queue_handler = self.acd.enqueue
        self.switch.targets["queue"] = self.acd.run_queue_target
        await self.switch.start()
        # imports made by another process (`hotline config import`) reach this one without a restart
        self.directory_watch = asyncio.create_task(self.switch.directory.watch())
        # HTTP (API, CTI WebSocket, web application) in this same event loop (principle 1).
        self.web = HttpServer(
            create_app(self),
            settings.bind,
            settings.http_port,
            tls_cert=settings.tls_cert,
            tls_key=settings.tls_key,
        )
        await self.web.start()
        log.info(
            "hotline.started",
            sip=f"{settings.bind}:{settings.sip_port}",
            http=f"{settings.bind}:{settings.http_port}",
            data_dir=str(settings.data_dir),
        )

    async def _run_flow(self, call: Call, flow_id: str) -> None:
        """The IVR serves a number whose target is a flow (the switch must not import the IVR)."""
        directory = self.switch.directory
        flow = directory.flow(call.tenant, flow_id)
        if flow is None:
            log.error("app.flow_missing", tenant=call.tenant, flow=flow_id)
            await call.hangup("no_flow")
            return
        info = directory.tenant_info(call.tenant)
        interpreter = Interpreter(
            flows=lambda other: directory.flow(call.tenant, other),
            calendars=directory.calendars(call.tenant),
            timezone=info.time_zone if info else "Asia/Shanghai",
            http=self.http,
        )
        result = await interpreter.run(call, flow)
        if result.outcome == "handed_off":
            # an agent (or a transfer target) has the call now: it ends when they hang up, not here
            await call.wait_hung_up()

    async def stop(self) -> None:
        """Close outside-in; a part that fails to close is logged and the others still close."""
        self.directory_watch.cancel()
        closers = (
            self.web.stop,
            self.acd.stop,
            self.switch.stop,
            self.cdr.stop,
            self.http.aclose,
            self.events.close,
            self.bus.close,
            self.storage.close,
        )
        for close in closers:
            try:
                await close()
            except Exception:
                log.exception("hotline.stop_failed", part=getattr(close, "__qualname__", repr(close)))


async def serve(settings: Settings) -> None:
    app = App(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await app.start()
    try:
        await stop.wait()
    finally:
        log.info("hotline.stopping")
        await app.stop()


def run(settings: Settings) -> int:
    """Run the platform until SIGTERM/SIGINT. One process, one uvloop event loop (principle 1)."""
    configure(settings.log_level, settings.log_json)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(serve(settings))
    return 0
