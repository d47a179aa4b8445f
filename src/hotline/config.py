"""Settings. The only module that reads the environment (HOTLINE_* variables)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HOTLINE_", extra="ignore")

    data_dir: Path = Path("./data")
    bind: str = "0.0.0.0"
    sip_port: int = Field(5060, ge=1, le=65535)
    sip_tls_port: int | None = Field(None, ge=1, le=65535)
    sip_ws_port: int | None = Field(None, ge=1, le=65535)
    tls_cert: Path | None = None
    tls_key: Path | None = None
    http_port: int = Field(8080, ge=1, le=65535)
    rtp_port_min: int = Field(20000, ge=1024, le=65535)
    rtp_port_max: int = Field(29999, ge=1024, le=65535)
    # The address put in SDP and Contact headers when binding to a wildcard address.
    public_address: str | None = None
    database_url: str | None = None
    log_level: str = "info"
    log_json: bool = True

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        value = value.lower()
        if value not in {"debug", "info", "warning", "error"}:
            raise ValueError("log level must be debug, info, warning or error")
        return value


def parse_port_range(text: str) -> tuple[int, int]:
    """Parse 'A-B' into two ports, with a sentence for the user when it is wrong."""
    try:
        low_text, high_text = text.split("-", 1)
        low, high = int(low_text), int(high_text)
    except ValueError:
        raise ValueError(f"port range {text!r} must look like 20000-29999") from None
    if not (1024 <= low <= high <= 65535):
        raise ValueError(f"port range {text!r} must lie within 1024-65535, low end first")
    if (high - low + 1) < 2:
        raise ValueError(f"port range {text!r} needs at least two ports (RTP and RTCP)")
    return low, high
