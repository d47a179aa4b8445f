"""Carrier trunks through `hotline serve`, with SIPp as the carrier (issue #2 item 7, issue #4 item 1, TEL-01,
TEL-14, TEL-15).

The carrier lives on 127.0.0.2 (as in test_sip_server.py); phones call from 127.0.0.1. Outbound trunks:
`primary` (priority 1, dial prefix 9) and `backup` (priority 2), both with caller-ID rules that allow the
tenant's own numbers. Each SIPp carrier logs what it was sent (-trace_logs) so the tests can check the
Request-URI and the presented caller ID.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.integration.peers import HotlineServer, free_port, free_port_range, run_sipp
from tests.integration.tenant import CARRIER_ADDRESS, PASSWORDS, create_tenant, document

pytestmark = pytest.mark.integration
SCENARIOS = Path(__file__).parent / "scenarios"
ACCOUNT = ("acme-trunk", "carrier-pass-1")
CALLER_ID_RULES = {"allowed": ["0216123456*", "0216123457*"], "default": "02161234560"}
FORWARDED_NUMBER = "02161234570"  # forward:13900139000


@dataclass(frozen=True)
class CarrierPorts:
    primary: int
    backup: int
    registrar: int


def outbound_trunks(ports: CarrierPorts, registering: bool) -> list[dict[str, Any]]:
    return [
        # the inbound carrier of the shared test tenant, tried last for outbound calls
        {"name": "carrier", "kind": "ip", "host": CARRIER_ADDRESS, "port": 5060, "priority": 10},
        {
            "name": "primary",
            "kind": "ip",
            "host": CARRIER_ADDRESS,
            "port": ports.primary,
            "priority": 1,
            "prefix": "9",
            "caller_id": CALLER_ID_RULES,
        },
        {
            "name": "backup",
            "kind": "ip",
            "host": CARRIER_ADDRESS,
            "port": ports.backup,
            "priority": 2,
            "caller_id": CALLER_ID_RULES,
        },
        {
            "name": "carrier-reg",
            "kind": "register",
            "host": CARRIER_ADDRESS,
            "port": ports.registrar,
            "username": ACCOUNT[0],
            "password": ACCOUNT[1],
            "register_expires": 600,
            "priority": 20,
            "enabled": registering,
        },
    ]


def tenant_document(ports: CarrierPorts, *, registering: bool = True) -> dict[str, Any]:
    base = document()
    extensions = base["extensions"]
    extensions[0]["caller_id_number"] = "02161234567"  # 1001 presents the tenant's number
    numbers = [*base["numbers"], {"number": FORWARDED_NUMBER, "target": "forward:13900139000"}]
    return {"extensions": extensions, "trunks": outbound_trunks(ports, registering), "numbers": numbers}


@pytest.fixture(scope="module")
def ports() -> CarrierPorts:
    return CarrierPorts(free_port(), free_port(), free_port())


@dataclass
class Setup:
    server: HotlineServer
    registrar: Carrier
    data_dir: Path


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, ports: CarrierPorts) -> Iterator[Setup]:
    data_dir = tmp_path_factory.mktemp("hotline")
    # the carrier's registrar is up before Hotline starts and registers its trunk
    registrar = Carrier(
        tmp_path_factory.mktemp("registrar"),
        "carrier_registrar.xml",
        ports.registrar,
        *("-key", "username", ACCOUNT[0], "-key", "password", ACCOUNT[1]),
    )
    create_tenant(data_dir, extra=tenant_document(ports))
    server = HotlineServer(data_dir=data_dir).start()
    yield Setup(server, registrar, data_dir)
    server.stop()
    registrar.kill()
    print(server.log_tail(200))


@pytest.fixture
def server(setup: Setup) -> HotlineServer:
    return setup.server


class Carrier:
    """One SIPp carrier endpoint on 127.0.0.2 running a `carrier_*.xml` scenario for one call."""

    def __init__(self, workdir: Path, scenario: str, port: int, *args: str) -> None:
        self.log_file = workdir / f"{scenario}-{port}.log"
        self.port = port
        media = free_port_range(4)[0]
        self.process = subprocess.Popen(
            [
                "sipp",
                "-sf",
                str(SCENARIOS / scenario),
                "-i",
                CARRIER_ADDRESS,
                "-p",
                str(port),
                "-mp",
                str(media),
                "-m",
                "1",
                "-nostdin",
                "-timeout",
                "40s",
                "-trace_err",
                "-trace_logs",
                "-log_file",
                str(self.log_file),
                *args,
            ],
            cwd=workdir,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self._wait_listening()

    def _wait_listening(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                try:
                    probe.bind((CARRIER_ADDRESS, self.port))
                except OSError:
                    return  # taken: SIPp is listening
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"SIPp did not start on {self.port}: {self.output()}")

    def output(self) -> str:
        if self.process.poll() is None or self.process.stdout is None:
            return ""
        return self.process.stdout.read().decode(errors="replace")[-3000:]

    def finished_ok(self, timeout: float = 30.0) -> bool:
        try:
            return self.process.wait(timeout) == 0
        except subprocess.TimeoutExpired:
            return False

    def seen(self) -> dict[str, str]:
        """What the scenario logged, as key=value."""
        found: dict[str, str] = {}
        if self.log_file.exists():
            for line in self.log_file.read_text().splitlines():
                key, sep, value = line.strip().partition("=")
                if sep:
                    found[key] = value
        return found

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)


@pytest.fixture
def carriers(tmp_path: Path) -> Iterator[list[Carrier]]:
    started: list[Carrier] = []
    yield started
    for carrier in started:
        carrier.kill()


def phone_dials(server: HotlineServer, tmp_path: Path, number: str) -> tuple[int, int, str]:
    """Extension 1001 (digest authenticated) calls `number`, stays 1 s, hangs up."""
    result = run_sipp(
        [
            f"127.0.0.1:{server.sip_port}",
            "-sf",
            str(SCENARIOS / "uac_auth_call.xml"),
            "-key",
            "user",
            "1001",
            "-au",
            "1001",
            "-ap",
            PASSWORDS["1001"],
            "-s",
            number,
            "-auth_uri",
            f"{number}@127.0.0.1:{server.sip_port}",
            "-i",
            "127.0.0.1",
            "-p",
            str(free_port()),
            "-m",
            "1",
            "-d",
            "1000",
            "-timeout",
            "30s",
        ],
        tmp_path,
        40,
    )
    return result.successful, result.failed, result.stderr + result.stdout[-2000:]


def test_a_phone_dials_out_through_the_first_trunk_with_its_prefix_and_the_tenants_number(
    server: HotlineServer, ports: CarrierPorts, tmp_path: Path, carriers: list[Carrier]
) -> None:
    carriers.append(primary := Carrier(tmp_path, "carrier_answer.xml", ports.primary))
    ok, failed, output = phone_dials(server, tmp_path, "013800138000")
    assert (ok, failed) == (1, 0), output + server.log_tail(40)
    assert primary.finished_ok(), primary.output()
    assert primary.seen() == {"ruri": "9013800138000", "from": "02161234567", "pai": "02161234567"}


def test_when_the_first_trunk_is_out_of_service_the_call_goes_out_on_the_second(
    server: HotlineServer, ports: CarrierPorts, tmp_path: Path, carriers: list[Carrier]
) -> None:
    carriers.append(primary := Carrier(tmp_path, "carrier_unavailable.xml", ports.primary))
    carriers.append(backup := Carrier(tmp_path, "carrier_answer.xml", ports.backup))
    ok, failed, output = phone_dials(server, tmp_path, "013800138001")
    assert (ok, failed) == (1, 0), output + server.log_tail(40)
    assert primary.finished_ok(), primary.output()
    assert backup.finished_ok(), backup.output()
    assert backup.seen()["ruri"] == "013800138001"  # the backup trunk has no prefix
    assert backup.seen()["from"] == "02161234567"
    assert "trunk primary failed (503), moved to backup" in server.log_tail(400)


def test_a_forwarded_number_sends_the_carriers_call_back_out_through_a_trunk(
    server: HotlineServer, ports: CarrierPorts, tmp_path: Path, carriers: list[Carrier]
) -> None:
    carriers.append(primary := Carrier(tmp_path, "carrier_answer.xml", ports.primary))
    result = run_sipp(
        [
            f"127.0.0.1:{server.sip_port}",
            "-sn",
            "uac",
            "-s",
            FORWARDED_NUMBER,
            "-i",
            CARRIER_ADDRESS,
            "-p",
            str(free_port()),
            "-m",
            "1",
            "-d",
            "1000",
            "-timeout",
            "30s",
        ],
        tmp_path,
        40,
    )
    assert (result.successful, result.failed) == (1, 0), result.stderr + server.log_tail(40)
    assert primary.finished_ok(), primary.output()
    seen = primary.seen()
    assert seen["ruri"] == "913900139000"
    # the caller ("sipp") is not a number the trunk lets us present: the tenant's called number is
    assert seen["from"] == FORWARDED_NUMBER


def test_a_register_trunk_registers_with_digest_and_a_configuration_change_unregisters_it(
    setup: Setup, ports: CarrierPorts
) -> None:
    server, registrar = setup.server, setup.registrar
    wait_for_log(server, "trunk.registered", trunk="carrier-reg")
    assert registrar.seen() == {"register_expires": "600", "auth_user": ACCOUNT[0]}

    # disabling the trunk by configuration (another process's import, picked up live) removes the binding
    create_tenant(setup.data_dir, extra=tenant_document(ports, registering=False))
    assert registrar.finished_ok(15), registrar.output() + server.log_tail(60)
    assert registrar.seen()["unregister_expires"] == "0"
    wait_for_log(server, "trunk.unregistered", trunk="carrier-reg")


def wait_for_log(server: HotlineServer, event: str, timeout: float = 15.0, **fields: object) -> None:
    """Wait until the server logs `event` with `fields` (its log is JSON lines)."""
    deadline = time.monotonic() + timeout
    while not any(
        record.get("event") == event and all(record.get(k) == v for k, v in fields.items())
        for record in log_records(server)
    ):
        assert time.monotonic() < deadline, f"{event} {fields} not logged:\n{server.log_tail(60)}"
        time.sleep(0.1)


def log_records(server: HotlineServer) -> list[dict[str, Any]]:
    records = []
    for line in server.log_tail(2000).splitlines():
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                records.append(json.loads(line))
    return records


def test_a_trunk_that_does_not_answer_at_all_is_left_for_the_next_after_a_few_seconds(
    server: HotlineServer, ports: CarrierPorts, tmp_path: Path, carriers: list[Carrier]
) -> None:
    # nothing listens on the primary trunk's port: its INVITE goes unanswered
    carriers.append(backup := Carrier(tmp_path, "carrier_answer.xml", ports.backup))
    started = time.monotonic()
    ok, failed, output = phone_dials(server, tmp_path, "013800138002")
    assert (ok, failed) == (1, 0), output + server.log_tail(40)
    assert backup.finished_ok(), backup.output()
    assert backup.seen()["ruri"] == "013800138002"
    assert time.monotonic() - started < 15
    assert "trunk primary failed (no response in 5 s), moved to backup" in server.log_tail(400)
