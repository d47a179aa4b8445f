"""Tenancy: tenants and their numbers in the platform database.

`TenancyService(storage)`: `create_tenant(...)`, `get_tenant`, `list_tenants`, `set_status`, `set_licence`,
`assign_number(number, tenant, target_type, target)`, `release_number`, `numbers_of`,
`lookup_number(dnis) -> NumberRoute | None`. `normalize_number(raw)` gives a number's canonical form.
"""

from hotline.tenancy.models import NumberRecord, TenantRecord
from hotline.tenancy.service import (
    InvalidNumber,
    NumberNotFound,
    NumberRoute,
    NumberTaken,
    TenancyError,
    TenancyService,
    Tenant,
    TenantExists,
    TenantNotFound,
    normalize_number,
)

__all__ = [
    "InvalidNumber",
    "NumberNotFound",
    "NumberRecord",
    "NumberRoute",
    "NumberTaken",
    "TenancyError",
    "TenancyService",
    "Tenant",
    "TenantExists",
    "TenantNotFound",
    "TenantRecord",
    "normalize_number",
]
