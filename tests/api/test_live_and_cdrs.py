"""The live wallboard and call records: scope and masking (SUP-01/02/07, RPT-01, TEN-06/07/08)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from hotline.events.models import CallAnswered, CallEnded, CallOffered, CallQueued, CallStarted
from hotline.reporting.cdr import CdrProjection
from hotline.tenancy.masking import mask_fields, mask_number
from tests.api.world import World, signed_in

SNAPSHOT = {
    "agents": [
        {
            "agent_id": "8001",
            "name": "Ann",
            "state": "on_call",
            "reason": None,
            "since": "2026-01-01T00:00:00+00:00",
            "call_id": "c1",
            "queue": "sales",
            "ani_masked": "138****5678",
            "device": "browser",
        },
        {
            "agent_id": "8002",
            "name": "Alice",
            "state": "ready",
            "reason": None,
            "since": "2026-01-01T00:00:00+00:00",
            "call_id": None,
            "queue": None,
            "ani_masked": None,
            "device": "extension:1001",
        },
    ],
    "queues": [
        {
            "queue": "sales",
            "name": "销售",
            "waiting": 3,
            "longest_wait_seconds": 42.0,
            "agents_ready": 1,
            "agents_not_ready": 0,
            "agents_on_call": 1,
            "offered_today": 10,
            "answered_today": 8,
            "abandoned_today": 1,
            "service_level_today": 0.8,
            "abandon_rate_today": 0.1,
        }
    ],
    "trunks": [{"name": "carrier", "channels_in_use": 7, "channel_limit": 30}],
}


async def test_the_wallboard_shows_the_callers_scope(world: World) -> None:
    world.acd.snapshots["acme"] = SNAPSHOT
    supervisor = await signed_in(world, "acme", "super")
    board = (await supervisor.get("/api/v1/live")).json()
    assert [agent["agent_id"] for agent in board["agents"]] == ["8001", "8002"]
    assert board["queues"][0]["waiting"] == 3 and board["trunks"][0]["channel_limit"] == 30
    lead = await signed_in(world, "acme", "lead")
    assert [agent["agent_id"] for agent in (await lead.get("/api/v1/live")).json()["agents"]] == ["8002"]
    agent = await signed_in(world, "acme", "8001")
    assert (await agent.get("/api/v1/live")).status_code == 403
    world.context.acd = None
    assert (await supervisor.get("/api/v1/live")).status_code == 503


async def make_calls(world: World) -> None:
    base = datetime.now(UTC) - timedelta(hours=2)
    for index, (call_id, agent, ani) in enumerate(
        [
            ("call-a", "8001", "13812345678"),
            ("call-b", "8002", "13987654321"),
            ("call-c", None, "02154321234"),
        ]
    ):
        start = base + timedelta(minutes=10 * index)

        def at(seconds: float, start: datetime = start, call_id: str = call_id) -> dict[str, object]:
            return {"tenant": "acme", "call_id": call_id, "occurred_at": start + timedelta(seconds=seconds)}

        await world.events.append(CallStarted(**at(0), direction="inbound", ani=ani, dnis="4001"))  # type: ignore[arg-type]
        await world.events.append(CallQueued(**at(5), queue_id="sales"))  # type: ignore[arg-type]
        if agent is not None:
            await world.events.append(CallOffered(**at(8), agent_id=agent, queue_id="sales", ani=ani))  # type: ignore[arg-type]
            await world.events.append(CallAnswered(**at(10), by="agent", agent_id=agent, queue_id="sales"))  # type: ignore[arg-type]
        await world.events.append(CallEnded(**at(60), hangup_side="customer"))  # type: ignore[arg-type]
    await CdrProjection(world.storage, world.events).catch_up("acme")


async def test_call_records_follow_data_scope_and_number_permission(world: World) -> None:
    await make_calls(world)
    admin = await signed_in(world, "acme", "admin")
    rows = (await admin.get("/api/v1/cdrs")).json()
    assert rows["total"] == 3
    assert [row["call_id"] for row in rows["items"]] == ["call-c", "call-b", "call-a"]  # newest first
    assert rows["items"][2]["ani"] == "13812345678" and "working" not in rows["items"][0]

    supervisor = await signed_in(world, "acme", "super")
    masked = (await supervisor.get("/api/v1/cdrs")).json()["items"]
    assert [row["ani"] for row in masked] == ["021****1234", "139****4321", "138****5678"]

    lead = await signed_in(world, "acme", "lead")
    assert [row["call_id"] for row in (await lead.get("/api/v1/cdrs")).json()["items"]] == ["call-b"]
    agent = await signed_in(world, "acme", "8001")
    own = (await agent.get("/api/v1/cdrs")).json()
    assert [row["call_id"] for row in own["items"]] == ["call-a"] and own["items"][0]["ani"] == "138****5678"


async def test_call_records_filter_by_time_and_page(world: World) -> None:
    await make_calls(world)
    admin = await signed_in(world, "acme", "admin")
    rows = (await admin.get("/api/v1/cdrs")).json()["items"]
    middle = rows[1]["started_at"]
    since = (await admin.get("/api/v1/cdrs", params={"from": middle})).json()
    assert [row["call_id"] for row in since["items"]] == ["call-c", "call-b"]
    before = (await admin.get("/api/v1/cdrs", params={"to": middle})).json()
    assert [row["call_id"] for row in before["items"]] == ["call-a"]
    page = (await admin.get("/api/v1/cdrs", params={"limit": 1, "offset": 1})).json()
    assert page["total"] == 3 and [row["call_id"] for row in page["items"]] == ["call-b"]
    naive = await admin.get("/api/v1/cdrs", params={"from": "2026-01-01T00:00:00"})
    assert naive.status_code == 422 and "from" in naive.json()["error"]["fields"]


def test_masking_examples() -> None:
    assert mask_number("13812345678") == "138****5678"
    assert mask_number("+8613812345678") == "+86138****5678"
    assert mask_number("87654321") == "87****21"
    assert mask_number("1001") == "1001"
    assert mask_number("") == ""
    assert mask_fields(
        {"ani": "13812345678", "data": {"callback_number": "13812345678", "x": 1}, "dnis": "4001"}
    ) == {
        "ani": "138****5678",
        "data": {"callback_number": "138****5678", "x": 1},
        "dnis": "4001",
    }


@given(st.from_regex(r"\+?[0-9]{1,20}", fullmatch=True))
def test_masked_numbers_keep_their_length_and_hide_their_middle(number: str) -> None:
    masked = mask_number(number)
    assert masked is not None and len(masked) == len(number)
    prefix = "+86" if number.startswith("+86") else "+" if number.startswith("+") else ""
    body = number[len(prefix) :]
    if len(body) <= 4:
        assert masked == number  # extensions and short codes are not personal
        return
    assert masked.count("*") >= min(4, len(body) // 2)
    # What stays visible is the number's own start and end.
    head = masked[: masked.index("*")]
    tail = masked[masked.rindex("*") + 1 :]
    assert number.startswith(head) and number.endswith(tail)
    assert len(head) - len(prefix) + len(tail) <= len(body) - min(4, len(body) // 2)
