"""Each tenant's SIP domain, by which phones' requests find their tenant (TEL-08, TEN-01).

Revision ID: p0002
Revises: p0001
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "p0002"
down_revision = "p0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("tenants", sa.Column("sip_domain", sa.String(253), nullable=True))
    op.create_index("ix_tenants_sip_domain", "tenants", ["sip_domain"], unique=True)


def downgrade() -> None:
    op.drop_index("ix_tenants_sip_domain", table_name="tenants")
    with op.batch_alter_table("tenants") as batch:
        batch.drop_column("sip_domain")
