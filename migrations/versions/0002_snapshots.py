"""Snapshots: an account's state every N events, per policy fingerprint.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

Position = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Document = sa.Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")
Instant = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def upgrade() -> None:
    op.create_table(
        "snapshots",
        sa.Column("account", sa.String(255), nullable=False),
        sa.Column("policy", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("position", Position, nullable=False),
        sa.Column("recorded_at", Instant, nullable=False),
        sa.Column("state", Document, nullable=False),
        sa.Column("created_at", Instant, nullable=False),
        sa.PrimaryKeyConstraint("account", "policy", "version", name="pk_snapshots"),
    )


def downgrade() -> None:
    op.drop_table("snapshots")
