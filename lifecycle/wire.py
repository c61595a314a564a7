"""A message as the relay sends it to Segment, and the limits Segment sets on it. Pure.

Both sides need them. The relay writes every stored message this way; the gate
refuses what Segment would refuse, so that an accepted event is one the relay can
deliver. An accepted ``Account Created`` that the relay then had to park, while the
account's ``Signed Up`` went on, handed Segment the very sequence lifecycle exists
to stop.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import orjson

#: Segment refuses a message larger than this (as the client library measures it: JSON bytes).
MAX_MESSAGE_BYTES = 32 << 10
#: Segment keeps at most this many characters of a ``messageId``.
MAX_MESSAGE_ID_CHARS = 100

#: What the relay may add to a message (a derived ``messageId``, a ``timestamp``, a ``type``),
#: in bytes, at most: the keys, the values and their separators.
_ADDED_BYTES = 128
#: How much larger a message's compact UTF-8 JSON can grow written as the client library
#: writes it: a space after every ``,`` and ``:``, non-ASCII characters escaped (``é``, two
#: bytes, becomes six), ``1e16`` spelled ``1e+16``, and DEL (U+007F, one byte) escaped as
#: ``\u007f``, six: the most.
_GROWTH = 6
#: A message whose compact JSON is at most this long cannot come near the limit unmeasured.
_SMALL = (MAX_MESSAGE_BYTES - _ADDED_BYTES) // _GROWTH
#: Stand-ins, as long as what the relay fills in: a derived id (a UUID) and a stored instant.
_FILLED_ID = "00000000-0000-0000-0000-000000000000"
_FILLED_TIMESTAMP = "2000-01-01T00:00:00.000000Z"


def as_sent(message: dict[str, Any], message_id: str, stored_at: str) -> dict[str, Any]:
    """``message`` (a decoded copy, changed in place) as the relay sends it.

    It goes as it was accepted, with three exceptions: its ``messageId`` is the one
    its outbox row holds (the same, or one derived for a message that had none); a
    missing ``timestamp`` becomes ``stored_at``, as the client library would have
    stamped it; and ``sentAt`` is dropped, since Segment corrects clock skew with it
    and the request's own ``sentAt`` is the one that describes this send. A missing
    ``type`` becomes ``track``.
    """
    message["messageId"] = message_id
    if not message.get("timestamp"):
        message["timestamp"] = stored_at
    message.pop("sentAt", None)
    if message.get("type") is None:
        message["type"] = "track"
    return message


def sent_size(message: Mapping[str, Any]) -> int:
    """The message's size as the client library measures it: bytes of ``json.dumps``."""
    return len(json.dumps(message))


def oversize(message: Mapping[str, Any]) -> int | None:
    """The size of ``message`` as the relay would send it, when that is over
    :data:`MAX_MESSAGE_BYTES`; else None.

    Measuring costs as much as sending, so a message whose compact JSON is at most a
    sixth of the limit (nearly every one) is let by on that alone, in a fraction of a
    microsecond; only the others are written out as the client library writes them.
    None too when the message cannot be written at all (nested too deep, say): that
    is for other checks to say.
    """
    try:
        payload: bytes | None = orjson.dumps(message)
    except (TypeError, RecursionError):  # an int past 64 bits, a value given from Python
        payload = None
    if payload is not None and len(payload) <= _SMALL:
        return None
    mid = message.get("messageId")
    message_id = mid if isinstance(mid, str) and mid else _FILLED_ID
    sent = as_sent(_stored(message, payload), message_id, _FILLED_TIMESTAMP)
    try:
        size = len(json.dumps(sent, default=str))
    except (ValueError, RecursionError):
        return None
    return size if size > MAX_MESSAGE_BYTES else None


def _stored(message: Mapping[str, Any], payload: bytes | None) -> dict[str, Any]:
    """``message`` as the relay reads it back from the store: its JSON (``payload``, when
    the fast encoder could write it), decoded.

    That is what is sent, not the values given: an enum or a dataclass from Python is
    stored as the JSON the store's encoder writes of it, and an integer past 64 bits
    comes back a float (``10**300`` is sent as ``1e+300``). A value no encoder writes
    (the gate in memory takes any) is measured as its text.
    """
    if payload is None:
        try:
            payload = json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode()
        except (TypeError, ValueError, RecursionError):
            return dict(message)
    try:
        decoded = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return dict(message)
    return decoded if isinstance(decoded, dict) else dict(message)
