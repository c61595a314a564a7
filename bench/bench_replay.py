"""Benchmark: full replay against a raw-driver floor, and loading one account via its snapshot.

* Full replay of every stored event (default 1M events over 20k accounts) into
  account states, with ``Lifecycle.replay``, against, in the same run, the
  floor: read every row with the plain driver (``sqlite3`` / ``psycopg``),
  decode its JSON and fold the event name into a dict per account. On SQLite
  and on PostgreSQL.
* Loading one account with 10,000 events through its newest snapshot (one
  every 100 events) plus the tail: median of repeated loads.
* `lifecycle replay --format jsonl --workers 1` as a process, for its wall time
  and peak memory (its output discarded).

    python bench/bench_replay.py                      # 1M events, 20k accounts
    python bench/bench_replay.py --events 100000 --accounts 2000
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ is not a package

from bench_ingest import postgres_database
from common import (
    add_history_arguments,
    add_postgres_argument,
    history_file,
    lifecycle_command,
    measure,
    positive,
    results_file,
)


def ingest(path: Path, url: str) -> None:
    command = ["ingest", str(path), "--db", url, "--batch-size", "5000"]
    subprocess.run([*lifecycle_command(), *command], check=True, stdout=subprocess.DEVNULL)


def command_line(url: str) -> dict[str, float]:
    """`lifecycle replay` of every account as a process: its seconds and peak memory."""
    run = measure([*lifecycle_command(), "replay", "--db", url, "--format", "jsonl",
                   "--workers", "1"])  # fmt: skip
    if run.exit_code != 0:
        raise SystemExit(f"replay failed with exit code {run.exit_code}")
    return {"cli_replay_s": run.wall_s, "cli_peak_mb": run.peak_mb}


def fold_rows(rows: Any) -> int:
    """The floor's work: decode each payload and fold its event name per account."""
    last: dict[str, str] = {}
    n = 0
    for account, payload in rows:
        last[account] = orjson.loads(payload)["event"]
        n += 1
    return n


def sqlite_floor(db: Path) -> float:
    start = time.perf_counter()
    con = sqlite3.connect(db)
    fold_rows(con.execute("SELECT account, payload FROM events ORDER BY position"))
    con.close()
    return time.perf_counter() - start


def postgres_floor(url: str) -> float:
    import psycopg

    start = time.perf_counter()
    with psycopg.connect(url) as con, con.cursor(name="floor") as cur:
        cur.itersize = 5000
        cur.execute("SELECT account, payload FROM events ORDER BY position")
        fold_rows(cur)
    return time.perf_counter() - start


def replay_time(url: str, workers: int = 1) -> tuple[float, int]:
    from lifecycle.service import Lifecycle

    with Lifecycle(url) as store:
        start = time.perf_counter()
        count = sum(1 for _ in store.replay(workers=workers))
        return time.perf_counter() - start, count


def best(fn: Any, runs: int) -> Any:
    return min((fn() for _ in range(runs)), key=lambda r: r if isinstance(r, float) else r[0])


def snapshot_load(tmp: Path, events: int, runs: int) -> dict[str, Any]:
    """Median time to load one account of ``events`` events through its snapshot."""
    from lifecycle.service import Lifecycle

    ctx = {"groupId": "acct_long"}
    messages: list[dict[str, Any]] = [
        {"type": "track", "event": "Account Created", "userId": "u1", "context": ctx},
        {"type": "track", "event": "Signed Up", "userId": "u1", "context": ctx},
    ]
    for n in range(events - 2):
        messages.append(
            {"type": "track", "event": "Signed Out" if n % 2 else "Signed In", "userId": "u1",
             "messageId": f"long-{n}", "context": ctx}
        )  # fmt: skip
    with Lifecycle(f"sqlite:///{tmp / 'long.db'}", snapshot_every=100) as store:
        for start in range(0, len(messages), 1000):
            store.submit_many(messages[start : start + 1000])
        timings = []
        for _ in range(runs):
            start = time.perf_counter()
            state = store.load("acct_long")
            timings.append(time.perf_counter() - start)
        assert state is not None and state.version == events
        full = time.perf_counter()
        store.replay(accounts=["acct_long"]).__next__()
        full = time.perf_counter() - full
    return {"events": events, "median_ms": statistics.median(timings) * 1000,
            "full_replay_ms": full * 1000}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_history_arguments(parser)
    parser.add_argument("--runs", type=positive, default=3)
    add_postgres_argument(parser)
    args = parser.parse_args()
    history = history_file(args.events, args.accounts, args.seed)
    results: dict[str, Any] = {"events": args.events, "accounts": args.accounts}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        db = work / "replay.db"
        ingest(history, f"sqlite:///{db}")
        floor = min(sqlite_floor(db) for _ in range(args.runs))
        ours, count = best(lambda: replay_time(f"sqlite:///{db}"), args.runs)
        two, _ = best(lambda: replay_time(f"sqlite:///{db}", 2), args.runs)
        results["sqlite"] = {"floor_s": floor, "replay_s": ours, "ratio": floor / ours,
                             "replay_eps": args.events / ours, "accounts": count,
                             "replay_2_workers_s": two, "ratio_2_workers": floor / two,
                             **command_line(f"sqlite:///{db}")}  # fmt: skip
        results["snapshot_load"] = snapshot_load(work, 10_000, 50)
    if args.postgres:
        with postgres_database(args.postgres) as url:
            subprocess.run([*lifecycle_command(), "db", "upgrade", "--db", url],
                           check=True, capture_output=True)  # fmt: skip
            ingest(history, url)
            floor = min(postgres_floor(url) for _ in range(args.runs))
            ours, count = best(lambda: replay_time(url), args.runs)
            two, _ = best(lambda: replay_time(url, 2), args.runs)
            results["postgres"] = {
                "floor_s": floor, "replay_s": ours, "ratio": floor / ours,
                "replay_eps": args.events / ours, "accounts": count,
                "replay_2_workers_s": two, "ratio_2_workers": floor / two,
                **command_line(url),
            }  # fmt: skip
    print(json.dumps(results, indent=2))
    out = results_file("replay", args.events, args.accounts, args.seed)
    out.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
