"""The demo tenant: created once, its logins work, and its main menu does what the printout says."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from hotline.config import Settings
from hotline.demo import DemoError, demo_document, demo_instructions, ensure_demo_tenant
from hotline.ivr.interpreter import Interpreter
from hotline.sip.auth import compute_ha1
from hotline.storage import Storage
from hotline.switch.control import QueueOutcome, TransferTarget
from hotline.switch.directory import Directory
from hotline.tenancy import TenancyService
from hotline.tenancy.config_document import load_tenant_config, validate_config
from tests.ivr.call_double import ScriptedCall
from tests.storage.backends import open_storage

SHANGHAI = ZoneInfo("Asia/Shanghai")
EXTENSIONS = [str(number) for number in range(1001, 1011)]


@pytest.fixture
async def storage(tmp_path: Path) -> AsyncIterator[Storage]:
    opened, _prefix = await open_storage("sqlite", tmp_path)
    try:
        yield opened
    finally:
        await opened.close()


async def test_demo_tenant_is_created_once_with_working_logins(storage: Storage) -> None:
    tenancy = TenancyService(storage)
    info = await ensure_demo_tenant(storage, tenancy)
    assert info.created and info.tenant == "demo"
    assert [number for number, _password, _agent in info.extensions] == EXTENSIONS
    passwords = {number: password for number, password, _agent in info.extensions}
    assert len(set(passwords.values())) == 10  # random, one each

    directory = await Directory.open(storage)
    assert directory.tenant_for_domain("192.0.2.10") == "demo"  # the only tenant: any address finds it
    for number, password, agent in info.extensions:
        secret = directory.digest_secret("demo", number)
        assert secret is not None
        assert secret.ha1_for("MD5", number, "demo") == compute_ha1("MD5", number, "demo", password)
        assert agent == str(int(number) + 7000)
    main = directory.route("demo", "4001")
    assert main is not None and str(main.target) == "flow:main"
    public = directory.public_number("4001")
    assert public is not None and public.tenant == "demo"
    echo, readback = directory.route("demo", "9196"), directory.route("demo", "9197")
    assert echo is not None and str(echo.target) == "echo"
    assert readback is not None and str(readback.target) == "readback"

    # Agents 8001.. sit at extensions 1001.. and log in to the web with that extension's password.
    config = await load_tenant_config(storage, "demo")
    agents = {agent.id: agent for agent in config.agents}
    assert agents["8001"].extension == "1001" and agents["8001"].check_password(passwords["1001"])
    assert agents["8010"].extension == "1010" and not agents["8010"].check_password(passwords["1001"])
    assert agents["8001"].queues == ["sales"] and agents["8010"].queues == ["support"]
    assert {queue.name for queue in config.queues} == {"sales", "support"}

    again = await ensure_demo_tenant(storage, tenancy)
    assert not again.created and again.extensions == info.extensions


async def test_demo_waits_for_a_number_another_tenant_holds(storage: Storage) -> None:
    tenancy = TenancyService(storage)
    await tenancy.create_tenant("acme", "Acme")
    await tenancy.assign_number("4001", "acme", "echo", "echo")
    with pytest.raises(DemoError) as caught:
        await ensure_demo_tenant(storage, tenancy)
    assert [str(problem) for problem in caught.value.problems] == [
        "numbers[4001]: this number belongs to another tenant"
    ]
    # Once the number is free, the next start finishes the demo.
    await tenancy.release_number("4001", "acme")
    info = await ensure_demo_tenant(storage, tenancy)
    assert [number for number, _password, _agent in info.extensions] == EXTENSIONS


async def run_main_menu(keys: str, *, always_open: bool, at: datetime) -> tuple[ScriptedCall, str]:
    config, problems = validate_config(demo_document(always_open=always_open))
    assert config is not None, problems
    flows = {flow.id: flow for flow in config.flows}
    interpreter = Interpreter(
        flows=flows,
        calendars={calendar.id: calendar for calendar in config.calendars},
        timezone="Asia/Shanghai",
        clock=lambda: at,
    )
    call = ScriptedCall(
        [keys] if keys else [],
        queue_outcomes=[QueueOutcome("answered", agent="8001")],
        transfer_results=[True],
    )
    result = await interpreter.run(call, flows["main"])
    return call, result.outcome


SATURDAY_NIGHT = datetime(2026, 11, 28, 23, 30, tzinfo=SHANGHAI)
MONDAY_MORNING = datetime(2026, 11, 23, 10, 0, tzinfo=SHANGHAI)


async def test_main_menu_keys_at_any_hour() -> None:
    call, outcome = await run_main_menu("1", always_open=True, at=SATURDAY_NIGHT)
    spoken = call.spoken()
    assert "您好，欢迎致电 Hotline 演示热线。" in spoken and "Welcome to the Hotline demo." in spoken
    assert any("销售请按1" in text for text in spoken) and any("For sales press 1" in text for text in spoken)
    assert [request.queue for request in call.queued] == ["sales"] and outcome == "handed_off"

    call, _outcome = await run_main_menu("2", always_open=True, at=SATURDAY_NIGHT)
    assert [request.queue for request in call.queued] == ["support"]
    call, _outcome = await run_main_menu("0", always_open=True, at=SATURDAY_NIGHT)
    assert call.transfers == [TransferTarget("extension", "1001")]
    call, _outcome = await run_main_menu("9", always_open=True, at=SATURDAY_NIGHT)
    assert "record" in call.operations and call.queued == [] and call.transfers == []
    assert "Please leave a message after the tone." in call.spoken()


async def test_business_hours_branch_without_the_override() -> None:
    call, _outcome = await run_main_menu("1", always_open=False, at=SATURDAY_NIGHT)
    assert any("We are closed now" in text for text in call.spoken())
    assert call.queued == [] and "record" in call.operations  # out of hours: voicemail
    call, _outcome = await run_main_menu("1", always_open=False, at=MONDAY_MORNING)
    assert [request.queue for request in call.queued] == ["sales"]


def test_instructions_tell_how_to_use_the_demo() -> None:
    from hotline.demo import DemoInfo

    info = DemoInfo("demo", True, [("1001", "Pw1001abcdef", "8001"), ("1002", "Pw1002abcdef", "8002")])
    text = demo_instructions(info, sip_host="192.0.2.10", sip_port=5070, http_port=8081)
    assert "192.0.2.10 port 5070" in text
    assert "http://192.0.2.10:8081/" in text
    assert "1001  Pw1001abcdef  agent 8001" in text and "1002  Pw1002abcdef" in text
    assert "<sip:1001@192.0.2.10:5070>;auth_pass=Pw1001abcdef" in text
    for number in ("4001", "9196", "9197"):
        assert f"  {number}  " in text


def test_demo_command_prints_then_serves_like_serve(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import hotline.app
    from hotline.cli import main

    served: list[Settings] = []

    def fake_run(settings: Settings) -> int:  # the real one serves until SIGTERM
        served.append(settings)
        return 0

    monkeypatch.delenv("HOTLINE_DATABASE_URL", raising=False)
    monkeypatch.setattr(hotline.app, "run", fake_run)
    argv = ["demo", "--data-dir", str(tmp_path), "--sip-port", "5072", "--http-port", "8082"]
    assert main([*argv, "--public-address", "198.51.100.4"]) == 0
    out = capsys.readouterr().out
    assert "tenant 'demo' created" in out and "198.51.100.4 port 5072" in out
    assert "http://198.51.100.4:8082/" in out
    assert len(served) == 1 and served[0].sip_port == 5072 and served[0].data_dir == tmp_path
    # A second start keeps the demo and its passwords.
    first_passwords = [line for line in out.splitlines() if line.startswith("  10")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "(already there)" in out
    assert [line for line in out.splitlines() if line.startswith("  10")] == first_passwords
