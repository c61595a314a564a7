"""On MariaDB, the quarantine's ``reason`` and the outbox's ``last_error`` are ``TEXT``.

Migrations 0001 to 0005 create their tables in the database's default character set.
Where that was not utf8mb4 (latin1, MariaDB's own default before 11.6, or utf8mb3),
0006's ``CONVERT TO CHARACTER SET utf8mb4`` widened every ``TEXT`` column to
``MEDIUMTEXT``, so that it held as many characters as before: the store then differed
from its table definitions, and ``lifecycle db check`` failed on a store just migrated.
Both columns hold text lifecycle cuts short (a reason, an answer of Segment's), so they
go back to ``TEXT``. A column that is ``TEXT`` already, and every other database, is left
as it is; going back to 0008 changes nothing.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-08
"""

from __future__ import annotations

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


#: The columns 0006 could widen, and whether they take NULL.
TEXT_COLUMNS = (("quarantine", "reason", False), ("outbox", "last_error", True))


def upgrade() -> None:
    if op.get_context().dialect.name not in ("mysql", "mariadb"):
        return
    widened = op.get_bind().exec_driver_sql(
        "SELECT table_name, column_name FROM information_schema.columns"
        " WHERE table_schema = DATABASE() AND data_type = 'mediumtext'"
    )
    found = {(table.lower(), column.lower()) for table, column in widened}
    for table, column, nullable in TEXT_COLUMNS:
        if (table, column) in found:
            null = "NULL" if nullable else "NOT NULL"
            op.execute(f"ALTER TABLE {table} MODIFY {column} TEXT {null}")


def downgrade() -> None:
    """Nothing to undo: ``TEXT`` is what 0006 meant them to be."""
