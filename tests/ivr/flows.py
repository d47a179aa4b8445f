"""Flow documents shared by the IVR tests."""

from __future__ import annotations

from typing import Any

from hotline.ivr.calendar import BusinessCalendar


def tts(zh: str, en: str | None = None) -> dict[str, Any]:
    return {"kind": "tts", "text": {"zh": zh, "en": en} if en else zh}


def office_calendar() -> BusinessCalendar:
    hours = [{"start": "09:00", "end": "18:00"}]
    return BusinessCalendar.model_validate(
        {
            "id": "office",
            "timezone": "Asia/Shanghai",
            "weekly": {str(day): hours for day in range(1, 6)},
            "holidays": [{"name": "国庆节", "start": "2024-10-01", "end": "2024-10-07"}],
        }
    )


def demo_flow() -> dict[str, Any]:
    """The demo tenant's line: business-hours check, zh/en choice, 1 sales, 2 support, 0 operator,
    9 voicemail; after hours a message and voicemail."""
    return {
        "id": "demo",
        "name": "Demo hotline",
        "version": 3,
        "entry": "hours",
        "nodes": [
            {
                "id": "hours",
                "type": "branch",
                "rules": [{"when": [{"subject": "calendar", "calendar": "office"}], "goto": "lang"}],
                "exits": {"otherwise": "closed"},
            },
            {
                "id": "lang",
                "type": "language",
                "prompts": [tts("中文服务请按1", "For English press 2")],
                "exits": {"next": "main"},
            },
            {
                "id": "main",
                "type": "menu",
                "prompts": [
                    tts(
                        "销售请按1，技术支持请按2，人工服务请按0，留言请按9",
                        "Sales 1, support 2, operator 0, voicemail 9",
                    )
                ],
                "options": {"1": "sales", "2": "support", "0": "operator", "9": "vm"},
                "invalid_prompts": [tts("输入有误", "Sorry, that is not a valid choice")],
                "timeout_prompts": [tts("您没有输入", "We did not hear a choice")],
                "repeat_key": "*",
                "exits": {"no_input": "operator", "no_match": "operator"},
            },
            {
                "id": "sales",
                "type": "queue",
                "queue": "sales",
                "priority": 10,
                "max_wait": 120,
                "exits": {"timeout": "vm", "unavailable": "vm"},
            },
            {
                "id": "support",
                "type": "queue",
                "queue": "support",
                "skills": {"all": [{"skill": "support", "min_level": 3}]},
                "overflow_queues": ["sales"],
                "overflow_after": 60,
                "exits": {"timeout": "vm", "unavailable": "vm"},
            },
            {
                "id": "operator",
                "type": "transfer",
                "target": {"kind": "extension", "address": "8000"},
                "exits": {"failed": "vm"},
            },
            {
                "id": "closed",
                "type": "play",
                "prompts": [tts("现在是非工作时间", "We are closed now")],
                "exits": {"next": "vm"},
            },
            {
                "id": "vm",
                "type": "voicemail",
                "prompts": [tts("请在提示音后留言", "Please leave a message after the tone")],
                "mailbox": {"kind": "tenant"},
                "exits": {"next": "bye", "no_message": "bye"},
            },
            {"id": "bye", "type": "hangup", "prompts": [tts("再见", "Goodbye")]},
        ],
    }
