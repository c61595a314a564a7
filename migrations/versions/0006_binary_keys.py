"""Binary collation on MariaDB: keys compare byte for byte, as on SQLite and PostgreSQL.

MariaDB's default collation (``utf8mb4_general_ci``) compares case-insensitively and
ignores accents and trailing spaces: ``Acme``, ``acme``, ``acme `` and ``acmé`` were one
account to its indexes and look-ups, and two different ``messageId`` values could be
one. Each table is rebuilt with a binary collation that does not pad either
(``utf8mb4_nopad_bin``; MySQL's is ``utf8mb4_0900_bin``). It can only tell more keys
apart, so no stored row conflicts with another afterwards. Other databases are unchanged.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

TABLES = ("events", "account_heads", "quarantine", "snapshots", "outbox", "outbox_pruned")


def _convert(binary: bool) -> None:
    dialect = op.get_context().dialect
    if dialect.name not in ("mysql", "mariadb"):
        return
    collation = ""
    if binary:
        mariadb = getattr(dialect, "is_mariadb", dialect.name == "mariadb")
        collation = " COLLATE " + ("utf8mb4_nopad_bin" if mariadb else "utf8mb4_0900_bin")
    for table in TABLES:
        op.execute(f"ALTER TABLE {table} CONVERT TO CHARACTER SET utf8mb4{collation}")


def upgrade() -> None:
    _convert(binary=True)


def downgrade() -> None:
    # Back to the character set's default collation, the one the tables were created
    # with. Keys that differ only in case, accents or trailing spaces then collide again.
    _convert(binary=False)
