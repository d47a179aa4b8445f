"""Sortable identifiers (UUIDv7, RFC 9562) and the clock identity used for monotonic durations.

`new_id() -> str` returns a UUIDv7 in canonical text form. Within one process the ids are strictly
increasing, and their text sorts the same way, so ids double as a creation order.

`BOOT_ID` names the monotonic clock this process reads: `time.monotonic()` is CLOCK_MONOTONIC on Linux,
shared by every process since boot, so two events with the same `boot_id` can be subtracted exactly even
across a restart of Hotline. On other systems a random per-process id is used.
"""

from __future__ import annotations

import secrets
import threading
import time
import uuid
from pathlib import Path

_lock = threading.Lock()
_last_ms = 0
_counter = 0
_COUNTER_MAX = 0xFFF


def uuid7() -> uuid.UUID:
    """A UUIDv7: 48-bit Unix ms, a 12-bit counter (monotonic within a millisecond), 62 random bits."""
    global _last_ms, _counter
    with _lock:
        now_ms = time.time_ns() // 1_000_000
        if now_ms > _last_ms:
            _last_ms = now_ms
            # Start low in the counter space so a burst within one millisecond rarely overflows it.
            _counter = secrets.randbits(10)
        else:
            # Same millisecond, or the wall clock stepped back: keep counting from the last timestamp.
            _counter += 1
            if _counter > _COUNTER_MAX:
                _last_ms += 1
                _counter = 0
        timestamp_ms, counter = _last_ms, _counter
    value = (timestamp_ms & 0xFFFF_FFFF_FFFF) << 80
    value |= 0x7 << 76
    value |= counter << 64
    value |= 0b10 << 62
    value |= secrets.randbits(62)
    return uuid.UUID(int=value)


def new_id() -> str:
    """A new sortable id as canonical UUID text."""
    return str(uuid7())


def uuid7_time_ms(value: str | uuid.UUID) -> int:
    """The Unix-millisecond timestamp inside a UUIDv7."""
    as_uuid = value if isinstance(value, uuid.UUID) else uuid.UUID(value)
    return as_uuid.int >> 80


def _read_boot_id() -> str:
    try:
        text = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        text = ""
    return text or f"process-{new_id()}"


BOOT_ID: str = _read_boot_id()
