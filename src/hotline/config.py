"""Settings. The only module that reads the environment (HOTLINE_* variables)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class IceServerSetting(BaseModel):
    """A STUN or TURN server for browser media: `urls` (one or several), TURN with `username` and
    `credential`. In HOTLINE_ICE_SERVERS (JSON) a plain string stands for `{"urls": [string]}`."""

    urls: list[str] = Field(min_length=1)
    username: str | None = None
    credential: str | None = None

    @field_validator("urls", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value

    @field_validator("urls")
    @classmethod
    def _stun_or_turn(cls, value: list[str]) -> list[str]:
        for url in value:
            if url.split(":", 1)[0].lower() not in ("stun", "stuns", "turn", "turns") or ":" not in url:
                raise ValueError(f"ICE server URL {url!r} must start with stun:, stuns:, turn: or turns:")
        return value

    @model_validator(mode="after")
    def _turn_credentials(self) -> IceServerSetting:
        turn = any(url.lower().startswith("turn") for url in self.urls)
        if turn and not (self.username and self.credential):
            raise ValueError("a TURN server needs a username and a credential")
        return self


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HOTLINE_", extra="ignore")

    data_dir: Path = Path("./data")
    bind: str = "0.0.0.0"
    sip_port: int = Field(5060, ge=1, le=65535)
    sip_tls_port: int | None = Field(None, ge=1, le=65535)
    sip_ws_port: int | None = Field(None, ge=1, le=65535)
    # RFC 3261 T1 (round-trip estimate); 64*T1 is how long a request waits for an answer
    sip_t1: float = Field(0.5, gt=0, le=4)
    # OPTIONS to every registered phone this often: keeps NAT bindings open, finds phones that vanished
    sip_keepalive_seconds: float = Field(30.0, ge=1, le=3600)
    tls_cert: Path | None = None
    tls_key: Path | None = None
    http_port: int = Field(8080, ge=1, le=65535)
    rtp_port_min: int = Field(20000, ge=1024, le=65535)
    rtp_port_max: int = Field(29999, ge=1024, le=65535)
    # The address put in SDP and Contact headers when binding to a wildcard address.
    public_address: str | None = None
    database_url: str | None = None
    # Browser media (WebRTC). ICE servers, e.g. HOTLINE_ICE_SERVERS='["stun:stun.example.com:3478",
    # {"urls": "turn:turn.example.com:3478", "username": "hotline", "credential": "..."}]'; none by default.
    ice_servers: list[IceServerSetting] = Field(default_factory=list)
    # Addresses offered to browsers as host candidates; empty: every interface's address but loopback (LAN).
    ice_host_addresses: list[str] = Field(default_factory=list)
    log_level: str = "info"
    log_json: bool = True
    # An agent whose browser vanished (every CTI connection gone) is logged out after this long (AGT-13).
    cti_grace_seconds: float = Field(60.0, ge=0, le=3600)

    @field_validator("ice_servers", mode="before")
    @classmethod
    def _plain_urls(cls, value: object) -> object:
        if isinstance(value, list):
            return [{"urls": [item]} if isinstance(item, str) else item for item in value]
        return value

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
