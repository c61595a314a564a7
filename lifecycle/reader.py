"""Reading JSONL input: files, gzip files and standard input, line by line.

Input is streamed: one line in memory at a time, whatever the size of the
file. Every file is opened before the first line is read, so that a missing
file fails the run before any verdict is printed.
"""

from __future__ import annotations

import gzip
import io
import os
import stat
import sys
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, Any, cast

import orjson

from lifecycle import messages
from lifecycle._frozen import fast_init
from lifecycle.errors import InputError
from lifecycle.messages import Item, Malformed, decode, kept, line_too_large

STDIN = "-"
_GZIP_MAGIC = b"\x1f\x8b"
#: What Windows tools write before UTF-8 text. JSON forbids it, so only the start of
#: a file may hold one; it is skipped there and nowhere else.
_BOM = b"\xef\xbb\xbf"


@fast_init
@dataclass(frozen=True, slots=True)
class InputLine:
    """One line of input: the file it came from, its 1-based number and its raw bytes.

    ``rereadable`` says whether the file can be read again as it was (a regular file,
    not standard input or a pipe): only then does a line's place and bytes recognise it
    when a later run reads it again.
    """

    file: str
    number: int
    raw: bytes
    rereadable: bool = True
    #: The size of a line too long to be read whole (``raw`` is its start), else 0.
    oversize: int = 0
    #: The file's path as it was given, when ``file`` names it otherwise (as the store
    #: records it): reports show each path as given, one file given twice included.
    shown: str = ""


def open_input(path: str) -> IO[bytes]:
    """Open a file (or ``-`` for standard input) for binary reading; gzip is detected by magic.

    Closing what is returned closes the file, never standard input.
    """
    if path == STDIN:
        if sys.stdin is None:  # started with <&-
            raise InputError("cannot read -: standard input is closed")
        return _unpacked(sys.stdin.buffer, owned=False)
    try:
        handle: IO[bytes] = open(path, "rb")  # noqa: SIM115 - closed by the caller
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from exc
    return _unpacked(handle, owned=True)


def _unpacked(handle: IO[bytes], *, owned: bool) -> IO[bytes]:
    """``handle``, or a gzip reader of it (closing it when ``owned``) when it starts with
    gzip's magic bytes.

    Peeking leaves the bytes in the buffer, so standard input is detected as a file is
    (``ingest - < f.jsonl.gz`` read the compressed bytes as lines). A pipe may hold one
    byte when it is peeked at: the second is then read, and put back in front.
    """
    if not hasattr(handle, "peek"):
        return handle
    head = handle.peek(2)[:2]
    if head == _GZIP_MAGIC[:1]:
        head = handle.read(2)
        handle = io.BufferedReader(_Prefixed(head, handle))
    if head != _GZIP_MAGIC:
        return handle
    reader = _OwnGzipFile(handle) if owned else gzip.GzipFile(fileobj=handle, mode="rb")
    return reader  # type: ignore[return-value]


class _Prefixed(io.RawIOBase):
    """``head``, then the rest of ``rest``: bytes read ahead, put back in front."""

    def __init__(self, head: bytes, rest: IO[bytes]) -> None:
        self._head = head
        self._rest = rest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._head[: len(buffer)] or _read1(self._rest)(len(buffer))
        self._head = self._head[len(data) :] if self._head else b""
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self._rest.close()
        super().close()


def _read1(stream: IO[bytes]) -> Any:
    """What reads at most one chunk of ``stream`` (without waiting for more to arrive)."""
    return getattr(stream, "read1", stream.read)


class _OwnGzipFile(gzip.GzipFile):
    """A gzip reader that closes the file it reads when it is closed.

    ``GzipFile`` leaves a file object it is given open: every gzip input stayed open
    until it was collected.
    """

    def __init__(self, source: IO[bytes]) -> None:
        super().__init__(fileobj=source, mode="rb")
        self._source = source

    def close(self) -> None:
        """Close the reader, then its file."""
        try:
            super().close()
        finally:
            self._source.close()


def input_size(paths: Sequence[str]) -> int | None:
    """Total size in bytes of the files (for a progress bar), or None when unknown.

    A bar counts the bytes of the lines read, so only a plain regular file has a size in
    those units: a gzip file (known by its magic bytes, whatever its name) reads as more
    bytes than it takes on disk, and its bar overshot; a pipe has no size.
    """
    total = 0
    for path in paths:
        if path == STDIN:
            return None
        try:
            status = os.stat(path)
            if not stat.S_ISREG(status.st_mode) or _is_gzip(path):
                return None
        except OSError:
            return None
        total += status.st_size
    return total


def _is_gzip(path: str) -> bool:
    with open(path, "rb") as handle:
        return handle.read(2) == _GZIP_MAGIC


def is_document(path: str) -> bool:
    """True for a ``.json`` file (gzipped or not): one JSON document, not JSON lines.

    The extension is matched in any case: a ``.JSON`` export (as Windows tools name
    files) was read as lines, every line of a pretty-printed document malformed.
    """
    return path.lower().endswith((".json", ".json.gz"))


def as_batch(document: bytes) -> bytes:
    """A whole-file document as one batch line (an array of messages becomes a batch)."""
    stripped = document.removeprefix(_BOM).strip()
    return b'{"batch":' + stripped + b"}" if stripped.startswith(b"[") else stripped


def printable(path: str) -> str:
    """``path`` as text that can be printed and stored: the bytes of a file name that
    are not UTF-8 (which Python keeps as lone surrogates) shown as U+FFFD."""
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def is_rereadable(path: str) -> bool:
    """Whether ``path`` can be read again as it was: a regular file, not standard input,
    a pipe (``<(cat f)``, /dev/fd/63) or a FIFO, whose next reading is other input."""
    return path != STDIN and os.path.isfile(path)


def stored_name(path: str) -> str:
    """The name the event store records for ``path``: the file itself, however the path
    was spelled (``h.jsonl``, ``./h.jsonl``, an absolute path, a link), so that a re-run
    from another directory is recognised as one. What is not a regular file keeps the
    name it was given."""
    if not is_rereadable(path):
        # A pipe (``<(cat f)``, /dev/fd/63) resolves to a name of its own on every run.
        return printable(path)
    return printable(os.path.realpath(path))


def read_lines(paths: Sequence[str], names: Mapping[str, str] | None = None) -> Iterator[InputLine]:
    """Every non-blank line of every file, in order. Blank lines are skipped.

    Each line names its file as ``names`` says, by default as :func:`printable`
    shows its path.

    A UTF-8 byte order mark at the very start of a file is dropped: otherwise one
    exported from a Windows tool would lose its first message (often an account's
    ``Account Created``) and, with it, every later event of that account.

    A ``.json`` file is one JSON document — a Segment batch object ``{"batch":
    [...]}`` or an array of messages, pretty-printed or not — read whole and
    given as line 1 (each message's ``index`` is its position in the batch).

    Raises :class:`InputError` when a file cannot be opened (here, before the
    first line is asked for: ``ingest`` of a missing file had created its store
    first) or cannot be read to its end.
    """
    lines = _lines(paths, names)
    next(lines)  # opens every file; the files are closed when the lines are, or collected
    return cast(Iterator[InputLine], lines)


def _lines(paths: Sequence[str], names: Mapping[str, str] | None) -> Iterator[InputLine | None]:
    """None once every file was opened, then the lines of :func:`read_lines`.

    A regular file is closed again until its turn comes: kept open together, a thousand
    daily exports ran out of file descriptors (``ulimit -n`` is often 1,024). What
    cannot be read twice (standard input, a pipe) stays open.
    """
    rereadable = [is_rereadable(path) for path in paths]
    waiting: dict[int, IO[bytes]] = {}
    try:
        for n, path in enumerate(paths):
            handle = open_input(path)
            if rereadable[n]:
                handle.close()
            else:
                waiting[n] = handle
        yield None
        for n, path in enumerate(paths):
            handle = waiting.pop(n) if n in waiting else open_input(path)
            number = 0
            name = names[path] if names is not None else printable(path)
            shown = printable(path) if names is not None else ""
            again = rereadable[n]
            try:
                if is_document(path):
                    yield InputLine(name, 1, as_batch(handle.read()), again, shown=shown)
                    continue
                most = messages.MAX_LINE_BYTES
                while raw := handle.readline(most + len(_BOM) + 2):  # a BOM, CR LF
                    number += 1
                    if number == 1:
                        raw = raw.removeprefix(_BOM)
                    if len(raw) > most and (size := _line_size(handle, raw)) > most:
                        yield InputLine(name, number, raw[: messages.MAX_BYTES], again, size, shown)
                    elif raw and not raw.isspace():  # blank? (unlike strip(), copies nothing)
                        yield InputLine(name, number, raw, again, shown=shown)
            # zlib.error: gzip data that cannot be inflated (a damaged block, not a cut).
            except (OSError, EOFError, gzip.BadGzipFile, zlib.error) as exc:
                raise InputError(f"cannot read {path} after line {number}: {exc}") from exc
            finally:
                if path != STDIN:
                    handle.close()
    finally:
        for n, handle in waiting.items():
            if paths[n] != STDIN:
                handle.close()


#: How much of a line too long to be read whole is read at a time, to be skipped.
_SKIP_CHUNK = 1 << 20


def _line_size(handle: IO[bytes], start: bytes) -> int:
    """The size of a line that begins with ``start``, its ending not counted. When
    ``start`` is not the whole line, the rest is read a megabyte at a time and
    forgotten."""
    if start[-1:] == b"\n":
        return len(start) - messages.line_ending(start)
    size, tail = len(start), start[-1:]
    while chunk := handle.readline(_SKIP_CHUNK):
        size += len(chunk)
        if chunk[-1:] == b"\n":
            return size - messages.line_ending(tail + chunk[-2:])
        tail = chunk[-1:]
    return size


@dataclass(frozen=True, slots=True)
class InputItem:
    """One message of the input with where it came from: file, line and batch position.

    ``raw`` is what the quarantine keeps: the whole line when the line held this
    message alone (``whole_line``) or could not be read, else the item's JSON.
    """

    file: str
    line: int
    index: int
    item: Item
    raw: bytes
    whole_line: bool
    #: As :attr:`InputLine.rereadable`.
    rereadable: bool = True
    #: As :attr:`InputLine.shown`.
    shown: str = ""


def items_of(line: InputLine) -> list[InputItem]:
    """The messages of one line, in order."""
    if line.oversize:
        refused = Malformed(line_too_large(line.oversize))
        return [
            InputItem(
                line.file, line.number, 0, refused, line.raw, True, line.rereadable, line.shown
            )
        ]
    items, whole = decode(line.raw)
    out = []
    for index, item in enumerate(items):
        if isinstance(item, Malformed):
            item, raw = kept(item, line.raw)
        else:
            raw = line.raw if whole else orjson.dumps(item)
        out.append(
            InputItem(line.file, line.number, index, item, raw, whole, line.rereadable, line.shown)
        )
    return out
