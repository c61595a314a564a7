"""``--sort-by timestamp``: put each account's messages in ``timestamp`` order before judging.

Exports from a warehouse are rarely in arrival order. Sorting is per account
and stable: the positions an account's timestamped messages occupy in the
input are refilled with those same messages in timestamp order (ties keep
their input order). Messages without a valid timestamp, and messages that
name no account (malformed, ignored), keep their place. The interleaving of
accounts is left as it was.

The input can be larger than memory: messages are spilled to a temporary
SQLite database next to the other temporary files, which sorts them on disk
(its page cache is a few megabytes). The cost is disk space about the size of
the input, and one extra write and read of it.
"""

from __future__ import annotations

import sqlite3
import tempfile
from collections.abc import Iterable, Iterator
from datetime import UTC
from pathlib import Path

import orjson

from lifecycle.envelope import group_id_of
from lifecycle.messages import Item, Malformed
from lifecycle.reader import InputItem, InputLine, items_of
from lifecycle.spec import parse_datetime, past_microseconds, storable_instant

_SCHEMA = """
CREATE TABLE items (
    slot INTEGER PRIMARY KEY, account TEXT, ts TEXT,
    file TEXT NOT NULL, line INTEGER NOT NULL, idx INTEGER NOT NULL,
    raw BLOB NOT NULL, whole INTEGER NOT NULL, malformed TEXT, shown TEXT NOT NULL
)
"""

_ORDER = """
WITH timed AS (SELECT slot, account, ts FROM items WHERE account IS NOT NULL AND ts IS NOT NULL),
places AS (SELECT slot, account, ROW_NUMBER() OVER (PARTITION BY account ORDER BY slot) AS k
           FROM timed),
movers AS (SELECT slot AS source, account,
                  ROW_NUMBER() OVER (PARTITION BY account ORDER BY ts, slot) AS k
           FROM timed),
moves AS (SELECT places.slot AS place, movers.source AS source
          FROM places JOIN movers ON places.account = movers.account AND places.k = movers.k
          UNION ALL
          SELECT slot, slot FROM items WHERE account IS NULL OR ts IS NULL)
SELECT i.file, i.line, i.idx, i.raw, i.whole, i.malformed, i.shown
FROM moves JOIN items AS i ON i.slot = moves.source
ORDER BY moves.place
"""


def sort_key(timestamp: object) -> str | None:
    """A string that sorts like the instant (UTC, to the last digit of its fraction), or
    None for no valid timestamp."""
    if not isinstance(timestamp, str):
        return None
    moment = parse_datetime(timestamp)
    if moment is None or not storable_instant(moment):
        return None  # judged invalid_timestamp where it stands
    # Python keeps microseconds: the digits after them (Go and Java clients send
    # nanoseconds) follow, without trailing zeros, so that equal instants tie.
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + past_microseconds(timestamp)


#: SQLite's primary result codes for a disk that is full, read-only or failing, or a file
#: that cannot be made: the environment, as an OSError would be, not a bug.
_DISK_ERRORS = frozenset(
    {
        sqlite3.SQLITE_PERM,
        sqlite3.SQLITE_READONLY,
        sqlite3.SQLITE_IOERR,
        sqlite3.SQLITE_FULL,
        sqlite3.SQLITE_CANTOPEN,
    }
)


def sorted_by_timestamp(
    lines: Iterable[InputLine], workdir: str | None = None
) -> Iterator[InputItem]:
    """The messages of ``lines``, each account's in timestamp order (see the module docstring).

    Raises :class:`OSError` naming the spill file when the temporary directory is full
    or cannot be written, as any other write would: SQLite's own error said "rejections
    found" (exit 1) with a traceback on the command line.
    """
    with tempfile.TemporaryDirectory(prefix="lifecycle-sort-", dir=workdir) as tmp:
        path = Path(tmp) / "sort.db"
        try:
            yield from _sorted(path, lines)
        except sqlite3.Error as exc:
            if getattr(exc, "sqlite_errorcode", 0) & 0xFF not in _DISK_ERRORS:
                raise
            raise OSError(None, f"sorting by timestamp: {exc}", str(path)) from exc


def _sorted(path: Path, lines: Iterable[InputLine]) -> Iterator[InputItem]:
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=OFF")
        db.execute("PRAGMA synchronous=OFF")
        db.execute(_SCHEMA)
        rereadable = _spill(db, lines)
        for file, line, index, raw, whole, reason, shown in db.execute(_ORDER):
            item: Item = Malformed(reason) if reason is not None else orjson.loads(raw)
            yield InputItem(file, line, index, item, raw, bool(whole), rereadable[file], shown)
    finally:
        db.close()


def _spill(db: sqlite3.Connection, lines: Iterable[InputLine]) -> dict[str, bool]:
    """Write the items of ``lines`` to the spill; returns whether each file is rereadable."""
    rereadable: dict[str, bool] = {}
    insert = (
        "INSERT INTO items (account, ts, file, line, idx, raw, whole, malformed, shown)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
    )
    batch: list[tuple[object, ...]] = []
    db.execute("BEGIN")
    for line in lines:
        rereadable[line.file] = line.rereadable
        for it in items_of(line):
            where = (it.file, it.line, it.index, it.raw, it.whole_line)
            if isinstance(it.item, Malformed):
                batch.append((None, None, *where, it.item.reason, it.shown))
            else:
                account = group_id_of(it.item)
                key = sort_key(it.item.get("timestamp")) if account is not None else None
                batch.append((account, key, *where, None, it.shown))
        if len(batch) >= 10_000:
            db.executemany(insert, batch)
            batch.clear()
    db.executemany(insert, batch)
    db.execute("COMMIT")
    return rereadable
