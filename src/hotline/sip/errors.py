"""The one exception the SIP message layer raises for bad input.

`ParseError(reason, status=400, message=None)`: `.reason` is a short sentence fit for a log line or a
reason phrase; `.status` is the SIP status a server should answer with (400 by default, 505 for an
unsupported SIP version, 416 for an unsupported Request-URI scheme, 513 for a message too large, 501 for an
unknown method whose CSeq does not match). `.message` is the request or response as far as it could be
read, when the start line and header block were readable but validation failed, so that a server can still
build its error response with `make_response`; otherwise None.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hotline.sip.message import Request, Response


class ParseError(ValueError):
    """Malformed SIP input: why (`reason`) and which status to answer with (`status`)."""

    def __init__(self, reason: str, status: int = 400, message: Request | Response | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.message = message

    def __repr__(self) -> str:
        return f"ParseError({self.reason!r}, status={self.status})"
