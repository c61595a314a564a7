"""The ``lifecycle`` command line: thin wrappers that parse arguments and call the library.

Exit codes: 0 success (nothing rejected), 1 something was rejected (or, for
verifying commands, differs), 2 usage, input or database error, 70 internal error (a
bug), 130 interrupted, 143 terminated (SIGTERM to the commands that judge input).
"""

from __future__ import annotations

import argparse
import gc
import io
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, NoReturn

from lifecycle import __version__
from lifecycle.cli import check, diagram, generate, history, relay, store
from lifecycle.cli.common import EXIT_ERROR, bug, complain, exit_code

if TYPE_CHECKING:
    from _typeshed import SupportsWrite

COMMANDS = (check, store, history, relay, diagram, generate)


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line on stderr (exit 2), as documented.

    Sub-command parsers inherit the class, so every command behaves the same.
    """

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_ERROR, f"{self.prog}: error: {message} (see {self.prog} --help)\n")

    def _print_message(self, message: str, file: SupportsWrite[str] | None = None) -> None:
        # argparse ignores a failed write: ``--help > /dev/full`` exited 0. On stderr (a
        # usage error) the exit code says it all.
        if not message:
            return
        if file is None or file is sys.stderr:
            complain(message.removesuffix("\n"))
        else:
            file.write(message)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every command registered."""
    parser = _Parser(
        prog="lifecycle",
        description="Keep B2B SaaS account lifecycle data honest before it reaches Segment.",
    )
    parser.add_argument("--version", action="version", version=f"lifecycle {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    for module in COMMANDS:
        module.add_parser(commands)
    return parser


#: Young objects allocated between two collections of the cyclic garbage collector.
GC_YOUNG_THRESHOLD = 500_000


@contextmanager
def _streaming_gc() -> Iterator[None]:
    """Collect cyclic garbage rarely while a command runs.

    Commands stream millions of short-lived, acyclic objects (decoded messages,
    verdicts, states) past a large set of long-lived ones (account states, open
    connections). With the default thresholds the collector keeps walking the
    long-lived set, which cost a quarter of an import's time. What it is there
    for, reference cycles, is rare on these paths, so it runs every
    ``GC_YOUNG_THRESHOLD`` allocations instead, and what was already alive when
    the command started is frozen out of its walks. Both are undone on return.
    """
    before = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, 1000, 1000)
    try:
        yield
    finally:
        gc.set_threshold(*before)
        gc.unfreeze()


def _printable_anywhere() -> None:
    """Let text output show what the terminal's encoding cannot as backslash escapes.

    Ids and reasons come from the input and may hold any character; with an encoding
    other than UTF-8 (``PYTHONIOENCODING=latin-1``, an old Windows console) the first
    one it lacks was a ``UnicodeEncodeError`` traceback after the whole input was judged.
    JSON output is written as UTF-8 bytes, past the text layer, and stays valid.
    """
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="backslashreplace")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    if sys.stderr is None:  # started with 2>&-: errors go nowhere, their codes still count
        sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - for the life of the process
    if sys.stdout is None:
        complain("lifecycle: error: standard output is closed: nothing can be written")
        return EXIT_ERROR
    _printable_anywhere()
    try:
        args = _parsed(build_parser(), argv)
    except SystemExit as done:  # --help, --version or a usage error, written
        return _flushed(done.code if isinstance(done.code, int) else EXIT_ERROR)
    except OSError as exc:  # ... or not
        return _unwritten(exc)
    # A lost connection is reported once, as the command's error; psycopg would also log
    # the COPY it could not end, on a second line.
    logging.getLogger("psycopg").setLevel(logging.ERROR)
    try:
        with _streaming_gc():
            return _flushed(exit_code(lambda: int(args.run(args))))
    except Exception:
        return bug()


def _parsed(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """The arguments, files given after an option included: in ``check a.jsonl --format
    jsonl b.jsonl`` argparse takes ``a.jsonl`` as the FILE... and has no place for
    ``b.jsonl`` (Python's intermixed parsing does not take sub-commands). After ``--``
    everything is a file, a name that starts with a dash included."""
    args, extra = parser.parse_known_args(argv)
    files = getattr(args, "files", None)
    before, after = _split_at_dashes(extra)
    if extra and isinstance(files, list) and not any(_an_option(e) for e in before):
        files.extend(before + after)
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def _split_at_dashes(extra: list[str]) -> tuple[list[str], list[str]]:
    """``extra`` before the first ``--``, and what follows it."""
    if "--" not in extra:
        return extra, []
    at = extra.index("--")
    return extra[:at], extra[at + 1 :]


def _an_option(arg: str) -> bool:
    return arg.startswith("-") and arg != "-"


def _flushed(code: int) -> int:
    """``code``, or 2 when what the command printed cannot be written (``> /dev/full``):
    Python's own flush at exit would only print a warning, and the code would stay 0."""
    try:
        sys.stdout.flush()
    except OSError as exc:
        return _unwritten(exc)
    return code


def _unwritten(exc: OSError) -> int:
    if isinstance(exc, BrokenPipeError):  # a reader that stopped early: quietly
        sys.stderr.close()  # (and without Python's warning as it flushes at exit)
    else:
        complain(f"lifecycle: error: cannot write the output: {exc.strerror or exc}")
    return EXIT_ERROR
