"""TLS contexts for SIPS (RFC 3261 §26.2, RFC 5630) and WSS, from certificate and key files.

- `server_tls_context(cert_path, key_path, *, ca_path=None, require_client_certificate=False)`
- `client_tls_context(*, ca_path=None, verify=True)`: verifies the server's certificate and name by default
  (against the system store, or only `ca_path` when given).
Both refuse anything older than TLS 1.2. A missing or unreadable file raises ValueError naming it.
"""

from __future__ import annotations

import ssl
from pathlib import Path


def _load_error(what: str, path: Path | str, error: Exception) -> ValueError:
    return ValueError(f"cannot load TLS {what} from {str(path)!r}: {error}")


def server_tls_context(
    cert_path: Path | str,
    key_path: Path | str,
    *,
    ca_path: Path | str | None = None,
    require_client_certificate: bool = False,
) -> ssl.SSLContext:
    """A server context presenting the certificate chain at `cert_path` (PEM) with the key at `key_path`."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(certfile=str(cert_path), keyfile=str(key_path))
    except (OSError, ssl.SSLError) as error:
        raise _load_error("certificate/key", f"{cert_path}, {key_path}", error) from None
    if require_client_certificate and ca_path is None:
        raise ValueError("requiring client certificates needs ca_path, the CAs that issue them")
    if ca_path is not None:
        try:
            context.load_verify_locations(cafile=str(ca_path))
        except (OSError, ssl.SSLError) as error:
            raise _load_error("CA certificates", ca_path, error) from None
        context.verify_mode = ssl.CERT_REQUIRED if require_client_certificate else ssl.CERT_OPTIONAL
    return context


def client_tls_context(*, ca_path: Path | str | None = None, verify: bool = True) -> ssl.SSLContext:
    """A client context for outgoing TLS connections."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    try:
        if ca_path is None:
            context.load_default_certs(ssl.Purpose.SERVER_AUTH)
        else:
            context.load_verify_locations(cafile=str(ca_path))
    except (OSError, ssl.SSLError) as error:
        raise _load_error("CA certificates", ca_path or "the system store", error) from None
    return context
