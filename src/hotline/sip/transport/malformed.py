"""Answering input the parser rejected (RFC 3261 §8.2.6, §21.4): salvage what a response needs from raw bytes.

`error_response(data, status, reason) -> bytes | None` reads the header block leniently (compact names,
folded lines, any line ending) and builds a response copying Via, From, To, Call-ID and CSeq. It returns None
when the bytes are not a request, are an ACK (never answered), or lack one of those headers: then the
sender cannot be answered in a way it would match, and the message is only logged.
"""

from __future__ import annotations

import re
import secrets

_COMPACT = {"v": "via", "f": "from", "t": "to", "i": "call-id"}
_NEEDED = ("via", "from", "to", "call-id", "cseq")
_TOKEN = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_HEADER_END = re.compile(rb"\r\n\r\n|\n\n|\r\r")
# Only the header block is read; a request line plus five headers never need more.
_MAX_SALVAGE_BYTES = 16_384
_MAX_REASON_LENGTH = 120


def reason_phrase(reason: str) -> str:
    """`reason` made safe for a status line: one line, printable, bounded in length."""
    text = " ".join("".join(ch if ch.isprintable() else " " for ch in reason).split())
    if len(text) > _MAX_REASON_LENGTH:
        text = text[: _MAX_REASON_LENGTH - 3].rstrip() + "..."
    return text or "Bad Request"


def _header_lines(data: bytes) -> list[str]:
    head = _HEADER_END.split(data[:_MAX_SALVAGE_BYTES], maxsplit=1)[0]
    text = head.decode("utf-8", errors="replace")
    lines: list[str] = []
    for line in _LINE_BREAK.split(text.lstrip("\r\n")):
        if line[:1] in (" ", "\t") and lines:
            lines[-1] += " " + line.strip()  # folded continuation (RFC 3261 §7.3.1)
        else:
            lines.append(line)
    return lines


def _has_tag(name_addr: str) -> bool:
    # Header parameters follow the closing '>' when there is one; otherwise the whole value is scanned.
    params = name_addr.rsplit(">", 1)[1] if ">" in name_addr else name_addr
    return re.search(r";\s*tag\s*=", params, re.IGNORECASE) is not None


def error_response(data: bytes, status: int, reason: str) -> bytes | None:
    """The bytes of a `status` response to the malformed request `data`; None when it cannot be answered."""
    lines = _header_lines(data)
    if not lines:
        return None
    request_line = lines[0].split()
    if (
        len(request_line) != 3
        or not _TOKEN.fullmatch(request_line[0])
        or not request_line[2].upper().startswith("SIP/")
    ):
        return None  # a response, or not SIP at all
    method = request_line[0].upper()
    found: dict[str, list[str]] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon:
            continue
        key = name.strip().lower()
        key = _COMPACT.get(key, key)
        if key in _NEEDED and value.strip():
            found.setdefault(key, []).append(value.strip())
    if any(key not in found for key in _NEEDED):
        return None
    cseq_method = found["cseq"][0].split()[-1].upper()
    if method == "ACK" or cseq_method == "ACK":
        return None
    to = found["to"][0]
    if not _has_tag(to) and status != 100:
        to = f"{to};tag={secrets.token_hex(8)}"
    out = [f"SIP/2.0 {status} {reason_phrase(reason)}"]
    out += [f"Via: {via}" for via in found["via"]]
    out += [f"From: {found['from'][0]}", f"To: {to}", f"Call-ID: {found['call-id'][0]}"]
    out += [f"CSeq: {found['cseq'][0]}", "Content-Length: 0", "", ""]
    return "\r\n".join(out).encode("utf-8", errors="replace")
