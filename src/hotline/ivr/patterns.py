"""Digit patterns for collect nodes: regular expressions with a bounded matching cost.

A caller types at most 32 keys, but a regex such as ``(\\d*)*#`` can still backtrack for hours on that.
:func:`digit_pattern_problem` accepts a pattern only if it compiles, is at most
:data:`MAX_PATTERN_CHARS` long, has no back-references or look-arounds, never repeats a group that
itself repeats or alternates, and has few variable-length repeats and alternatives; what remains matches
32 keys in well under a millisecond. :func:`compile_digit_pattern` returns the compiled pattern or raises
``ValueError`` with the reason.
"""

from __future__ import annotations

import functools
import re
import warnings
from dataclasses import dataclass, field
from typing import Final

MAX_PATTERN_CHARS: Final = 200
MAX_VARIABLE_REPEATS: Final = 3
MAX_ALTERNATIVES: Final = 6

_QUANTIFIER = re.compile(r"\*|\+|\?|\{(\d*)(,?)(\d*)\}")


@dataclass
class _Group:
    repeats: bool = False
    alternates: bool = False
    children: list[_Group] = field(default_factory=list)


def _quantifier_at(pattern: str, index: int) -> tuple[int, int | None, int] | None:
    """(min, max or None for unbounded, length) of a quantifier starting at ``index``."""
    match = _QUANTIFIER.match(pattern, index)
    if not match:
        return None
    token = match.group(0)
    length = len(token)
    # A lazy or possessive suffix does not change the bound.
    if index + length < len(pattern) and pattern[index + length] in "?+":
        length += 1
    if token == "*":
        return 0, None, length
    if token == "+":
        return 1, None, length
    if token == "?":
        return 0, 1, length
    low_text, comma, high_text = match.group(1), match.group(2), match.group(3)
    if not low_text and not high_text:
        return None  # "{}" or "{,}" is a literal brace in Python's re
    low = int(low_text) if low_text else 0
    if not comma:
        return low, low, length
    return low, (int(high_text) if high_text else None), length


def digit_pattern_problem(pattern: str) -> str | None:
    """Why ``pattern`` is not an acceptable digit pattern, or ``None`` if it is."""
    if len(pattern) > MAX_PATTERN_CHARS:
        return f"pattern longer than {MAX_PATTERN_CHARS} characters"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # "possible nested set" in odd classes
            re.compile(pattern)
    except re.error as error:
        return f"invalid regex: {error}"
    stack: list[_Group] = [_Group()]
    variable_repeats = 0
    alternatives = 0
    previous_atom: _Group | None = None  # the group just closed, if the last atom was a group
    index = 0
    while index < len(pattern):
        char = pattern[index]
        quantifier = _quantifier_at(pattern, index) if index > 0 else None
        if quantifier is not None:
            low, high, length = quantifier
            variable = high is None or high != low
            if variable:
                variable_repeats += 1
            repeated_group = previous_atom is not None and (previous_atom.repeats or previous_atom.alternates)
            if (high is None or high > 1) and repeated_group:
                return "a repeated group must not itself repeat or alternate (exponential matching)"
            if variable:
                # Only variable-length repeats make a match ambiguous; "\\d{3}" inside a group is fine.
                stack[-1].repeats = True
            previous_atom = None
            index += length
            continue
        previous_atom = None
        if char == "\\":
            escaped = pattern[index + 1 : index + 2]
            if escaped.isdigit() and escaped != "0":
                return "back-references are not allowed"
            index += 2
            continue
        if char == "[":
            # Skip the character class: a ']' right after '[' or '[^' is literal.
            end = index + 1
            if end < len(pattern) and pattern[end] == "^":
                end += 1
            if end < len(pattern) and pattern[end] == "]":
                end += 1
            while end < len(pattern) and pattern[end] != "]":
                end += 2 if pattern[end] == "\\" else 1
            index = end + 1
            continue
        if char == "(":
            prefix_end = index + 1
            if pattern.startswith("(?", index):
                rest = pattern[index + 2 : index + 4]
                if rest[:1] in ("=", "!") or rest in ("<=", "<!") or rest.startswith("P="):
                    return "look-arounds and back-references are not allowed"
                if rest[:1] == "(":
                    return "conditional groups are not allowed"
                # Skip "(?:", "(?>", "(?P<name>", "(?i:" and whole flag groups such as "(?i)".
                prefix_end = index + 2
                if rest.startswith("P<"):
                    prefix_end = pattern.index(">", index) + 1
                else:
                    while prefix_end < len(pattern) and pattern[prefix_end] not in ":>)":
                        prefix_end += 1
                    if pattern[prefix_end] == ")":
                        index = prefix_end + 1
                        continue
                    prefix_end += 1
            group = _Group()
            stack[-1].children.append(group)
            stack.append(group)
            index = prefix_end
            continue
        if char == ")":
            closed = stack.pop()
            for child in closed.children:
                closed.repeats |= child.repeats
                closed.alternates |= child.alternates
            previous_atom = closed
            index += 1
            continue
        if char == "|":
            stack[-1].alternates = True
            alternatives += 1
        index += 1
    if variable_repeats > MAX_VARIABLE_REPEATS:
        return f"pattern too complex: at most {MAX_VARIABLE_REPEATS} variable-length repeats"
    if alternatives > MAX_ALTERNATIVES:
        return f"pattern too complex: at most {MAX_ALTERNATIVES} alternatives ('|')"
    return None


@functools.lru_cache(maxsize=512)
def compile_digit_pattern(pattern: str) -> re.Pattern[str]:
    problem = digit_pattern_problem(pattern)
    if problem is not None:
        raise ValueError(problem)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return re.compile(pattern)
