"""Call-data paths and prompt templates.

- Data paths are dotted keys into ``call.data``: ``customer.tier``, ``order.items.0.name`` (a number
  indexes a list when reading). :func:`get_path`, :func:`set_path`, :func:`is_data_path`.
- Templates put call values into TTS text: ``{ani}``, ``{dnis}``, ``{call_id}``, ``{tenant}``,
  ``{language}``, ``{region}`` and ``{data.<path>}``; ``{{`` and ``}}`` are literal braces.
  :func:`render` substitutes without ``str.format``: a missing value renders as empty text, nothing but
  dict keys and list indexes is ever looked up, and a malformed placeholder stays literal text.
  :func:`template_problems` lists what the validator should report.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

VARIABLE_ROOTS: Final = frozenset({"ani", "dnis", "call_id", "tenant", "language", "region"})
# Top-level call-data key owned by the interpreter (path, inputs, results).
RESERVED_DATA_KEY: Final = "ivr"

_SEGMENT = r"[A-Za-z0-9_-]{1,64}"
_DATA_PATH = re.compile(rf"{_SEGMENT}(?:\.{_SEGMENT}){{0,7}}")
_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([^{}]{0,200})\}")
_MAX_VALUE_CHARS: Final = 200
_MAX_RENDERED_CHARS: Final = 4000


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Final = _Missing()


def is_data_path(path: str) -> bool:
    return _DATA_PATH.fullmatch(path) is not None


def get_path(data: Any, path: str) -> Any:
    """The value at ``path`` in ``data`` (a dict, or a list when the segment is a number), or MISSING."""
    current: Any = data
    for segment in path.split("."):
        if isinstance(current, Mapping):
            if segment not in current:
                return MISSING
            current = current[segment]
        elif isinstance(current, list) and segment.isdigit():
            index = int(segment)
            if index >= len(current):
                return MISSING
            current = current[index]
        else:
            return MISSING
    return current


def set_path(data: dict[str, Any], path: str, value: Any) -> None:
    """Store ``value`` at ``path``, creating (or replacing non-dict) intermediate levels."""
    segments = path.split(".")
    current = data
    for segment in segments[:-1]:
        child = current.get(segment)
        if not isinstance(child, dict):
            child = {}
            current[segment] = child
        current = child
    current[segments[-1]] = value


def _placeholder_problem(name: str) -> str | None:
    if name in VARIABLE_ROOTS:
        return None
    if name.startswith("data."):
        if is_data_path(name[len("data.") :]):
            return None
        return f"bad data path in {{{name}}}"
    return f"unknown variable {{{name}}}"


def template_problems(text: str) -> list[str]:
    """Short messages for every placeholder that would not render (for the validator)."""
    problems: list[str] = []
    position = 0
    for match in _PLACEHOLDER.finditer(text):
        stray = text[position : match.start()]
        if "{" in stray or "}" in stray:
            problems.append("unbalanced brace (write {{ or }} for a literal brace)")
        position = match.end()
        name = match.group(1)
        if name is not None:
            problem = _placeholder_problem(name)
            if problem:
                problems.append(problem)
    tail = text[position:]
    if "{" in tail or "}" in tail:
        problems.append("unbalanced brace (write {{ or }} for a literal brace)")
    return problems


def _spoken(value: Any) -> str:
    if value is MISSING or value is None or isinstance(value, Mapping | list | tuple):
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)[:_MAX_VALUE_CHARS]
    return ""


def render(text: str, call_values: Mapping[str, Any], data: Mapping[str, Any]) -> str:
    """Substitute placeholders in ``text``; ``call_values`` holds the :data:`VARIABLE_ROOTS` values."""

    def substitute(match: re.Match[str]) -> str:
        token = match.group(0)
        if token == "{{":
            return "{"
        if token == "}}":
            return "}"
        name = match.group(1)
        if _placeholder_problem(name) is not None:
            return token
        if name.startswith("data."):
            return _spoken(get_path(data, name[len("data.") :]))
        return _spoken(call_values.get(name, MISSING))

    return _PLACEHOLDER.sub(substitute, text)[:_MAX_RENDERED_CHARS]
