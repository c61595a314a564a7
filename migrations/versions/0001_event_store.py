"""Event store: events, account heads and quarantine.

Revision ID: 0001
Revises:
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

Position = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Document = sa.Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")
RawBytes = sa.LargeBinary().with_variant(mysql.LONGBLOB(), "mysql", "mariadb")
Instant = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def upgrade() -> None:
    op.create_table(
        "events",
        sa.Column("position", Position, autoincrement=True, nullable=False),
        sa.Column("account", sa.String(255), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("event", sa.String(255), nullable=False),
        sa.Column("message_id", sa.String(255), nullable=True),
        sa.Column("user_id", sa.String(255), nullable=False),
        sa.Column("occurred_at", Instant, nullable=True),
        sa.Column("recorded_at", Instant, nullable=False),
        sa.Column("payload", Document, nullable=False),
        sa.PrimaryKeyConstraint("position", name="pk_events"),
    )
    op.create_index("ix_events_account_version", "events", ["account", "version"], unique=True)
    op.create_index("ix_events_message_id", "events", ["message_id"], unique=True)
    op.create_index("ix_events_recorded_at", "events", ["recorded_at"])

    op.create_table(
        "account_heads",
        sa.Column("account", sa.String(255), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(64), nullable=False),
        sa.Column("state", Document, nullable=False),
        sa.Column("updated_at", Instant, nullable=False),
        sa.PrimaryKeyConstraint("account", name="pk_account_heads"),
    )
    op.create_index("ix_account_heads_status", "account_heads", ["status"])

    op.create_table(
        "quarantine",
        sa.Column("id", Position, autoincrement=True, nullable=False),
        sa.Column("received_at", Instant, nullable=False),
        sa.Column("source", sa.String(1024), nullable=False),
        sa.Column("line", sa.Integer(), nullable=True),
        sa.Column("batch_index", sa.Integer(), nullable=True),
        sa.Column("code", sa.String(64), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("account", sa.String(255), nullable=True),
        sa.Column("message_id", sa.String(255), nullable=True),
        sa.Column("event", sa.String(255), nullable=True),
        sa.Column("raw", RawBytes, nullable=False),
        sa.Column("digest", sa.String(64), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_quarantine"),
    )
    op.create_index("ix_quarantine_code", "quarantine", ["code"])
    op.create_index("ix_quarantine_account", "quarantine", ["account"])
    op.create_index("ix_quarantine_digest", "quarantine", ["digest"], unique=True)


def downgrade() -> None:
    op.drop_table("quarantine")
    op.drop_table("account_heads")
    op.drop_table("events")
