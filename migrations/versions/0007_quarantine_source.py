"""Quarantine by source: an index, so that finding whether a file was judged before is a
look-up, not a scan of the whole quarantine.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # MariaDB indexes at most 3,072 bytes of a key: the first 255 characters of the name.
    # A `mariadb://` URL is SQLAlchemy's "mariadb" dialect, which reads only `mariadb_length`:
    # without it the index took the whole column, cut by the server to 768 characters.
    op.create_index(
        "ix_quarantine_source",
        "quarantine",
        ["source"],
        mysql_length={"source": 255},
        mariadb_length={"source": 255},
    )


def downgrade() -> None:
    op.drop_index("ix_quarantine_source", table_name="quarantine")
