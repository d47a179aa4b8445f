"""Phone-number masking (TEN-06, TEN-08): what users without the ``numbers.full`` permission see.

    mask_number("13812345678")     -> "138****5678"
    mask_number("+8613812345678")  -> "+86138****5678"
    mask_number("87654321")        -> "87****21"
    mask_number("1001")            -> "1001"         (extensions and short codes are not personal)

The number keeps its length; its middle is hidden: at least four characters of numbers of eleven or more,
half of shorter ones. `mask_fields(value)` masks the caller-number fields (:data:`NUMBER_FIELDS`) of a
JSON-like value wherever they occur, so screens, lists and exports share one rule.
"""

from __future__ import annotations

from typing import Any, Final

NUMBER_FIELDS: Final = frozenset({"ani", "caller", "caller_number", "customer_number", "callback_number"})
_SHORT: Final = 4


def mask_number(number: str | None) -> str | None:
    if not number:
        return number
    prefix = ""
    body = number
    if body.startswith("+86"):
        prefix, body = "+86", body[3:]
    elif body.startswith("+"):
        prefix, body = "+", body[1:]
    length = len(body)
    if length <= _SHORT:
        return number
    if length >= 11:
        shown_head, shown_tail = 3, 4
    elif length >= 8:
        shown_head, shown_tail = 2, 2
    else:
        shown_head, shown_tail = 1, 2
    hidden = length - shown_head - shown_tail
    return prefix + body[:shown_head] + "*" * hidden + body[length - shown_tail :]


def mask_fields(value: Any) -> Any:
    """A copy of `value` with every caller-number field masked (also inside lists and mappings)."""
    if isinstance(value, dict):
        return {
            key: (mask_number(item) if key in NUMBER_FIELDS and isinstance(item, str) else mask_fields(item))
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [mask_fields(item) for item in value]
    return value
