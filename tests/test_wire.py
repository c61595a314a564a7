"""What the relay sends, and the gate's measure of it against Segment's 32 KB."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from lifecycle.wire import MAX_MESSAGE_BYTES, as_sent, oversize, sent_size

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


@settings(max_examples=300, deadline=None)
@given(
    properties=st.dictionaries(st.text(max_size=6), _VALUES, max_size=6),
    text=st.text(st.characters(codec="utf-8"), min_size=1, max_size=3),
    repeat=st.integers(0, 12_000),
)
def test_oversize_agrees_with_the_message_as_sent(
    properties: dict[str, Any], text: str, repeat: int
) -> None:
    """``oversize`` is None exactly when the message, as the relay would send it (without a
    messageId or timestamp, so with the longest it fills in), fits in 32 KB: its fast path,
    which skips measuring messages whose compact JSON is small, never lets a large one by."""
    message = _message(properties, text, repeat)
    sent = sent_size(
        as_sent(dict(message), "0f8a7c56-8f5d-4d8e-9a53-0e4c1b8f6a21", "2024-01-01T00:00:00Z")
    )
    size = oversize(message)
    if sent > MAX_MESSAGE_BYTES:
        assert size is not None and size >= sent
    else:
        assert size is None or size <= sent + 64


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
