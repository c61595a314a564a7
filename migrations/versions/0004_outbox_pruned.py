"""Pruned outbox: how far each account's delivered outbox rows were deleted.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

Instant = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def upgrade() -> None:
    op.create_table(
        "outbox_pruned",
        sa.Column("account", sa.String(255), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("events", sa.BigInteger(), nullable=False),
        sa.Column("pruned_at", Instant, nullable=False),
        sa.PrimaryKeyConstraint("account", name="pk_outbox_pruned"),
    )


def downgrade() -> None:
    # Without this record, `relay backfill` would queue the pruned events again.
    op.drop_table("outbox_pruned")
