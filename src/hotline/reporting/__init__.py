"""Reporting: projections of the event log (principle 4).

`CdrProjection(storage, event_log)`: `apply(events)`, `catch_up(tenant)`, `rebuild(tenant)`, `start(bus)`,
`get_cdr`, `list_cdrs`, `list_legs`. `reconcile_unfinished_calls(event_log, tenant)` closes calls a crash
left open.
"""

from hotline.reporting.cdr import (
    OUTCOMES,
    CdrProjection,
    cdr_legs_table,
    cdr_table,
    reconcile_unfinished_calls,
)

__all__ = ["OUTCOMES", "CdrProjection", "cdr_legs_table", "cdr_table", "reconcile_unfinished_calls"]
