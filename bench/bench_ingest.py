"""Benchmark: `lifecycle ingest` against raw-driver floors measured in the same run.

Three comparisons, each on the same generated history:

* SQLite bulk: `lifecycle ingest` (its default: about 100,000 messages per
  transaction) against plain ``sqlite3`` inserting the same rows with the same
  guarantees (unique messageId, unique (account, version)), 1,000 rows per
  transaction, WAL.
* SQLite live: ``Lifecycle.submit`` one message per transaction against plain
  ``sqlite3`` committing one row per transaction.
* PostgreSQL bulk: `lifecycle ingest` against psycopg ``COPY`` of the same rows into a
  table with the same unique indexes.

Each SQLite floor runs twice: with SQLite's own settings besides WAL (a full sync per
commit, a 2 MB page cache), and with the settings lifecycle gives its connections (the
same sync, a 256 MB cache; ``lifecycle.store.engine.SQLITE_PRAGMAS``). The second is the
like-for-like one: the only difference left is lifecycle's own work.

The floors parse the JSON and number the versions themselves, so both sides do the
same reading; lifecycle also judges every event. Results are printed and written to
``bench/out/ingest-EVENTS-ACCOUNTS-SEED.json``.

    python bench/bench_ingest.py                       # 1M events, 20k accounts
    python bench/bench_ingest.py --events 100000 --accounts 2000
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ is not a package

from common import (
    add_history_arguments,
    add_postgres_argument,
    history_file,
    lifecycle_command,
    measure,
    positive,
    results_file,
)

from lifecycle.store.engine import SQLITE_PRAGMAS

FLOOR_SCHEMA = """
CREATE TABLE events (
    position INTEGER PRIMARY KEY, account TEXT NOT NULL, version INTEGER NOT NULL,
    event TEXT NOT NULL, message_id TEXT, user_id TEXT NOT NULL, occurred_at TEXT,
    recorded_at TEXT NOT NULL, payload TEXT NOT NULL);
CREATE UNIQUE INDEX ix_account_version ON events (account, version);
CREATE UNIQUE INDEX ix_message_id ON events (message_id);
"""

PG_SCHEMA = """
CREATE TABLE events (
    position BIGSERIAL PRIMARY KEY, account VARCHAR(255) NOT NULL, version INTEGER NOT NULL,
    event VARCHAR(255) NOT NULL, message_id VARCHAR(255), user_id VARCHAR(255) NOT NULL,
    occurred_at TIMESTAMP, recorded_at TIMESTAMP NOT NULL, payload TEXT NOT NULL);
CREATE UNIQUE INDEX ix_account_version ON events (account, version);
CREATE UNIQUE INDEX ix_message_id ON events (message_id);
"""


def rows(path: Path, limit: int | None = None) -> Iterator[tuple[Any, ...]]:
    """The events rows of a history file: parse, number versions per account."""
    versions: dict[str, int] = {}
    recorded = time.strftime("%Y-%m-%d %H:%M:%S")
    with path.open("rb") as handle:
        for n, line in enumerate(handle):
            if limit is not None and n >= limit:
                return
            m = orjson.loads(line)
            account = m["context"]["groupId"]
            version = versions[account] = versions.get(account, 0) + 1
            yield (account, version, m["event"], m.get("messageId"), m["userId"],
                   m.get("timestamp"), recorded, line.rstrip(b"\n").decode())  # fmt: skip


FLOOR_INSERT = (
    "INSERT INTO events (account, version, event, message_id, user_id, occurred_at,"
    " recorded_at, payload) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)


#: The floors' settings: SQLite's own (WAL aside), and lifecycle's.
FLOOR_SETTINGS = {"sqlite_defaults": ("PRAGMA journal_mode=WAL",), "lifecycle": SQLITE_PRAGMAS}


def floor_database(db: Path, settings: str) -> sqlite3.Connection:
    """A new plain sqlite3 database with the floor's table (part of the timing)."""
    con = sqlite3.connect(db, isolation_level=None)
    for pragma in FLOOR_SETTINGS[settings]:
        con.execute(pragma)
    con.executescript(FLOOR_SCHEMA)
    return con


def sqlite_floor_bulk(path: Path, db: Path, settings: str) -> float:
    """Plain sqlite3, 1,000 rows per transaction, WAL."""
    start = time.perf_counter()
    con = floor_database(db, settings)
    batch: list[tuple[Any, ...]] = []
    for row in rows(path):
        batch.append(row)
        if len(batch) == 1000:
            con.execute("BEGIN")
            con.executemany(FLOOR_INSERT, batch)
            con.execute("COMMIT")
            batch.clear()
    if batch:
        con.execute("BEGIN")
        con.executemany(FLOOR_INSERT, batch)
        con.execute("COMMIT")
    con.close()
    return time.perf_counter() - start


def sqlite_floor_live(path: Path, db: Path, limit: int, settings: str) -> float:
    """Plain sqlite3, one row per transaction, WAL."""
    start = time.perf_counter()
    con = floor_database(db, settings)
    for row in rows(path, limit):
        con.execute("BEGIN")
        con.execute(FLOOR_INSERT, row)
        con.execute("COMMIT")
    con.close()
    return time.perf_counter() - start


def lifecycle_live(path: Path, url: str, limit: int) -> float:
    """``Lifecycle.submit`` for each message: one transaction per event."""
    from lifecycle.service import Lifecycle

    store = Lifecycle(url)
    start = time.perf_counter()
    with path.open("rb") as handle:
        for n, line in enumerate(handle):
            if n >= limit:
                break
            store.submit(orjson.loads(line))
    elapsed = time.perf_counter() - start
    store.close()
    return elapsed


def run_ingest(path: Path, url: str, cwd: Path) -> tuple[float, float]:
    """`lifecycle ingest` in a child process: (seconds, peak RSS in MB)."""
    run = measure([*lifecycle_command(), "ingest", str(path), "--db", url], cwd=cwd)
    if run.exit_code not in (0, 1):
        raise SystemExit(f"ingest failed with exit code {run.exit_code}")
    return run.wall_s, run.peak_mb


@contextmanager
def postgres_database(admin_url: str) -> Iterator[str]:
    """A fresh PostgreSQL database for one measurement, dropped afterwards."""
    import psycopg

    name = f"lifecycle_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    try:
        yield admin_url.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE {name} WITH (FORCE)")


def postgres_floor(path: Path, url: str) -> float:
    """psycopg COPY of every row, in one transaction, into the same indexed table."""
    import psycopg

    start = time.perf_counter()
    with psycopg.connect(url) as con:
        con.execute(PG_SCHEMA)
        with (
            con.cursor() as cur,
            cur.copy(
                "COPY events (account, version, event, message_id, user_id, occurred_at,"
                " recorded_at, payload) FROM STDIN"
            ) as copy,
        ):
            for row in rows(path):
                copy.write_row(row)
    return time.perf_counter() - start


def _against(floors: dict[str, float], ours: float, events: int) -> dict[str, float]:
    """Each floor's seconds, events per second and ratio to ``ours`` (its seconds / ours)."""
    shown: dict[str, float] = {}
    for settings, seconds in floors.items():
        shown[f"floor_{settings}_s"] = seconds
        shown[f"floor_{settings}_eps"] = events / seconds
        shown[f"ratio_{settings}"] = seconds / ours
    return shown


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_history_arguments(parser)
    parser.add_argument("--live-events", type=positive, default=20_000)
    add_postgres_argument(parser)
    args = parser.parse_args()
    history = history_file(args.events, args.accounts, args.seed)
    results: dict[str, Any] = {"events": args.events, "accounts": args.accounts}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        floors = {s: sqlite_floor_bulk(history, work / f"floor-{s}.db", s) for s in FLOOR_SETTINGS}
        ingest, peak = run_ingest(history, f"sqlite:///{work / 'lifecycle.db'}", work)
        results["sqlite_bulk"] = {
            "ingest_s": ingest, "ingest_eps": args.events / ingest, "peak_mb": peak,
            **_against(floors, ingest, args.events),
        }  # fmt: skip
        live = min(args.live_events, args.events)
        floors = {
            s: sqlite_floor_live(history, work / f"floor-{s}-live.db", live, s)
            for s in FLOOR_SETTINGS
        }
        ours_live = lifecycle_live(history, f"sqlite:///{work / 'live.db'}", live)
        results["sqlite_live"] = {"events": live, "submit_s": ours_live,
                                  **_against(floors, ours_live, live)}  # fmt: skip
    if args.postgres:
        with postgres_database(args.postgres) as floor_url:
            pg_floor = postgres_floor(history, floor_url)
        with postgres_database(args.postgres) as ours_url, tempfile.TemporaryDirectory() as tmp:
            subprocess.run([*lifecycle_command(), "db", "upgrade", "--db", ours_url],
                           check=True, capture_output=True)  # fmt: skip
            pg_ingest, pg_peak = run_ingest(history, ours_url, Path(tmp))
        results["postgres_bulk"] = {"floor_s": pg_floor, "ingest_s": pg_ingest,
                                    "ratio": pg_floor / pg_ingest, "peak_mb": pg_peak}  # fmt: skip
    print(json.dumps(results, indent=2))
    out = results_file("ingest", args.events, args.accounts, args.seed)
    out.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
