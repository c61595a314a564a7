"""From a line of input to the Segment messages it holds.

A line holds one message (a JSON object) or a Segment batch object
``{"batch": [...], "context": ..., "integrations": ...}`` whose items are
messages; the batch's top-level ``context`` and ``integrations`` are merged
into every item (an item's own keys win), as Segment's HTTP API does. Pure:
decoding bytes is not I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson


@dataclass(frozen=True, slots=True)
class Malformed:
    """A line, or a batch item, that is not a JSON object."""

    reason: str


Item = Mapping[str, Any] | Malformed


def decode_line(line: bytes | str) -> list[Item]:
    """The messages a line holds, in order (one item per batch entry).

    A line that is not a JSON object gives one :class:`Malformed` item; so does
    a batch entry that is not an object.
    """
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        return [Malformed(f"not valid JSON ({exc.args[0] if exc.args else exc})")]
    if type(value) is not dict:
        return [Malformed(f"not a JSON object (got {_kind(value)})")]
    batch = value.get("batch")
    if type(batch) is not list:
        return [value]
    return expand_batch(value, batch)


def expand_batch(envelope: Mapping[str, Any], batch: list[Any]) -> list[Item]:
    """The items of a batch object, with its top-level context and integrations merged in."""
    shared = {
        k: envelope[k] for k in ("context", "integrations") if isinstance(envelope.get(k), dict)
    }
    items: list[Item] = []
    for position, item in enumerate(batch):
        if type(item) is not dict:
            items.append(
                Malformed(f"batch item {position} is not a JSON object (got {_kind(item)})")
            )
            continue
        if shared:
            item = {**item, **{k: _merge(v, item.get(k)) for k, v in shared.items()}}
        items.append(item)
    return items


def _merge(shared: dict[str, Any], own: object) -> dict[str, Any]:
    return {**shared, **own} if isinstance(own, dict) else shared


def _kind(value: object) -> str:
    return {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number"
    )
