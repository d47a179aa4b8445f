"""Tenant configuration as data: objects, versioned IVR flows, the configuration revision (FM-14, IVR-15).

Revision ID: t0002
Revises: t0001
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "t0002"
down_revision = "t0001"
branch_labels = None
depends_on = None

BigInt = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Timestamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "config_objects",
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("key", sa.String(128), nullable=False),
        sa.Column("document", sa.JSON(), nullable=False),
        sa.Column("updated_at", Timestamp, nullable=False),
        sa.PrimaryKeyConstraint("kind", "key", name="pk_config_objects"),
    )
    op.create_table(
        "flow_versions",
        sa.Column("flow_id", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False, autoincrement=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("document", sa.JSON(), nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("published_at", Timestamp, nullable=True),
        sa.PrimaryKeyConstraint("flow_id", "version", name="pk_flow_versions"),
    )
    op.create_index("ix_flow_versions_status", "flow_versions", ["status"])
    op.create_table(
        "config_revision",
        sa.Column("id", sa.Integer(), nullable=False, autoincrement=False),
        sa.Column("revision", BigInt, nullable=False),
        sa.Column("updated_at", Timestamp, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_config_revision"),
    )


def downgrade() -> None:
    op.drop_table("config_revision")
    op.drop_index("ix_flow_versions_status", table_name="flow_versions")
    op.drop_table("flow_versions")
    op.drop_table("config_objects")
