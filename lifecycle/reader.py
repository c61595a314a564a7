"""Reading JSONL input: files, gzip files and standard input, line by line.

Input is streamed: one line in memory at a time, whatever the size of the
file. Every file is opened before the first line is read, so that a missing
file fails the run before any verdict is printed.
"""

from __future__ import annotations

import gzip
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import IO

from lifecycle.errors import InputError

STDIN = "-"
_GZIP_MAGIC = b"\x1f\x8b"


@dataclass(frozen=True, slots=True)
class InputLine:
    """One line of input: the file it came from, its 1-based number and its raw bytes."""

    file: str
    number: int
    raw: bytes


def open_input(path: str) -> IO[bytes]:
    """Open a file (or ``-`` for standard input) for binary reading; gzip is detected by magic."""
    if path == STDIN:
        return sys.stdin.buffer
    try:
        handle: IO[bytes] = open(path, "rb")  # noqa: SIM115 - closed by the caller
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if handle.peek(2)[:2] == _GZIP_MAGIC if hasattr(handle, "peek") else False:
        return gzip.GzipFile(fileobj=handle, mode="rb")  # type: ignore[return-value]
    return handle


def input_size(paths: Sequence[str]) -> int | None:
    """Total size in bytes of the files (for a progress bar), or None when unknown."""
    total = 0
    for path in paths:
        if path == STDIN or path.endswith(".gz"):
            return None
        try:
            total += os.path.getsize(path)
        except OSError:
            return None
    return total


def read_lines(paths: Sequence[str]) -> Iterator[InputLine]:
    """Every non-blank line of every file, in order. Blank lines are skipped.

    Raises :class:`InputError` when a file cannot be opened (before any line is
    yielded) or cannot be read to its end.
    """
    handles = [(path, open_input(path)) for path in paths]
    try:
        for path, handle in handles:
            number = 0
            try:
                for raw in handle:
                    number += 1
                    if raw.strip():
                        yield InputLine(path, number, raw)
            except (OSError, EOFError, gzip.BadGzipFile) as exc:
                raise InputError(f"cannot read {path} after line {number}: {exc}") from exc
    finally:
        for path, handle in handles:
            if path != STDIN:
                handle.close()
