"""Lookup nodes against a real HTTP server on 127.0.0.1 (IVR-04, IVR-10): good answers land in call data;
slow, failing and malformed answers take the fallback exit."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from hotline.ivr.interpreter import Interpreter
from hotline.ivr.schema import Flow
from hotline.ivr.validator import load_flow
from tests.ivr.call_double import ScriptedCall
from tests.ivr.flows import tts

CUSTOMER = {"account": {"balance": 88.5, "tier": "gold", "name": "李雷"}, "orders": [{"status": "已发货"}]}


@dataclass
class LocalServer:
    """A small HTTP/1.1 server: one request per connection, answers chosen by path."""

    port: int = 0
    requests: list[dict[str, Any]] = field(default_factory=list)
    handlers: set[asyncio.Task[None]] = field(default_factory=set)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.handlers.add(task)
        try:
            request_line = (await reader.readline()).decode()
            method, target, _ = request_line.split(" ", 2)
            headers: dict[str, str] = {}
            while (line := (await reader.readline()).decode().strip()) != "":
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            url = urlsplit(target)
            self.requests.append(
                {
                    "method": method,
                    "path": url.path,
                    "query": parse_qs(url.query),
                    "headers": headers,
                    "body": body,
                }
            )
            status, payload = await self.respond(url.path, method, parse_qs(url.query), body)
            writer.write(
                f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
                f"Connection: close\r\n\r\n".encode()
                + payload
            )
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            self.handlers.discard(task)

    async def respond(
        self, path: str, method: str, query: dict[str, list[str]], body: bytes
    ) -> tuple[int, bytes]:
        if path == "/customer":
            return 200, json.dumps(CUSTOMER).encode()
        if path == "/slow":
            await asyncio.sleep(10)
            return 200, b"{}"
        if path == "/error":
            return 500, b'{"error": "database down"}'
        if path == "/malformed":
            return 200, b'{"account": {"balance": '
        if path == "/huge":
            return 200, b'{"pad": "' + b"x" * 400_000 + b'"}'
        if path == "/echo":
            return 200, json.dumps(
                {"method": method, "query": query, "body": json.loads(body or b"null")}
            ).encode()
        return 404, b"{}"


@pytest.fixture
async def server() -> AsyncIterator[LocalServer]:
    local = LocalServer()
    listener = await asyncio.start_server(local.handle, "127.0.0.1", 0)
    local.port = listener.sockets[0].getsockname()[1]
    yield local
    listener.close()
    for task in list(local.handlers):
        task.cancel()
    await asyncio.gather(*local.handlers, return_exceptions=True)
    await listener.wait_closed()


def lookup_flow(url: str, **lookup: Any) -> Flow:
    return load_flow(
        {
            "id": "balance",
            "entry": "find",
            "nodes": [
                {
                    "id": "find",
                    "type": "lookup",
                    "url": url,
                    "params": {"phone": "{ani}", "line": "{dnis}"},
                    "response_map": {
                        "customer.name": "account.name",
                        "customer.tier": "account.tier",
                        "balance": "account.balance",
                        "last_order": "orders.0.status",
                    },
                    "exits": {"next": "say", "fallback": "sorry"},
                    **lookup,
                },
                {
                    "id": "say",
                    "type": "play",
                    "prompts": [tts("{data.customer.name}您好，您的余额是{data.balance}元")],
                    "exits": {"next": "@return"},
                },
                {
                    "id": "sorry",
                    "type": "play",
                    "prompts": [tts("查询暂时不可用")],
                    "exits": {"next": "@return"},
                },
            ],
        }
    )


async def run_lookup(flow: Flow, **kwargs: Any) -> ScriptedCall:
    call = ScriptedCall()
    await asyncio.wait_for(Interpreter(**kwargs).run(call, flow, hang_up_at_end=False), timeout=10)
    return call


async def test_good_answer_fills_call_data_and_is_spoken(server: LocalServer) -> None:
    call = await run_lookup(lookup_flow(f"http://127.0.0.1:{server.port}/customer"))
    assert call.data["customer"] == {"name": "李雷", "tier": "gold"}
    assert call.data["balance"] == 88.5 and call.data["last_order"] == "已发货"
    assert call.spoken() == ["李雷您好，您的余额是88.5元"]
    assert server.requests[0]["query"] == {"phone": ["13812345678"], "line": ["4008001234"]}
    assert call.data["ivr"]["results"]["find"]["status"] == "ok"


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/error", "http 500"),
        ("/malformed", "bad json"),
        ("/huge", "response too large"),
        ("/nothing", "http 404"),
    ],
)
async def test_failures_take_the_fallback(server: LocalServer, path: str, status: str) -> None:
    call = await run_lookup(lookup_flow(f"http://127.0.0.1:{server.port}{path}"))
    assert call.spoken() == ["查询暂时不可用"]
    assert call.data["ivr"]["results"]["find"]["status"] == status
    assert "balance" not in call.data
    assert call.events_of("ivr.node_exited")[0]["exit_reason"] == status


async def test_slow_service_times_out_to_the_fallback(server: LocalServer) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    call = await run_lookup(lookup_flow(f"http://127.0.0.1:{server.port}/slow", timeout=0.3))
    assert loop.time() - started < 2
    assert call.spoken() == ["查询暂时不可用"]
    assert call.data["ivr"]["results"]["find"]["status"] == "timeout"


async def test_unreachable_service_takes_the_fallback() -> None:
    # Bind and close a socket to get a port nobody listens on.
    probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()
    call = await run_lookup(lookup_flow(f"http://127.0.0.1:{port}/customer"))
    assert call.spoken() == ["查询暂时不可用"]
    assert call.data["ivr"]["results"]["find"]["status"].startswith("error: ")


async def test_post_body_is_templated_json_and_shared_client_is_used(server: LocalServer) -> None:
    flow = load_flow(
        {
            "id": "post",
            "entry": "ask",
            "nodes": [
                {
                    "id": "ask",
                    "type": "lookup",
                    "method": "POST",
                    "url": f"http://127.0.0.1:{server.port}/echo",
                    "body": {"caller": "{ani}", "account": "{data.account}", "note": "{{ani}}"},
                    "headers": {"X-Api-Key": "k-123"},
                    "response_map": {
                        "echo.method": "method",
                        "echo.caller": "body.caller",
                        "echo.gone": "nope.x",
                    },
                    "exits": {"next": "@return", "fallback": "@hangup"},
                }
            ],
        }
    )
    async with httpx.AsyncClient() as client:
        call = ScriptedCall(data={"account": "A-1"})
        await asyncio.wait_for(Interpreter(http=client).run(call, flow, hang_up_at_end=False), timeout=10)
    request = server.requests[0]
    assert request["method"] == "POST" and request["headers"]["x-api-key"] == "k-123"
    assert json.loads(request["body"]) == {"caller": "13812345678", "account": "A-1", "note": "{ani}"}
    assert call.data["echo"] == {"method": "POST", "caller": "13812345678"}
    assert call.data["ivr"]["results"]["ask"]["missing"] == ["nope.x"]


async def test_vip_routing_from_a_crm_lookup(server: LocalServer) -> None:
    """IVR-10: identify the caller through a web service, then route on the tier."""
    flow = load_flow(
        {
            "id": "route",
            "entry": "crm",
            "nodes": [
                {
                    "id": "crm",
                    "type": "lookup",
                    "url": f"http://127.0.0.1:{server.port}/customer",
                    "params": {"phone": "{ani}"},
                    "response_map": {"customer.tier": "account.tier"},
                    "exits": {"next": "tier", "fallback": "normal"},
                },
                {
                    "id": "tier",
                    "type": "branch",
                    "rules": [
                        {"when": [{"subject": "tier", "op": "in", "value": ["gold", "vip"]}], "goto": "vip"}
                    ],
                    "exits": {"otherwise": "normal"},
                },
                {"id": "vip", "type": "queue", "queue": "vip", "priority": 90},
                {"id": "normal", "type": "queue", "queue": "general"},
            ],
        }
    )
    call = ScriptedCall()
    result = await Interpreter().run(call, flow)
    assert result.outcome == "handed_off"
    assert call.queued[0].queue == "vip" and call.queued[0].priority == 90
