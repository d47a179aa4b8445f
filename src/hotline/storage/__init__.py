"""Storage: engines and per-tenant sessions, migrations, and the event log.

- `Storage(data_dir, database_url=None)`: `platform_session()`, `tenant_session(tenant_id)`, `migrate()`,
  `create_tenant_database(tenant_id)`, `tenant_databases()`, `tenant_files_dir(tenant_id)`, `close()`.
- `EventLog(storage, bus)`: `append(event)`, `append_many(events)`, `read(tenant, after_seq, limit)`,
  `replay(tenant, after_seq)`, `last_seq(tenant)`, `close()`.
- `PlatformBase`, `TenantBase`: declarative bases for platform and tenant tables; `UtcDateTime`.
"""

from hotline.storage.engines import (
    InvalidTenantId,
    Storage,
    StorageError,
    UnknownTenant,
    validate_tenant_id,
)
from hotline.storage.eventlog import EventLog, EventLogClosed, events_table
from hotline.storage.schema import PlatformBase, TenantBase, UtcDateTime

__all__ = [
    "EventLog",
    "EventLogClosed",
    "InvalidTenantId",
    "PlatformBase",
    "Storage",
    "StorageError",
    "TenantBase",
    "UnknownTenant",
    "UtcDateTime",
    "events_table",
    "validate_tenant_id",
]
