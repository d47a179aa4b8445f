"""Prompt templates (safe substitution) and digit patterns (bounded regexes)."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hotline.ivr.patterns import compile_digit_pattern, digit_pattern_problem
from hotline.ivr.variables import MISSING, get_path, render, set_path, template_problems

CALL = {
    "ani": "13812345678",
    "dnis": "4008001234",
    "call_id": "c1",
    "tenant": "acme",
    "language": "zh",
    "region": None,
}
DATA: dict[str, Any] = {
    "balance": 12.5,
    "customer": {"name": "王芳", "tier": "vip"},
    "orders": [{"id": "A7"}],
}


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("您的余额是{data.balance}元", "您的余额是12.5元"),
        ("{data.customer.name}您好，来电{ani}", "王芳您好，来电13812345678"),
        ("订单 {data.orders.0.id}", "订单 A7"),
        ("missing: [{data.nothing}] [{region}]", "missing: [] []"),
        ("{{literal}} braces", "{literal} braces"),
        ("a dict renders empty: [{data.customer}]", "a dict renders empty: []"),
        # No format-string features: attribute access, indexing syntax, conversions stay literal text.
        ("{data.__class__}", ""),
        ("{ani.__class__.__mro__}", "{ani.__class__.__mro__}"),
        ("{0}{ani!r}{ani:>20}", "{0}{ani!r}{ani:>20}"),
        ("unbalanced { brace", "unbalanced { brace"),
    ],
)
def test_render(template: str, expected: str) -> None:
    assert render(template, CALL, DATA) == expected


def test_values_cannot_inject_placeholders() -> None:
    data = {"name": "{ani} {data.secret}", "secret": "s3cret"}
    assert render("hello {data.name}", CALL, data) == "hello {ani} {data.secret}"


@given(st.text(max_size=200))
def test_render_never_raises_and_is_bounded(template: str) -> None:
    out = render(template, CALL, DATA)
    assert isinstance(out, str) and len(out) <= 4000


def test_template_problems() -> None:
    assert template_problems("余额{data.balance}，{ani}") == []
    assert template_problems("{data.bad path}") == ["bad data path in {data.bad path}"]
    assert template_problems("{secret}") == ["unknown variable {secret}"]
    assert template_problems("oops {") and template_problems("oops }")
    assert template_problems("{{ok}}") == []


def test_data_paths() -> None:
    data: dict[str, Any] = {"a": 1}
    set_path(data, "a.b.c", "x")  # replaces the non-dict "a"
    assert data == {"a": {"b": {"c": "x"}}}
    assert get_path(data, "a.b.c") == "x"
    assert get_path(data, "a.z") is MISSING
    assert get_path([{"k": 1}], "0.k") == 1
    assert get_path({"l": [1]}, "l.5") is MISSING


@pytest.mark.parametrize(
    ("pattern", "accepted"),
    [
        (r"\d{6}", True),
        (r"1[3-9]\d{9}", True),
        (r"(?:\d{3})+", True),
        (r"[*#]?\d{4,8}", True),
        (r"(?P<area>0\d{2,3})\d{7,8}", True),
        (r"(\d*)*#", False),
        (r"(1|1)*2", False),
        (r"(?:\d\d?)+", False),
        (r"\d*\d*\d*\d*", False),
        (r"(\d)\1", False),
        (r"(?=1)\d+", False),
        (r"[0-9", False),
        ("1" * 201, False),
    ],
)
def test_digit_patterns(pattern: str, accepted: bool) -> None:
    assert (digit_pattern_problem(pattern) is None) is accepted
    if accepted:
        assert compile_digit_pattern(pattern).fullmatch is not None
    else:
        with pytest.raises(ValueError):
            compile_digit_pattern(pattern)


@given(st.text(alphabet="0123456789*#()[]{}|?+,\\d", max_size=30))
def test_accepted_patterns_match_32_keys_quickly(pattern: str) -> None:
    """Property: whatever passes the check matches any 32-key input in bounded time."""
    if digit_pattern_problem(pattern) is not None:
        return
    compiled = re.compile(pattern)
    worst = 0.0
    for keys in ("0" * 32, "1" * 31 + "#", "0123456789" * 3 + "*#"):
        started = time.perf_counter()
        compiled.fullmatch(keys)
        worst = max(worst, time.perf_counter() - started)
    assert worst < 0.05
