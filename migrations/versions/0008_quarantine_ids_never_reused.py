"""Quarantine ids are never reused on SQLite.

A retry releases the quarantine rows it judged by their ids. SQLite gives a new row of
an ``INTEGER PRIMARY KEY`` the largest id plus one, so once another run had released the
newest row, the next rejection took its id, and the first run's release deleted that
new rejection in place of the row it had read: a message lost from the quarantine.
With ``AUTOINCREMENT`` SQLite never hands out an id twice, as PostgreSQL's sequences and
MariaDB's counters already do. The table is rebuilt with its rows; other databases are
unchanged.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def _rebuild(autoincrement: bool) -> None:
    if op.get_context().dialect.name != "sqlite":
        return
    with op.batch_alter_table(
        "quarantine", recreate="always", table_kwargs={"sqlite_autoincrement": autoincrement}
    ):
        pass


def upgrade() -> None:
    _rebuild(autoincrement=True)


def downgrade() -> None:
    _rebuild(autoincrement=False)
