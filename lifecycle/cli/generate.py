"""``lifecycle generate``: write a realistic, deterministic history as JSONL."""

from __future__ import annotations

import argparse
import io
import os
import sys
from contextlib import ExitStack
from typing import IO

from lifecycle.cli.common import EXIT_ERROR, EXIT_OK, complain, load_policy, non_negative
from lifecycle.errors import InputError


def add_parser(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``generate``."""
    parser = commands.add_parser(
        "generate",
        help="write a realistic, deterministic history as JSONL",
        description=(
            "Simulate accounts and users of a B2B SaaS product and write their track "
            "messages, one JSON object per line. The same arguments give the same bytes. "
            "With --illegal-rate some messages are deliberate violations; --expected "
            "writes the verdict each message must get."
        ),
    )
    parser.add_argument("--accounts", type=int, required=True, metavar="N", help="accounts")
    parser.add_argument("--events", type=int, required=True, metavar="M", help="messages")
    parser.add_argument(
        "--seed", type=non_negative, default=0, metavar="S", help="random seed, 0 or more (0)"
    )
    parser.add_argument(
        "--illegal-rate",
        type=float,
        default=0.0,
        metavar="R",
        help="share of messages that are deliberate violations, 0 to 1 (0)",
    )
    parser.add_argument(
        "--out", metavar="FILE", help="write the messages here (default and -: stdout)"
    )
    parser.add_argument(
        "--expected",
        metavar="FILE",
        help="also write one object per message: line, messageId, verdict, code (-: stdout)",
    )
    parser.add_argument(
        "--policy", metavar="MODULE:ATTR", help="judge under this policy instead of the default"
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Generate the history and write it (and the expected verdicts when asked)."""
    import orjson

    from lifecycle.generate import generate

    clash = _one_destination(args.out or STDOUT, args.expected)
    if clash:
        complain(f"lifecycle generate: error: {clash}")
        return EXIT_ERROR
    try:
        stream = generate(
            accounts=args.accounts,
            events=args.events,
            seed=args.seed,
            illegal_rate=args.illegal_rate,
            policy=load_policy(args.policy),
        )
    except ValueError as exc:
        complain(f"lifecycle generate: error: {exc}")
        return EXIT_ERROR
    with ExitStack() as stack:
        # The sidecar first: when it cannot be written, no empty --out file is left behind.
        expected = _output(stack, args.expected) if args.expected else None
        try:
            out = _output(stack, args.out or STDOUT)
        except InputError:
            stack.close()
            if args.expected and args.expected != STDOUT:
                os.unlink(args.expected)
            raise
        try:
            for line, generated in enumerate(stream, start=1):
                out.write(orjson.dumps(generated.message, option=orjson.OPT_APPEND_NEWLINE))
                if expected is not None:
                    record = {"line": line, **generated.expectation()}
                    expected.write(orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE))
        except ValueError as exc:  # the policy refused every Account Created: found on the way
            complain(f"lifecycle generate: error: {exc}")
            return EXIT_ERROR
        out.flush()
        if expected is not None:
            expected.flush()
    return EXIT_OK


#: ``--out -`` or ``--expected -``: standard output, as ``-`` is standard input for ``check``.
STDOUT = "-"


def _one_destination(out: str, expected: str | None) -> str | None:
    """Why ``--out`` and ``--expected`` cannot both be written, or None when they can.

    Two handles on one file each write from its start: the messages and the verdicts
    overwrote each other, and the file was neither (exit 0). Files are the same however
    their paths are spelled (``./f``, a link, a hard link, ``/dev/stdout``), and ``-`` is
    whatever standard output is (``--expected f > f`` names ``f`` twice).
    """
    if not expected:
        return None
    if out == expected == STDOUT:
        return "--out and --expected would both write to standard output"
    same = os.path.realpath(out) == os.path.realpath(expected)
    one, other = _identity(out), _identity(expected)
    if not same:
        same = one is not None and one == other
    if same and one is not None and one == _identity(os.devnull):
        return None  # both thrown away: nothing to mix up (a load test's discarded output)
    return f"--out {out} and --expected {expected} name the same file" if same else None


def _identity(path: str) -> tuple[int, int] | None:
    """The device and inode ``path`` writes to (standard output's for ``-``), or None
    when it does not exist yet."""
    try:
        status = os.fstat(sys.stdout.fileno()) if path == STDOUT else os.stat(path)
    except (OSError, ValueError, io.UnsupportedOperation):  # no file behind stdout
        return None
    return status.st_dev, status.st_ino


def _output(stack: ExitStack, path: str) -> IO[bytes]:
    """Standard output for ``-``, else ``path`` created (closed with ``stack``)."""
    if path == STDOUT:
        return sys.stdout.buffer
    return stack.enter_context(_create(path))


def _create(path: str) -> IO[bytes]:
    """``path`` opened for writing, or an InputError naming it and why not."""
    try:
        return open(path, "wb")
    except OSError as exc:
        raise InputError(f"cannot write {path}: {exc.strerror or exc}") from exc
