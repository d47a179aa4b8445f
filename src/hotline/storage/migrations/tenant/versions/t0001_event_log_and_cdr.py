"""The event log, projection watermarks, CDRs and leg details (RPT-01, FM-09).

Revision ID: t0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "t0001"
down_revision = None
branch_labels = None
depends_on = None

# INTEGER PRIMARY KEY is SQLite's 64-bit rowid; PostgreSQL needs BIGINT for long-lived logs.
BigInt = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Timestamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "events",
        sa.Column("seq", BigInt, nullable=False, autoincrement=False),
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("call_id", sa.String(64), nullable=True),
        sa.Column("occurred_at", Timestamp, nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_events"),
        sa.UniqueConstraint("id", name="uq_events_id"),
    )
    op.create_index("ix_events_type_call_id", "events", ["type", "call_id"])
    op.create_index("ix_events_call_id_seq", "events", ["call_id", "seq"])

    op.create_table(
        "projection_state",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("last_seq", BigInt, nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_projection_state"),
    )

    op.create_table(
        "cdr",
        sa.Column("call_id", sa.String(64), nullable=False),
        sa.Column("first_seq", BigInt, nullable=False),
        sa.Column("last_seq", BigInt, nullable=False),
        sa.Column("direction", sa.String(16)),
        sa.Column("ani", sa.String(64)),
        sa.Column("withheld", sa.Boolean(), nullable=False),
        sa.Column("dnis", sa.String(64)),
        sa.Column("region", sa.String(64)),
        sa.Column("trunk", sa.String(128)),
        sa.Column("entry_target", sa.String(128)),
        sa.Column("started_at", Timestamp),
        sa.Column("system_answered_at", Timestamp),
        sa.Column("ivr_started_at", Timestamp),
        sa.Column("ivr_seconds", sa.Float(), nullable=False),
        sa.Column("ivr_last_node", sa.String(64)),
        sa.Column("ivr_self_served", sa.Boolean(), nullable=False),
        sa.Column("queued_at", Timestamp),
        sa.Column("first_queue_id", sa.String(64)),
        sa.Column("queue_id", sa.String(64)),
        sa.Column("overflowed", sa.Boolean(), nullable=False),
        sa.Column("offered_at", Timestamp),
        sa.Column("offer_count", sa.Integer(), nullable=False),
        sa.Column("offer_failures", sa.Integer(), nullable=False),
        sa.Column("agent_answered_at", Timestamp),
        sa.Column("agent_id", sa.String(64)),
        sa.Column("last_agent_id", sa.String(64)),
        sa.Column("wait_seconds", sa.Float()),
        sa.Column("answered_within_sl", sa.Boolean()),
        sa.Column("connected_seconds", sa.Float(), nullable=False),
        sa.Column("hold_seconds", sa.Float(), nullable=False),
        sa.Column("hold_count", sa.Integer(), nullable=False),
        sa.Column("talk_seconds", sa.Float(), nullable=False),
        sa.Column("transfer_count", sa.Integer(), nullable=False),
        sa.Column("wrapup_seconds", sa.Float(), nullable=False),
        sa.Column("disposition", sa.String(128)),
        sa.Column("wrapup_fields", sa.JSON(), nullable=False),
        sa.Column("ended_at", Timestamp),
        sa.Column("duration_seconds", sa.Float()),
        sa.Column("hangup_cause", sa.String(64)),
        sa.Column("hangup_side", sa.String(16)),
        sa.Column("outcome", sa.String(16)),
        sa.Column("recording_id", sa.String(64)),
        sa.Column("recording_path", sa.String(512)),
        sa.Column("recording_format", sa.String(16)),
        sa.Column("recording_seconds", sa.Float()),
        sa.Column("call_data", sa.JSON(), nullable=False),
        sa.Column("working", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("call_id", name="pk_cdr"),
    )
    op.create_index("ix_cdr_started_at", "cdr", ["started_at"])
    op.create_index("ix_cdr_queued_at", "cdr", ["queued_at"])
    op.create_index("ix_cdr_agent_id", "cdr", ["agent_id"])

    op.create_table(
        "cdr_legs",
        sa.Column("leg_id", sa.String(64), nullable=False),
        sa.Column("call_id", sa.String(64), nullable=False),
        sa.Column("first_seq", BigInt, nullable=False),
        sa.Column("last_seq", BigInt, nullable=False),
        sa.Column("kind", sa.String(16)),
        sa.Column("direction", sa.String(16)),
        sa.Column("endpoint", sa.String(256)),
        sa.Column("agent_id", sa.String(64)),
        sa.Column("queue_id", sa.String(64)),
        sa.Column("created_at", Timestamp),
        sa.Column("answered_at", Timestamp),
        sa.Column("ended_at", Timestamp),
        sa.Column("ring_seconds", sa.Float()),
        sa.Column("connected_seconds", sa.Float()),
        sa.Column("offer_result", sa.String(16)),
        sa.Column("end_cause", sa.String(64)),
        sa.Column("sip_status", sa.Integer()),
        sa.Column("recording_id", sa.String(64)),
        sa.Column("recording_path", sa.String(512)),
        sa.Column("recording_format", sa.String(16)),
        sa.Column("recording_seconds", sa.Float()),
        sa.Column("working", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("leg_id", name="pk_cdr_legs"),
    )
    op.create_index("ix_cdr_legs_call_id", "cdr_legs", ["call_id"])


def downgrade() -> None:
    op.drop_table("cdr_legs")
    op.drop_table("cdr")
    op.drop_table("projection_state")
    op.drop_table("events")
