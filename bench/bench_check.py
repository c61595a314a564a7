"""Benchmark: `lifecycle check` against the parse-only floor, measured in the same run.

Both sides read the same generated history (default 1,000,000 events over 20,000
accounts) in a child process of their own:

* the floor: read the file line by line and ``orjson.loads`` each line, nothing else;
* `lifecycle check FILE --format text`: the same reading, plus every check of
  RULES.md and the summary.

Each side runs N times (default 3), alternating, and its best wall time counts;
CPU time and peak resident memory come from the child's own resource usage
(``wait4``), so nothing else running on the machine is counted. Results are
printed as a table and written to ``bench/out/check-EVENTS-ACCOUNTS-SEED.json``.

    python bench/bench_check.py                               # 1M events, 20k accounts
    python bench/bench_check.py --events 100000 --accounts 2000 --runs 5
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ is not a package

from common import (
    HERE,
    Run,
    add_history_arguments,
    history_file,
    lifecycle_command,
    measure,
    positive,
    results_file,
)

# Targets: check at least this share of the floor's throughput, and at most this peak.
TARGET_RATIO = 0.15
TARGET_PEAK_MB = 250

FLOOR = """
import sys
import orjson

loads = orjson.loads
with open(sys.argv[1], "rb") as handle:
    for line in handle:
        loads(line)
"""


@dataclass
class Result:
    """The best of N runs of one side."""

    name: str
    wall_s: float
    cpu_s: float
    peak_mb: float
    events_per_s: float
    runs: list[float]


def best(name: str, runs: list[Run], events: int) -> Result:
    """The fastest run, with its own CPU time and peak (not the least and most of all)."""
    top = min(runs, key=lambda r: r.wall_s)
    return Result(
        name=name,
        wall_s=top.wall_s,
        cpu_s=top.cpu_s,
        peak_mb=top.peak_mb,
        events_per_s=events / top.wall_s,
        runs=[round(r.wall_s, 3) for r in runs],
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_history_arguments(parser)
    parser.add_argument("--runs", type=positive, default=3, help="runs of each side (best counts)")
    args = parser.parse_args()
    history = history_file(args.events, args.accounts, args.seed)
    floor_argv = [sys.executable, "-c", FLOOR, str(history)]
    check_argv = [*lifecycle_command(), "check", str(history), "--format", "text"]

    floor_runs: list[Run] = []
    check_runs: list[Run] = []
    for _ in range(args.runs):
        floor_runs.append(measure(floor_argv))
        run = measure(check_argv)
        if run.exit_code not in (0, 1):
            raise SystemExit(f"lifecycle check failed with exit code {run.exit_code}")
        check_runs.append(run)
    floor = best("floor (orjson.loads per line)", floor_runs, args.events)
    check = best("lifecycle check --format text", check_runs, args.events)
    ratio = check.events_per_s / floor.events_per_s

    print(f"{args.events:,} events over {args.accounts:,} accounts, best of {args.runs} runs")
    print(f"{'':32} {'wall s':>8} {'cpu s':>8} {'events/s':>12} {'peak MB':>8}")
    for r in (floor, check):
        print(
            f"{r.name:32} {r.wall_s:>8.2f} {r.cpu_s:>8.2f} {r.events_per_s:>12,.0f} "
            f"{r.peak_mb:>8.0f}"
        )
    print(
        f"check / floor throughput: {ratio:.3f} (target >= {TARGET_RATIO}); "
        f"check peak memory: {check.peak_mb:.0f} MB (target <= {TARGET_PEAK_MB})"
    )
    results = {
        "events": args.events,
        "accounts": args.accounts,
        "seed": args.seed,
        "runs": args.runs,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "floor": asdict(floor),
        "check": asdict(check),
        "ratio": ratio,
        "targets": {"ratio": TARGET_RATIO, "peak_mb": TARGET_PEAK_MB},
        "met": ratio >= TARGET_RATIO and check.peak_mb <= TARGET_PEAK_MB,
    }
    out = results_file("check", args.events, args.accounts, args.seed)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"results: {out.relative_to(HERE.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
