"""The demo tenant (issue #4): a working call center to try right after install.

    info = await ensure_demo_tenant(storage, tenancy)    # creates tenant "demo" when missing
    print(demo_instructions(info, sip_host="192.0.2.10", sip_port=5060, http_port=8080))

What it holds (:func:`demo_document`, an ordinary configuration document):

- 4001 → flow ``main``: a welcome in Mandarin and English, a business-hours branch (calendar ``office``:
  Monday to Friday 09:00-18:00 Asia/Shanghai), then the menu: 1 sales queue, 2 support queue,
  0 operator (extension 1001), 9 voicemail. Out of hours: a closed message, then voicemail.
  Calendar ``demo_always_open`` is the 24-hour override: while it has hours the menu is reachable at any
  time (the default, so the demo works at night and in tests); ``always_open=False`` leaves it empty.
- 9196 echo test, 9197 DTMF read-back (internal numbers: dial them from a demo extension).
- Extensions 1001-1010 with random SIP passwords; agents 8001-8010 (工号) on those extensions, whose
  web password is their extension's password as created. Agents 8001-8005 take sales, 8006-8010 support.
"""

from __future__ import annotations

import secrets
import string
from dataclasses import dataclass, field
from typing import Any, Final

from hotline.storage.engines import Storage
from hotline.switch.directory import Directory, Extension
from hotline.tenancy.config_document import ConfigProblem, import_tenant, load_tenant_config
from hotline.tenancy.service import TenancyService
from hotline.tenancy.users import Role, UserCreate, create_user, get_user

DEMO_TENANT: Final = "demo"
DEMO_NAME: Final = "Hotline 演示 Demo"
MAIN_NUMBER: Final = "4001"
ECHO_NUMBER: Final = "9196"
READBACK_NUMBER: Final = "9197"
EXTENSIONS: Final = tuple(str(number) for number in range(1001, 1011))
OPERATOR_EXTENSION: Final = "1001"
AGENT_BASE: Final = 8001
_PASSWORD_ALPHABET: Final = string.ascii_letters + string.digits


class DemoError(RuntimeError):
    """The demo tenant could not be created; ``problems`` says why."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        self.problems = problems
        super().__init__("; ".join(str(problem) for problem in problems))


@dataclass(frozen=True)
class DemoInfo:
    tenant: str
    created: bool
    # (extension number, SIP password, agent id or None), in number order
    extensions: list[tuple[str, str, str | None]]
    # Web users (username, password or None when made by an earlier run, role): admin and supervisor.
    users: list[tuple[str, str | None, str]] = field(default_factory=list)


def new_password(length: int = 12) -> str:
    """A random password with letters and digits (as extensions and agent logins require)."""
    while True:
        password = "".join(secrets.choice(_PASSWORD_ALPHABET) for _ in range(length))
        if any(c.isdigit() for c in password) and any(c.isalpha() for c in password):
            return password


def _tts(zh: str, en: str) -> list[dict[str, Any]]:
    # Two prompts, each in its own language, so every caller hears both.
    return [{"kind": "tts", "text": {"zh": zh}}, {"kind": "tts", "text": {"en": en}}]


def demo_flow() -> dict[str, Any]:
    return {
        "id": "main",
        "name": "演示主菜单 Demo main menu",
        "entry": "welcome",
        "nodes": [
            {
                "id": "welcome",
                "type": "play",
                "prompts": _tts("您好，欢迎致电 Hotline 演示热线。", "Welcome to the Hotline demo."),
                "exits": {"next": "hours"},
            },
            {
                "id": "hours",
                "type": "branch",
                "rules": [
                    {"when": [{"subject": "calendar", "calendar": "demo_always_open"}], "goto": "menu"},
                    {"when": [{"subject": "calendar", "calendar": "office"}], "goto": "menu"},
                ],
                "exits": {"otherwise": "closed"},
            },
            {
                "id": "menu",
                "type": "menu",
                "prompts": _tts(
                    "销售请按1，技术支持请按2，人工服务请按0，留言请按9。",
                    "For sales press 1, for support press 2, for the operator press 0, "
                    "to leave a message press 9.",
                ),
                "options": {"1": "sales", "2": "support", "0": "operator", "9": "voicemail"},
                "invalid_prompts": _tts("输入有误。", "Sorry, that is not a valid choice."),
                "timeout_prompts": _tts("您没有输入。", "We did not hear a choice."),
                "repeat_key": "*",
                "exits": {"no_input": "operator", "no_match": "operator"},
            },
            {
                "id": "sales",
                "type": "queue",
                "queue": "sales",
                "max_wait": 120,
                "exits": {"timeout": "voicemail", "unavailable": "voicemail"},
            },
            {
                "id": "support",
                "type": "queue",
                "queue": "support",
                "max_wait": 120,
                "exits": {"timeout": "voicemail", "unavailable": "voicemail"},
            },
            {
                "id": "operator",
                "type": "transfer",
                "target": {"kind": "extension", "address": OPERATOR_EXTENSION},
                "exits": {"failed": "voicemail"},
            },
            {
                "id": "closed",
                "type": "play",
                "prompts": _tts(
                    "现在是非工作时间，我们的工作时间是周一至周五上午九点到下午六点。",
                    "We are closed now. Our hours are Monday to Friday, 9 am to 6 pm.",
                ),
                "exits": {"next": "voicemail"},
            },
            {
                "id": "voicemail",
                "type": "voicemail",
                "prompts": _tts("请在提示音后留言。", "Please leave a message after the tone."),
                "mailbox": {"kind": "tenant"},
                "exits": {"next": "goodbye", "no_message": "goodbye"},
            },
            {"id": "goodbye", "type": "hangup", "prompts": _tts("再见。", "Goodbye.")},
        ],
    }


def demo_document(passwords: dict[str, str] | None = None, *, always_open: bool = True) -> dict[str, Any]:
    """The demo tenant's configuration document. `passwords` maps extension → SIP password (random
    ones are made for the others)."""
    passwords = dict(passwords or {})
    for number in EXTENSIONS:
        passwords.setdefault(number, new_password())
    office_hours = [{"start": "09:00", "end": "18:00"}]
    all_day = [{"start": "00:00", "end": "00:00"}]
    agents = []
    extensions = []
    for index, number in enumerate(EXTENSIONS):
        agent_id = str(AGENT_BASE + index)
        queue = "sales" if index < len(EXTENSIONS) // 2 else "support"
        extensions.append(
            {
                "number": number,
                "password": passwords[number],
                "name": f"Demo {number}",
                "caller_id_name": f"Demo {number}",
                "agent": agent_id,
            }
        )
        agents.append(
            {
                "id": agent_id,
                "name": f"演示坐席 Agent {agent_id}",
                "password": passwords[number],
                "skills": {queue: 5},
                "queues": [queue],
                "extension": number,
            }
        )
    return {
        "schema_version": 1,
        "numbers": [
            {"number": MAIN_NUMBER, "target": "flow:main"},
            {"number": ECHO_NUMBER, "target": "echo", "public": False},
            {"number": READBACK_NUMBER, "target": "readback", "public": False},
        ],
        "extensions": extensions,
        "calendars": [
            {
                "id": "office",
                "name": "办公时间 Office hours",
                "timezone": "Asia/Shanghai",
                "weekly": {str(day): office_hours for day in range(1, 6)},
            },
            {
                "id": "demo_always_open",
                "name": "演示：全天开放 Demo 24-hour override",
                "timezone": "Asia/Shanghai",
                "weekly": {str(day): all_day for day in range(1, 8)} if always_open else {},
            },
        ],
        "flows": [demo_flow()],
        "skills": [{"id": "sales", "name": "销售 Sales"}, {"id": "support", "name": "技术支持 Support"}],
        "queues": [
            {"name": "sales", "display_name": "销售 Sales", "on_max_wait": "voicemail"},
            {"name": "support", "display_name": "技术支持 Support", "on_max_wait": "voicemail"},
        ],
        "agents": agents,
        "reason_codes": [
            {"code": "break", "name": "小休", "name_en": "Break", "max_minutes": 15},
            {"code": "meal", "name": "就餐", "name_en": "Meal", "max_minutes": 60},
            {"code": "training", "name": "培训", "name_en": "Training"},
            {"code": "meeting", "name": "会议", "name_en": "Meeting"},
            {"code": "resolved", "name": "已解决", "name_en": "Resolved", "kind": "disposition"},
            {"code": "follow_up", "name": "需跟进", "name_en": "Follow-up needed", "kind": "disposition"},
        ],
    }


async def ensure_demo_tenant(
    storage: Storage,
    tenancy: TenancyService,
    *,
    always_open: bool = True,
    directory: Directory | None = None,
) -> DemoInfo:
    """Create tenant ``demo`` with :func:`demo_document` unless it exists (an existing demo is left as
    its owner changed it). Raises DemoError when the document cannot be applied (e.g. another tenant
    holds 4001)."""
    created = False
    if await tenancy.get_tenant(DEMO_TENANT) is None:
        await tenancy.create_tenant(DEMO_TENANT, DEMO_NAME, time_zone="Asia/Shanghai", seat_limit=10)
        result = await import_tenant(
            storage, tenancy, DEMO_TENANT, demo_document(always_open=always_open), directory=directory
        )
        if not result.ok:
            raise DemoError(result.problems)
        created = True
    config = await load_tenant_config(storage, DEMO_TENANT)
    if not config.extensions and not created:
        # The tenant exists but its configuration was never applied (an earlier run was interrupted).
        result = await import_tenant(
            storage, tenancy, DEMO_TENANT, demo_document(always_open=always_open), directory=directory
        )
        if not result.ok:
            raise DemoError(result.problems)
        config = await load_tenant_config(storage, DEMO_TENANT)
    return DemoInfo(
        tenant=DEMO_TENANT,
        created=created,
        extensions=[_extension_row(extension) for extension in config.extensions],
        users=await _ensure_demo_users(storage),
    )


DEMO_USERS: Final[tuple[tuple[str, str, Role], ...]] = (
    ("admin", "租户管理员 Admin", "tenant_admin"),
    ("super", "班长 Supervisor", "supervisor"),
)


async def _ensure_demo_users(storage: Storage) -> list[tuple[str, str | None, str]]:
    """The web users of the demo (#6): a tenant admin and a supervisor with new random passwords; users
    made by an earlier run keep theirs."""
    rows: list[tuple[str, str | None, str]] = []
    async with storage.tenant_session(DEMO_TENANT) as session:
        for username, display_name, role in DEMO_USERS:
            password: str | None = None
            if await get_user(session, username) is None:
                password = new_password()
                user = UserCreate(
                    username=username, password=password, display_name=display_name, roles=[role]
                )
                await create_user(session, user)
            rows.append((username, password, role))
    return rows


def _extension_row(extension: Extension) -> tuple[str, str, str | None]:
    return extension.number, extension.password, extension.agent


def demo_instructions(info: DemoInfo, *, sip_host: str, sip_port: int, http_port: int) -> str:
    """What the demo prints before serving: where to register, the passwords, what to dial."""
    sip = f"{sip_host}:{sip_port}" if sip_port != 5060 else sip_host
    first = info.extensions[0] if info.extensions else ("1001", "<password>", None)
    lines = [
        f"Hotline demo: tenant '{info.tenant}' " + ("created" if info.created else "(already there)"),
        "",
        f"SIP server:  {sip_host} port {sip_port} (UDP and TCP); domain: {sip_host}",
        f"Web:         http://{sip_host}:{http_port}/  (agents log in with their agent number and the",
        "             password of their extension as printed here)",
        "",
        "Extensions (user / password / agent):",
    ]
    for number, password, agent in info.extensions:
        lines.append(f"  {number}  {password}  " + (f"agent {agent}" if agent else ""))
    if info.users:
        lines += ["", "Web users (user / password / role); agents sign in with their agent number (8001...):"]
        for username, user_password, role in info.users:
            lines.append(f"  {username}  {user_password or '(as printed when the demo was created)'}  {role}")
    lines += [
        "",
        f"Register a softphone: user name = the extension, password as above, domain/registrar = {sip}.",
        f"  baresip: add to ~/.baresip/accounts:  <sip:{first[0]}@{sip}>;auth_pass={first[1]}",
        "",
        "Dial:",
        f"  {MAIN_NUMBER}  main menu: welcome (中文/English); 1 sales, 2 support, "
        f"0 operator (extension {OPERATOR_EXTENSION}), 9 voicemail",
        f"  {ECHO_NUMBER}  echo test (you hear yourself)",
        f"  {READBACK_NUMBER}  DTMF read-back (keys you press are read back)",
        f"  {EXTENSIONS[0]}-{EXTENSIONS[-1]}  the other extensions",
        "",
        "The menu is open around the clock while calendar 'demo_always_open' has hours; export the "
        "configuration (hotline config export --tenant demo), empty its 'weekly' and import it to get "
        "the office hours (Mon-Fri 09:00-18:00 Asia/Shanghai).",
    ]
    return "\n".join(lines)
