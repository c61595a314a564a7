"""Quarantine and outbox ids are never reused on SQLite.

SQLite gives a new row of an ``INTEGER PRIMARY KEY`` the largest id plus one, so the
id of the newest row, once deleted, went to the next row. Both tables are written by
id by a process that read the rows earlier:

* a retry releases the quarantine rows it judged by their ids. Once another run had
  released the newest of them, the next rejection took its id, and the first retry's
  release deleted that new rejection in place of the row it had read: a message lost
  from the quarantine;
* a relay marks the outbox rows it sent by their ids. With a second relay on the file
  and a prune deleting the rows it had delivered, new events took those ids, and the
  first relay's answer marked them delivered although they were never sent.

With ``AUTOINCREMENT`` SQLite never hands out an id twice, as PostgreSQL's sequences and
MariaDB's counters already do. Both tables are rebuilt with their rows and indexes;
other databases are unchanged.

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


TABLES = ("quarantine", "outbox")


def _rebuild(autoincrement: bool) -> None:
    if op.get_context().dialect.name != "sqlite":
        return
    for table in TABLES:
        with op.batch_alter_table(
            table, recreate="always", table_kwargs={"sqlite_autoincrement": autoincrement}
        ):
            pass


def upgrade() -> None:
    _rebuild(autoincrement=True)


def downgrade() -> None:
    _rebuild(autoincrement=False)
