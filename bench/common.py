"""What the benchmarks share: the generated history file and the PostgreSQL option.

The scripts run from this folder (``python bench/bench_ingest.py``), which puts it
on ``sys.path``; it is not a package.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"


def history_file(events: int, accounts: int, seed: int) -> Path:
    """The generated history (written once, reused by later runs)."""
    OUT.mkdir(exist_ok=True)
    path = OUT / f"history-{events}-{accounts}-{seed}.jsonl"
    if not path.exists():
        subprocess.run(
            [sys.executable, str(HERE / "generate.py"), "--events", str(events),
             "--accounts", str(accounts), "--seed", str(seed), "--out", str(path)],
            check=True,
        )  # fmt: skip
    return path


def add_history_arguments(parser: argparse.ArgumentParser) -> None:
    """``--events``, ``--accounts``, ``--seed``: which generated history to run on."""
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--accounts", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=1)


def add_postgres_argument(parser: argparse.ArgumentParser) -> None:
    """``--postgres URL``: the admin URL of the server to benchmark on ('' to skip)."""
    parser.add_argument(
        "--postgres",
        default=os.environ.get(
            "LIFECYCLE_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
        ),
        help="admin URL of a PostgreSQL server ('' to skip)",
    )
