"""Platform tables for tenants and their numbers (TEN-01, TEN-03, TEL-05).

- `tenants`: id (slug), name, IANA time zone, status (`active`, `suspended`, `closed`), licences
  (concurrent calls, seats).
- `numbers`: a DID, 400/800 number, E.164 number or short code, owned by exactly one tenant (the number is
  the primary key, so it is unique across tenants) and mapped to a flow, queue, extension or forward.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final, Literal

from sqlalchemy import ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from hotline.storage.schema import PlatformBase, UtcDateTime

TenantStatus = Literal["active", "suspended", "closed"]
TargetType = Literal["flow", "queue", "extension", "forward", "echo", "readback", "silence"]
NumberKind = Literal["e164", "400", "did", "short"]

TENANT_STATUSES: Final = ("active", "suspended", "closed")
TARGET_TYPES: Final = ("flow", "queue", "extension", "forward", "echo", "readback", "silence")


class TenantRecord(PlatformBase):
    __tablename__ = "tenants"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    time_zone: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    concurrent_call_limit: Mapped[int] = mapped_column(Integer)
    seat_limit: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())
    # Phones' requests find their tenant by this domain (platform migration p0002).
    sip_domain: Mapped[str | None] = mapped_column(String(253), unique=True, index=True, default=None)


class NumberRecord(PlatformBase):
    __tablename__ = "numbers"

    number: Mapped[str] = mapped_column(String(32), primary_key=True)
    kind: Mapped[str] = mapped_column(String(8))
    tenant_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("tenants.id", ondelete="RESTRICT"), index=True
    )
    target_type: Mapped[str] = mapped_column(String(16))
    target: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
