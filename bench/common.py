"""What the benchmarks share: the generated history file and the PostgreSQL option.

The scripts run from this folder (``python bench/bench_ingest.py``), which puts it
on ``sys.path``; it is not a package.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"


def history_file(events: int, accounts: int, seed: int) -> Path:
    """The generated history (written once, reused by later runs)."""
    OUT.mkdir(exist_ok=True)
    path = OUT / f"history-{events}-{accounts}-{seed}.jsonl"
    if not path.exists():  # written aside and renamed: a cut-short file is never reused
        partial = path.with_suffix(".partial")
        subprocess.run(
            [sys.executable, str(HERE / "generate.py"), "--events", str(events),
             "--accounts", str(accounts), "--seed", str(seed), "--out", str(partial)],
            check=True,
        )  # fmt: skip
        partial.replace(path)
    return path


def results_file(name: str, events: int, accounts: int, seed: int) -> Path:
    """Where a benchmark writes its results: one file per history, so that a small run
    does not replace the results of a large one."""
    return OUT / f"{name}-{events}-{accounts}-{seed}.json"


@dataclass
class Run:
    """One measured child process."""

    wall_s: float
    cpu_s: float
    peak_mb: float
    exit_code: int


#: Runs its arguments as a child and prints the child's wall time, CPU time, peak RSS and
#: exit code. A process started straight from a large one (the relay benchmark holds its
#: messages in memory) inherits that process's peak: Linux records the old memory's
#: high-water mark at ``exec``. Started from this small one, it inherits next to nothing.
_SPAWN = """
import os, subprocess, sys, time
start = time.perf_counter()
child = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL)
_, status, usage = os.wait4(child.pid, 0)
wall = time.perf_counter() - start
code = os.waitstatus_to_exitcode(status)
print(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss, code)
"""


def measure(argv: list[str], cwd: Path | None = None) -> Run:
    """Run ``argv`` to completion, its output discarded and its errors shown; its wall
    time, and its CPU time and peak resident memory from ``wait4``: the command's and those
    of the children it waited for (``--workers``: the CPU time of all, the peak of the
    largest), nothing else on the machine."""
    done = subprocess.run(
        [sys.executable, "-c", _SPAWN, *argv], cwd=cwd, stdout=subprocess.PIPE, text=True
    )
    if done.returncode != 0:
        raise SystemExit(f"could not measure {argv[:3]}: exit code {done.returncode}")
    wall, cpu, peak, code = done.stdout.split()
    # ru_maxrss is in KiB on Linux (bytes on macOS).
    scale = 1 if sys.platform == "darwin" else 1024
    return Run(
        wall_s=float(wall),
        cpu_s=float(cpu),
        peak_mb=int(peak) * scale / 2**20,
        exit_code=int(code),
    )


def lifecycle_command() -> list[str]:
    """The ``lifecycle`` console script beside this interpreter, else ``python -m lifecycle``."""
    script = Path(sys.executable).with_name("lifecycle")
    return [str(script)] if script.exists() else [sys.executable, "-m", "lifecycle"]


def positive(text: str) -> int:
    """An argument that counts something: 1 or more (0 runs measured nothing, and failed
    with a traceback when it came to the best run)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected 1 or more, got {value}")
    return value


def add_history_arguments(parser: argparse.ArgumentParser) -> None:
    """``--events``, ``--accounts``, ``--seed``: which generated history to run on."""
    parser.add_argument("--events", type=positive, default=1_000_000)
    parser.add_argument("--accounts", type=positive, default=20_000)
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
