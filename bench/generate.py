"""Write a generated history as JSONL (and, optionally, the expected verdicts beside it).

    python bench/generate.py --accounts 20000 --events 1000000 --seed 1 \\
        --out bench/out/history.jsonl
    python bench/generate.py --events 100000 --accounts 2000 --illegal-rate 0.05 \\
        --out bench/out/mixed.jsonl --expected bench/out/mixed.expected.jsonl

The history is :func:`lifecycle.generate.generate`'s, one message per line; the
expected-verdict file has one ``{"line", "messageId", "verdict", "code"}`` object
per line of the history. Same arguments, same bytes.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import orjson

from lifecycle.generate import generate

_CHUNK = 10_000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--accounts", type=int, default=20_000)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--illegal-rate", type=float, default=0.0, help="share of injected violations (0 to 1)"
    )
    parser.add_argument("--out", type=Path, required=True, help="the JSONL history to write")
    parser.add_argument("--expected", type=Path, help="also write the expected verdicts here")
    args = parser.parse_args(argv)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    history = args.out.open("wb")
    expected = args.expected.open("wb") if args.expected else None
    dumps, newline = orjson.dumps, orjson.OPT_APPEND_NEWLINE
    lines: list[bytes] = []
    verdicts: list[bytes] = []
    start = time.perf_counter()
    try:
        messages = generate(
            accounts=args.accounts,
            events=args.events,
            seed=args.seed,
            illegal_rate=args.illegal_rate,
        )
        for number, generated in enumerate(messages, 1):
            lines.append(dumps(generated.message, option=newline))
            if expected is not None:
                verdicts.append(dumps({"line": number, **generated.expectation()}, option=newline))
            if len(lines) == _CHUNK:
                history.writelines(lines)
                lines.clear()
                if expected is not None:
                    expected.writelines(verdicts)
                    verdicts.clear()
        history.writelines(lines)
        if expected is not None:
            expected.writelines(verdicts)
    finally:
        history.close()
        if expected is not None:
            expected.close()
    elapsed = time.perf_counter() - start
    print(
        f"{args.events:,} messages over {args.accounts:,} accounts -> {args.out} "
        f"in {elapsed:.1f} s ({args.events / elapsed:,.0f} messages/s)",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
