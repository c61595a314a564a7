"""The event store's tables, as SQLAlchemy Core metadata.

The schema itself is created only by the Alembic migrations in ``migrations/``
(shipped inside the package as ``lifecycle.migrations``); these definitions
are what the migrations must agree with, which a test checks on every backend.

* ``events``: the append-only history. ``position`` is the global append
  order, ``(account, version)`` is unique (optimistic concurrency: two writers
  cannot both append version n) and ``message_id`` is unique (the
  de-duplication key). ``payload`` is the original message as JSON text.
* ``account_heads``: the latest state of every account, written in the same
  transaction as each append, so that deciding on an account costs one row.
  It is a cache of the fold of ``events``: without it the state is replayed.
* ``quarantine``: rejected input, with its code, reason, source and raw bytes,
  so that nothing sent is ever lost.
* ``snapshots``: an account's folded state every N events, tagged with the
  fingerprint of the policy that produced it; an optimisation only.
* ``outbox``: one row per accepted event to forward to Segment, inserted in the
  same transaction as the event; its ``status`` moves from ``pending`` to
  ``delivered`` (Segment answered 200) or ``parked`` (Segment refused it for
  good). ``id`` orders the rows; for one account it follows ``version``.
  ``shard`` is a stable hash of the account, for relays that split the work.
* ``outbox_pruned``: per account, how far ``relay prune`` deleted delivered rows.
* ``bulk_lock``: one row. Every store transaction on a server database locks it in
  share mode, and one that runs alone (after losing a race) locks it exclusively.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    text,
)
from sqlalchemy.dialects import mysql

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)

#: MariaDB tables compare text byte for byte (migration 0006), as SQLite and PostgreSQL
#: do: its default collation would take ``Acme``, ``acme`` and ``acme `` for one account.
BINARY_TEXT: dict[str, Any] = {
    f"{dialect}_{option}": value
    for dialect in ("mysql", "mariadb")
    for option, value in (("charset", "utf8mb4"), ("collate", "utf8mb4_nopad_bin"))
}

#: A 64-bit key that is still SQLite's rowid (an INTEGER PRIMARY KEY).
Position = BigInteger().with_variant(Integer(), "sqlite")
#: Text that holds a whole Segment message on every backend (MariaDB TEXT stops at 64 KB).
Document = Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")
#: Raw input bytes, kept exactly (a malformed line need not be UTF-8).
RawBytes = LargeBinary().with_variant(mysql.LONGBLOB(), "mysql", "mariadb")
#: Naive UTC date-times with microseconds everywhere (MariaDB rounds to seconds by default).
Instant = DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")

events = Table(
    "events",
    metadata,
    Column("position", Position, primary_key=True, autoincrement=True),
    Column("account", String(255), nullable=False),
    Column("version", Integer, nullable=False),
    Column("event", String(255), nullable=False),
    Column("message_id", String(255), nullable=True),
    Column("user_id", String(255), nullable=False),
    Column("occurred_at", Instant, nullable=True),
    Column("recorded_at", Instant, nullable=False),
    Column("payload", Document, nullable=False),
    Index(None, "account", "version", unique=True),
    Index(None, "message_id", unique=True),
    Index(None, "recorded_at"),
    **BINARY_TEXT,
)

account_heads = Table(
    "account_heads",
    metadata,
    Column("account", String(255), primary_key=True),
    Column("version", Integer, nullable=False),
    Column("status", String(64), nullable=False),
    Column("state", Document, nullable=False),
    Column("updated_at", Instant, nullable=False),
    Index(None, "status"),
    **BINARY_TEXT,
)

quarantine = Table(
    "quarantine",
    metadata,
    Column("id", Position, primary_key=True, autoincrement=True),
    Column("received_at", Instant, nullable=False),
    Column("source", String(1024), nullable=False),
    Column("line", Integer, nullable=True),
    Column("batch_index", Integer, nullable=True),
    Column("code", String(64), nullable=False),
    Column("reason", Text, nullable=False),
    Column("account", String(255), nullable=True),
    Column("message_id", String(255), nullable=True),
    Column("event", String(255), nullable=True),
    Column("raw", RawBytes, nullable=False),
    Column("digest", String(64), nullable=True),
    Index(None, "code"),
    Index(None, "account"),
    Index(None, "digest", unique=True),
    # Whether a file was judged before (see writer.Repeats): a look-up (migration 0007).
    Index(None, "source", mysql_length={"source": 255}, mariadb_length={"source": 255}),
    # A retry releases rows by id: an id SQLite handed out again after the newest row was
    # released would name another rejection (migration 0008).
    sqlite_autoincrement=True,
    **BINARY_TEXT,
)

snapshots = Table(
    "snapshots",
    metadata,
    Column("account", String(255), primary_key=True),
    Column("policy", String(64), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("position", Position, nullable=False),
    Column("recorded_at", Instant, nullable=False),
    Column("state", Document, nullable=False),
    Column("created_at", Instant, nullable=False),
    **BINARY_TEXT,
)

_PENDING_ROWS = text("status = 'pending'")

outbox = Table(
    "outbox",
    metadata,
    Column("id", Position, primary_key=True, autoincrement=True),
    Column("account", String(255), nullable=False),
    Column("version", Integer, nullable=False),
    Column("message_id", String(255), nullable=False),
    Column("shard", Integer, nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("created_at", Instant, nullable=False),
    Column("delivered_at", Instant, nullable=True),
    Column("last_error", Text, nullable=True),
    Index(None, "account", "version", unique=True),
    # Only pending rows where the backend allows it (SQLite, PostgreSQL): marking a row
    # delivered then removes an index entry instead of moving it.
    Index(None, "status", "id", sqlite_where=_PENDING_ROWS, postgresql_where=_PENDING_ROWS),
    # A relay marks the rows it sent by id: an id SQLite handed out again after a prune
    # deleted the newest rows would name an event never sent (migration 0008).
    sqlite_autoincrement=True,
    **BINARY_TEXT,
)

outbox_pruned = Table(
    "outbox_pruned",
    metadata,
    # Per account: every event up to ``version`` is settled (delivered, or never to be
    # queued), and its outbox rows were deleted; ``events`` counts the rows deleted.
    Column("account", String(255), primary_key=True),
    Column("version", Integer, nullable=False),
    Column("events", BigInteger, nullable=False),
    Column("pruned_at", Instant, nullable=False),
    **BINARY_TEXT,
)

bulk_lock = Table(
    "bulk_lock",
    metadata,
    # One row (id 1), created by the migration: what matters is who holds its lock.
    Column("id", Integer, primary_key=True, autoincrement=False),
)
