"""What the relay sends, and the gate's measure of it against Segment's 32 KB."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from lifecycle.relay import _prepare
from lifecycle.wire import MAX_MESSAGE_BYTES, as_sent, oversize, sent_size

_STORED_AT = datetime(2024, 1, 1, 12, 0, 0, 123456)

#: Values whose JSON grows most when the client library writes it: non-ASCII text,
#: floats with exponents, and short items between many separators.
_SCALARS = st.one_of(
    st.text(st.characters(codec="utf-8"), max_size=40),
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(-(2**63), 2**63 - 1),
    st.booleans(),
    st.none(),
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=8) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=40,
)


def _message(properties: dict[str, Any], text: str, repeat: int) -> dict[str, Any]:
    return {
        "event": "Signed In",
        "userId": "u1",
        "context": {"groupId": "acct_1"},
        "sentAt": "2024-01-01T00:00:00Z",
        "properties": {**properties, "pad": text * repeat},
    }


#: Padding: any text, and the characters that grow most when written (DEL: 1 byte to 6).
_PADS = st.text(st.characters(codec="utf-8"), min_size=1, max_size=3) | st.text(
    st.sampled_from("\x7f\x00éx😀"), min_size=1, max_size=3
)
#: Messages of any size up to a few times Segment's limit, built to grow when written.
_MESSAGES = st.builds(
    _message,
    st.dictionaries(st.text(max_size=6), _VALUES, max_size=6),
    _PADS,
    st.integers(0, 12_000),
)


@settings(max_examples=300, deadline=None)
@given(message=_MESSAGES)
def test_oversize_agrees_with_the_message_as_sent(message: dict[str, Any]) -> None:
    """``oversize`` is None exactly when the message, as the relay would send it (without a
    messageId or timestamp, so with the longest it fills in), fits in 32 KB: its fast path,
    which skips measuring messages whose compact JSON is small, never lets a large one by."""
    sent = sent_size(
        as_sent(dict(message), "0f8a7c56-8f5d-4d8e-9a53-0e4c1b8f6a21", "2024-01-01T00:00:00Z")
    )
    size = oversize(message)
    if sent > MAX_MESSAGE_BYTES:
        assert size is not None and size >= sent
    else:
        assert size is None or size <= sent + 64


@settings(max_examples=200, deadline=None)
@given(message=_MESSAGES)
def test_what_the_gate_lets_by_the_relay_sends(message: dict[str, Any]) -> None:
    """A message ``oversize`` lets by is one the relay prepares to send, not parks: the
    gate measures what the relay will send. With DEL counted as three bytes at most, a
    message of 10,500 DELs (63 KB as sent) was accepted, then parked."""
    stored = orjson.dumps(message).decode()
    prepared = _prepare((1, "0f8a7c56-8f5d-4d8e-9a53-0e4c1b8f6a21", _STORED_AT, stored))
    if oversize(message) is None:
        assert not isinstance(prepared, str), prepared
    else:
        assert isinstance(prepared, str) and "over Segment's 32768-byte limit" in prepared


class _Note(enum.Enum):
    BIG = "x" * 40_000


def test_values_given_from_python_are_measured_as_stored() -> None:
    """What a Python value is measured as is the JSON the store writes of it, read back: an
    enum is its value (it was measured as ``_Note.BIG``, and let by), and an integer past
    64 bits comes back a float (``10**300`` had made a 1 KB message 36 KB)."""
    assert oversize(_message({"note": _Note.BIG}, "", 0)) is not None
    assert oversize(_message({"n": [10**300] * 120}, "", 0)) is None


def test_as_sent_keeps_the_message_but_for_what_the_relay_owns() -> None:
    """The relay sends the message as accepted: only messageId, a missing timestamp and type
    are filled in and sentAt dropped; everything else, unknown keys included, stays."""
    message = {"event": "Signed In", "sentAt": "x", "context": {"groupId": "a"}, "extra": [1]}
    assert as_sent(dict(message), "m1", "2024-01-01T00:00:00Z") == {
        "event": "Signed In",
        "context": {"groupId": "a"},
        "extra": [1],
        "messageId": "m1",
        "timestamp": "2024-01-01T00:00:00Z",
        "type": "track",
    }
    given_time = {**message, "timestamp": "2020-01-01T00:00:00Z", "type": "track"}
    assert as_sent(dict(given_time), "m1", "2024-01-01T00:00:00Z")["timestamp"] == (
        "2020-01-01T00:00:00Z"
    )
