"""The HTTP side of `hotline serve`: the FastAPI application and its uvicorn server in the platform's own
event loop (principle 1).

    api = create_app(app)                              # from the composition root (hotline.app.App)
    api = build_api(ApiContext(storage, events, bus, tenancy, acd=..., browsers=...))   # tests
    server = HttpServer(api, "0.0.0.0", 8080); await server.start(); ...; await server.stop()

Routes: the session (`hotline.api.auth`), configuration (`hotline.api.config_routes`), users, API keys
and audit (`hotline.api.users_routes`), live state and CDRs (`hotline.api.live`), the CTI WebSocket
(`hotline.api.cti`), OpenAPI at ``/openapi.json`` and ``/docs``, and the built web application at ``/``
when ``src/hotline/web/static`` holds one.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import uvicorn
from fastapi import FastAPI, WebSocket
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response as StarletteResponse
from starlette.types import Scope

from hotline.api.auth import router as session_router
from hotline.api.config_edit import ConfigEditor
from hotline.api.config_routes import config_router
from hotline.api.context import AcdControl, ApiContext, BrowserPhones
from hotline.api.cti import CtiGateway
from hotline.api.errors import install_error_handlers
from hotline.api.live import router as live_router
from hotline.api.openapi import SchemaBook
from hotline.api.users_routes import router as users_router
from hotline.log import get_logger

if TYPE_CHECKING:
    from hotline.app import App

log = get_logger(__name__)

STATIC_DIR = Path(__file__).resolve().parents[1] / "web" / "static"
API_PREFIXES = ("/api/", "/docs", "/openapi.json")


def build_api(context: ApiContext) -> FastAPI:
    api = FastAPI(
        title="Hotline",
        summary="Call center platform: configuration, users, live state and call records",
        version="1",
        docs_url="/docs",
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    api.state.context = context
    api.state.editor = ConfigEditor(context)
    gateway = CtiGateway(context)
    api.state.cti = gateway
    install_error_handlers(api)
    book = SchemaBook()
    api.include_router(session_router)
    api.include_router(config_router(book))
    api.include_router(users_router)
    api.include_router(live_router)

    @api.websocket("/api/v1/cti")
    async def cti(websocket: WebSocket) -> None:
        await gateway.serve(websocket)

    book.install(api)
    static = context.static_dir
    if static is not None and (static / "index.html").is_file():
        api.mount("/", WebApplication(directory=static, html=True), name="web")
    return api


class WebApplication(StaticFiles):
    """The built front end. A path that is no file (a deep link such as /admin/flows/main) gets the
    application's index.html, so reloads work; the API's own paths keep their 404s."""

    async def get_response(self, path: str, scope: Scope) -> StarletteResponse:
        try:
            return await super().get_response(path, scope)
        except StarletteHTTPException as error:
            request_path = str(scope.get("path", ""))
            if error.status_code != 404 or request_path.startswith(API_PREFIXES):
                raise
            return await super().get_response("index.html", scope)


def create_app(app: App) -> FastAPI:
    """The API over the composition root's services."""
    switch: Any = getattr(app, "switch", None)
    context = ApiContext(
        storage=app.storage,
        events=app.events,
        bus=app.bus,
        tenancy=app.tenancy,
        directory=getattr(switch, "directory", None),
        acd=cast(AcdControl | None, getattr(app, "acd", None)),
        browsers=cast(BrowserPhones | None, getattr(switch, "browsers", None)),
        cti_grace_seconds=app.settings.cti_grace_seconds,
        static_dir=STATIC_DIR,
    )
    api = build_api(context)
    browsers = context.browsers
    if browsers is not None and getattr(browsers, "notify", "absent") is None:
        # Withdrawn offers and ended browser calls reach the agent's desktop through the CTI gateway.
        browsers.notify = api.state.cti.browser_notice  # type: ignore[attr-defined]
    return api


class _EmbeddedServer(uvicorn.Server):
    """uvicorn without its own signal handling: `hotline serve` owns SIGTERM/SIGINT and stops it."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class HttpServer:
    """uvicorn serving `api` on host:port in the running loop; HTTPS when given a certificate and key
    (OPS-10: browsers allow the microphone only on HTTPS pages or on localhost)."""

    def __init__(
        self,
        api: FastAPI,
        host: str,
        port: int,
        *,
        tls_cert: Path | None = None,
        tls_key: Path | None = None,
    ) -> None:
        self.api = api
        self.host = host
        self.port = port
        self.tls = (tls_cert, tls_key) if tls_cert is not None and tls_key is not None else None
        self._server: _EmbeddedServer | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Listen (raises OSError, e.g. the port is taken, or ssl.SSLError for a bad certificate) and
        serve in the running loop."""
        config = uvicorn.Config(
            self.api,
            loop="none",
            lifespan="off",
            log_config=None,
            access_log=False,
            ws="websockets-sansio",
            ws_max_size=1 << 20,
            ws_ping_interval=20.0,
            ws_ping_timeout=20.0,
            timeout_graceful_shutdown=3,
            server_header=False,
            ssl_certfile=str(self.tls[0]) if self.tls else None,
            ssl_keyfile=str(self.tls[1]) if self.tls else None,
        )
        config.load()  # the TLS context too: a bad certificate fails here, with its reason
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            sock.bind((self.host, self.port))
            sock.listen(512)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self.port = sock.getsockname()[1]
        self._server = _EmbeddedServer(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]), name="http-server")
        for _ in range(500):
            if self._server.started or self._task.done():
                break
            await asyncio.sleep(0.01)
        if self._task.done():
            self._task.result()  # raises what stopped it
            raise OSError("the HTTP server stopped while starting")
        if not self._server.started:
            raise OSError("the HTTP server did not start within 5 s")
        log.info("http.listening", host=self.host, port=self.port, tls=self.tls is not None)

    async def stop(self) -> None:
        gateway = cast(CtiGateway, self.api.state.cti)
        await gateway.close()
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout=8.0)
        except TimeoutError:
            self._server.force_exit = True
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        except Exception:
            log.exception("http.stop_failed")
