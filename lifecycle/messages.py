"""From a line of input to the Segment messages it holds.

A line holds one message (a JSON object) or a Segment batch object
``{"batch": [...], "context": ..., "integrations": ...}`` whose items are
messages; the batch's top-level ``context`` and ``integrations`` are merged
into every item (an item's own keys win), as Segment's HTTP API does. Pure:
decoding bytes is not I/O.

A message nested more than :data:`MAX_DEPTH` levels deep is not taken as one:
the store writes every message back as JSON and the relay sends it with the
client library, and neither can write JSON nested that deep, so an accepted
message would stop both (see :func:`too_deep`). Nor is one larger than
:data:`MAX_BYTES`: MariaDB refuses to receive a row much larger, and a line
that no run can store would stop every ingest of its file at the same place.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson


@dataclass(frozen=True, slots=True)
class Malformed:
    """A line, or a batch item, that is not a JSON object."""

    reason: str


Item = Mapping[str, Any] | Malformed

#: How many levels of objects and arrays a message may nest, itself included.
MAX_DEPTH = 128

#: The reason given for a message nested deeper than :data:`MAX_DEPTH`.
TOO_DEEP = f"nested more than {MAX_DEPTH} levels of objects and arrays deep"

#: The largest message, as JSON bytes, that lifecycle takes (Segment itself takes 32 KB).
#: Written with escapes it stays within MariaDB's default 16 MiB ``max_allowed_packet``.
MAX_BYTES = 4 << 20


#: The longest line read, in bytes: a batch line may hold many messages, each up to
#: :data:`MAX_BYTES`. A longer one is not read whole (a file with no newline, a binary
#: file given by mistake would fill memory): its first :data:`MAX_BYTES` are kept.
MAX_LINE_BYTES = 64 << 20


def line_too_large(size: int) -> str:
    """The reason given for a line of ``size`` bytes, over :data:`MAX_LINE_BYTES`."""
    return (
        f"the line is {size:,} bytes, more than the {MAX_LINE_BYTES:,} (64 MiB) a line may "
        f"have; the quarantine keeps its first {MAX_BYTES:,}"
    )


def too_large(size: int) -> str:
    """The reason given for a message of ``size`` bytes, over :data:`MAX_BYTES`."""
    return f"the message is {size:,} bytes, more than the {MAX_BYTES:,} (4 MiB) a message may have"


def decode_line(line: bytes | str) -> list[Item]:
    """The messages a line holds, in order (one item per batch entry).

    A line that is not a JSON object gives one :class:`Malformed` item; so does
    a batch entry that is not an object.
    """
    return decode(line)[0]


def decode(line: bytes | str) -> tuple[list[Item], bool]:
    """:func:`decode_line`, and whether the line is one message as it stands.

    Only then is the line itself that message's JSON: a batch's items are new
    objects with its context merged in, even when it has only one.
    """
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        detail = _parse_error(line, exc)
        if detail.startswith("depth limit"):
            # Past the parser's own limit (1,024 levels) the whole line is refused, a
            # batch's other items with it: its raw bytes are quarantined all the same.
            why = TOO_DEEP
        elif detail.startswith("str is not valid UTF-8"):
            why = _not_utf8(line)
        else:
            why = f"not valid JSON ({detail})"
        return [Malformed(why)], False
    if type(value) is not dict:
        return [Malformed(f"not a JSON object (got {kind_of(value)})")], False
    batch = value.get("batch")
    if type(batch) is list:
        return _batch(line, value, batch), False
    if len(line) > _SHORT and (reason := refusal(line, value)) is not None:
        if reason != TOO_DEEP:  # too large, as the line stands: and as compact JSON?
            if too_deep(value):  # (which the size spared looking at)
                reason = TOO_DEEP
            elif _compact_size(value) <= MAX_BYTES:
                # Large by its own spacing only: taken, and stored compact, as the same
                # message in a batch is.
                return [value], False
        return [Malformed(reason)], False
    if _size(line) > _SURELY_SMALL and (size := _compact_size(value)) > MAX_BYTES:
        return [Malformed(too_large(int(size)))], False
    return [value], True


def _parse_error(line: bytes | str, error: orjson.JSONDecodeError) -> str:
    """The parser's words on ``line`` as the user wrote it, without its line ending: given
    the ending, a string cut short was "unexpected control character in string", and the
    end of a cut-off object was on "line 2 column 1", a line no one wrote. Costs a second
    parse of a malformed line only."""
    ending = line_ending(line)
    if 0 < ending < len(line):  # a blank line keeps its "input data is empty"
        try:
            orjson.loads(line[:-ending])
        except orjson.JSONDecodeError as exc:
            error = exc
    return str(error.args[0] if error.args else error)


def _compact_size(message: Mapping[str, Any]) -> float:
    """How many bytes ``message`` takes as compact JSON (infinite when it cannot be written)."""
    try:
        return len(orjson.dumps(message))
    except orjson.JSONEncodeError:
        return float("inf")


def _not_utf8(line: bytes | str) -> str:
    """Why a line the JSON parser found not to be UTF-8 is malformed, naming the first
    byte at fault (the parser's own words were "str is not valid UTF-8: surrogates not
    allowed", at column 1, whatever the line)."""
    raw = line if isinstance(line, bytes) else line.encode("utf-8", "surrogatepass")
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        # Shown after the text before it, not at an offset: a `.json` document's line is
        # the document wrapped in a batch object, whose offsets are not the file's.
        before = raw[max(0, exc.start - 20) : exc.start].decode("utf-8", "replace")
        return (
            f"not valid JSON (not UTF-8 text: byte 0x{raw[exc.start]:02X}, after {before!r},"
            " is not part of a UTF-8 character)"
        )
    return "not valid JSON (not UTF-8 text)"


#: Every level takes an opening and a closing bracket, so a line this short can be
#: neither too deep nor too large, and needs no look.
_SHORT = 2 * MAX_DEPTH

#: A message can be longer as compact JSON than as written: a number written short is
#: written back in full (``9e15``, 4 bytes, is ``9000000000000000.0``, 18), at most 4.5
#: times as long. A line no longer than this cannot hold a message over MAX_BYTES.
_SURELY_SMALL = MAX_BYTES * 2 // 9


def _batch(line: bytes | str, value: dict[str, Any], batch: list[Any]) -> list[Item]:
    """The items of a batch line, each refused that nests too deep or is too large."""
    items = expand_batch(value, batch)
    if len(line) <= _SHORT:
        return items
    # Most lines are cleared by counting their opening brackets.
    deep = _brackets(line) > MAX_DEPTH
    large = _size(line) > _SURELY_SMALL
    if deep or large:
        # The line is no measure of its items: look at each.
        items = [_refused(item, deep, large) for item in items]
    return items


def refusal(text: bytes | str, message: Mapping[str, Any]) -> str | None:
    """Why one message, ``text`` being its JSON, is not taken (too large, or nested too
    deep), or None. Counting the opening brackets clears most without walking them."""
    size = _size(text)
    if size > MAX_BYTES:
        return too_large(size)
    return TOO_DEEP if _brackets(text) > MAX_DEPTH and too_deep(message) else None


def _refused(item: Item, deep: bool, large: bool) -> Item:
    """A batch item, or why it is refused when it may nest too deep or be too large."""
    if isinstance(item, Malformed):
        return item
    if deep and too_deep(item):
        return Malformed(TOO_DEEP)
    size = len(orjson.dumps(item)) if large else 0
    return Malformed(too_large(size)) if size > MAX_BYTES else item


def too_deep(message: Mapping[str, Any]) -> bool:
    """Whether ``message`` nests objects and arrays more than :data:`MAX_DEPTH` levels deep.

    Walks containers only, without recursion, and stops at the first one too deep,
    so a cyclic structure ends too.
    """
    stack: list[tuple[Any, int]] = [(message, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_DEPTH:
            return True
        for child in value.values() if isinstance(value, Mapping) else value:
            if isinstance(child, (Mapping, list, tuple)):
                stack.append((child, depth + 1))
    return False


def _size(line: bytes | str) -> int:
    """How many bytes ``line`` takes (in UTF-8) without its line ending, which is not
    part of the message, counted only when it could matter."""
    if isinstance(line, bytes) or len(line) <= MAX_BYTES // 4:
        size = len(line)
    else:
        size = len(line.encode("utf-8", "surrogatepass"))
    return size - line_ending(line)


def line_ending(line: bytes | str) -> int:
    """How long the line ending ``line`` ends with is: 2 (CRLF), 1 (LF) or 0."""
    end = line[-2:]
    return 2 if end in _CRLF else 1 if end[-1:] in _LF else 0


_CRLF = (b"\r\n", "\r\n")
_LF = (b"\n", "\n")


def kept(item: Malformed, raw: bytes) -> tuple[Malformed, bytes]:
    """What the quarantine keeps of a refused line: all of it, or its first :data:`MAX_BYTES`.

    The quarantine must be able to store whatever it is given, like the events table;
    a longer line keeps its file and line number, which lead back to the rest.
    """
    size = len(raw) - line_ending(raw)
    if size <= MAX_BYTES:
        return item, raw
    note = f"; the quarantine keeps its first {MAX_BYTES:,} of {size:,} bytes"
    return Malformed(item.reason + note), raw[:MAX_BYTES]


def _brackets(line: bytes | str) -> int:
    """How many objects and arrays ``line`` opens (brackets inside strings counted too)."""
    if isinstance(line, str):
        return line.count("{") + line.count("[")
    return line.count(b"{") + line.count(b"[")


#: Why a batch object with no items gets a verdict: a submission asks for one.
EMPTY_BATCH = "batch is an empty array: it holds no message to judge"


def batch_of(message: object) -> list[Any] | None:
    """The ``batch`` list of a batch object given from Python (a dict), else None."""
    if type(message) is dict:
        batch = message.get("batch")
        if type(batch) is list:
            return batch
    return None


def expand_batch(envelope: Mapping[str, Any], batch: list[Any]) -> list[Item]:
    """The items of a batch object, with its top-level context and integrations merged in."""
    shared = {
        k: envelope[k] for k in ("context", "integrations") if isinstance(envelope.get(k), dict)
    }
    items: list[Item] = []
    for position, item in enumerate(batch):
        if type(item) is not dict:
            items.append(
                Malformed(f"batch item {position} is not a JSON object (got {kind_of(item)})")
            )
            continue
        if shared:
            item = {**item, **{k: _merge(v, item.get(k)) for k, v in shared.items()}}
        items.append(item)
    return items


def _merge(shared: dict[str, Any], own: object) -> dict[str, Any]:
    return {**shared, **own} if isinstance(own, dict) else shared


def not_an_object(value: object) -> Malformed | None:
    """Why a message given from Python is not one (it is not a mapping), or None.

    The same verdict as a line holding that JSON value: an application that passes
    on a request body as it came (``null``, an array) gets a verdict, not a crash.
    """
    if isinstance(value, Mapping):
        return None
    return Malformed(f"not a JSON object (got {kind_of(value)})")


def is_json_value(value: object) -> bool:
    """Whether ``value`` is of a kind JSON has (null, a number, a string, an array ...)."""
    return value is None or type(value) in (list, tuple, str, bool, int, float)


def one_by_one(
    messages: Iterable[Any],
    method: str,
    instead: str = "use submit for one message or submit_line for a line of JSON text",
) -> Iterable[Any]:
    """``messages`` given to a ``submit_many``, refused when it is one message or a line.

    Iterating a dict would judge its keys, and a string its characters. ``instead``
    says what to call for one message.
    """
    if isinstance(messages, (str, bytes, bytearray, memoryview, Mapping)):
        kind = "a dict" if isinstance(messages, Mapping) else type(messages).__name__
        raise TypeError(f"{method} takes an iterable of messages, got {kind}: {instead}")
    return messages


def kind_of(value: object) -> str:
    """What a value is, in JSON's words (an object, an array, a string, a number ...), or
    by its Python type where JSON has no such kind (a set, a datetime)."""
    return _KINDS.get(type(value)) or f"a {type(value).__name__}"


_KINDS = {
    dict: "an object",
    list: "an array",
    tuple: "an array",
    str: "a string",
    bool: "a boolean",
    type(None): "null",
    int: "a number",
    float: "a number",
}
