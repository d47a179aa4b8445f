"""`hotline serve` answers HTTP and the CTI WebSocket on its HTTP port, in its own event loop, and stops
cleanly; a taken port is a clear error (principle 1, OPS-02)."""

from __future__ import annotations

import socket
import ssl
from pathlib import Path

import httpx
import pytest

from hotline.api import HttpServer, build_api
from hotline.app import App
from hotline.config import Settings
from hotline.storage.engines import Storage
from hotline.tenancy.service import TenancyService
from tests.api.cti_client import cti
from tests.api.world import PASSWORD, World, add_user
from tests.sip.test_transport import certificate

__all__ = ["certificate"]


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_the_platform_serves_the_api_and_the_cti_socket(tmp_path: Path) -> None:
    storage = Storage(tmp_path)
    await storage.migrate()
    await TenancyService(storage).create_tenant("acme", "Acme")
    await add_user(storage, "acme", "super", ["supervisor"])
    await storage.close()
    http_port = free_port()
    rtp = free_port(socket.SOCK_DGRAM) // 2 * 2
    settings = Settings(
        data_dir=tmp_path,
        bind="127.0.0.1",
        sip_port=free_port(socket.SOCK_DGRAM),
        http_port=http_port,
        rtp_port_min=max(rtp, 1024),
        rtp_port_max=max(rtp, 1024) + 20,
        log_json=False,
    )
    app = App(settings)
    await app.start()
    try:
        base = f"http://127.0.0.1:{http_port}"
        async with httpx.AsyncClient(base_url=base, trust_env=False) as client:
            assert (await client.get("/openapi.json")).json()["info"]["title"] == "Hotline"
            signed = await client.post(
                "/api/v1/session", json={"tenant": "acme", "username": "super", "password": PASSWORD}
            )
            assert signed.status_code == 200, signed.text
            cookie = client.cookies.get("hotline_session")
            assert cookie is not None
            missing = await client.get("/api/v1/nowhere")
            assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
        async with cti(http_port, cookie) as supervisor:
            hello = await supervisor.command("hello")
            assert hello["ok"] and hello["user"]["username"] == "super"
    finally:
        await app.stop()
    with pytest.raises(httpx.ConnectError):
        async with httpx.AsyncClient(trust_env=False) as client:
            await client.get(f"http://127.0.0.1:{http_port}/openapi.json")


async def test_a_taken_port_is_an_error_not_a_hang(world: World) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        server = HttpServer(world.api, "127.0.0.1", taken.getsockname()[1])
        with pytest.raises(OSError):
            await server.start()


async def test_the_web_application_is_served_with_deep_links_and_the_api_keeps_its_errors(
    world: World, tmp_path: Path
) -> None:
    static = tmp_path / "static"
    (static / "assets").mkdir(parents=True)
    (static / "index.html").write_text("<!doctype html><title>Hotline</title>", encoding="utf-8")
    (static / "assets" / "app.js").write_text("console.log(1)", encoding="utf-8")
    world.context.static_dir = static
    api = build_api(world.context)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=api), base_url="http://testserver"
    ) as client:
        home = await client.get("/")
        assert home.status_code == 200 and "<title>Hotline</title>" in home.text
        assert (await client.get("/assets/app.js")).text == "console.log(1)"
        deep = await client.get("/admin/flows/main")
        assert deep.status_code == 200 and "<title>Hotline</title>" in deep.text
        missing = await client.get("/api/v1/nowhere")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
        assert (await client.get("/openapi.json")).status_code == 200


async def test_https_when_given_a_certificate(world: World, certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    server = HttpServer(world.api, "127.0.0.1", 0, tls_cert=cert, tls_key=key)
    await server.start()
    try:
        trusted = ssl.create_default_context(cafile=str(cert))
        async with httpx.AsyncClient(verify=trusted, trust_env=False) as client:
            response = await client.post(
                f"https://127.0.0.1:{server.port}/api/v1/session",
                json={"tenant": "acme", "username": "super", "password": PASSWORD},
            )
            assert response.status_code == 200
            # Over HTTPS the session cookie is never sent in the clear.
            assert "Secure" in response.headers["set-cookie"]
    finally:
        await server.stop()
    broken = HttpServer(world.api, "127.0.0.1", 0, tls_cert=key, tls_key=key)
    with pytest.raises(ssl.SSLError):
        await broken.start()
