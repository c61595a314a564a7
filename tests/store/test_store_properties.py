"""Property tests of the store: round-trip, agreement with the gate, split runs."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lifecycle import Gate
from lifecycle.reader import InputLine
from lifecycle.service import Lifecycle
from tests.store.helpers import account_history, interleave, wipe

SETTINGS = settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture
def store(db_url: str) -> Iterator[Lifecycle]:
    """One migrated database per test, wiped by each example."""
    lc = Lifecycle(db_url, create_schema=True)
    yield lc
    lc.close()


@st.composite
def streams(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Interleaved account histories with some messages dropped, repeated or swapped."""
    accounts = draw(st.integers(1, 3))
    histories = [account_history(f"acct_{n}", users=2, sessions=1) for n in range(accounts)]
    stream = interleave(histories, draw(st.integers(0, 10_000)))
    for op, at in draw(
        st.lists(st.tuples(st.sampled_from(["drop", "repeat", "swap"]), st.integers(0, 10_000)),
                 max_size=6)
    ):  # fmt: skip
        at %= len(stream)
        if op == "drop" and len(stream) > 1:
            del stream[at]
        elif op == "repeat":
            stream.insert(min(at + 3, len(stream)), stream[at])
        elif op == "swap" and at + 1 < len(stream):
            stream[at], stream[at + 1] = stream[at + 1], stream[at]
    return stream


def as_lines(stream: list[dict[str, Any]], styles: list[int]) -> list[InputLine]:
    """Encode messages as JSONL lines in varied but valid JSON spellings; style 3 sends a
    message as a batch of one that carries its context."""
    lines = []
    for number, (message, style) in enumerate(zip(stream, styles, strict=False), start=1):
        if style == 3:
            own = {k: v for k, v in message.items() if k != "context"}
            raw = orjson.dumps({"batch": [own], "context": message.get("context")})
        elif style == 1:
            raw = orjson.dumps(message, option=orjson.OPT_INDENT_2).replace(b"\n", b" ")
        elif style == 2:
            raw = b"  " + orjson.dumps(dict(reversed(message.items())))
        else:
            raw = orjson.dumps(message)
        lines.append(InputLine("input.jsonl", number, raw + b"\n"))
    return lines


@SETTINGS
@given(stream=streams(), styles=st.lists(st.integers(0, 3), min_size=60, max_size=60))
def test_round_trip_is_byte_for_byte(store: Lifecycle, stream: list[dict[str, Any]],
                                     styles: list[int]) -> None:  # fmt: skip
    """What goes in comes out: accepted messages in order, the payload identical to the line
    sent; a batch's item is stored as the message it stands for, the batch's context in it
    (a batch of one was stored as the whole batch, and sent to Segment so)."""
    wipe(store)
    styles = styles + [0] * len(stream)
    lines = as_lines(stream, styles)
    results = store.submit_lines(lines)
    sent = {
        line.number: (message, style)
        for line, message, style in zip(lines, stream, styles, strict=False)
    }
    stored = iter(store.events())
    for item, verdict in results:
        if verdict.accepted:
            payload = next(stored).payload
            message, style = sent[item.line]
            if style == 3:
                assert orjson.loads(payload) == message
            else:
                assert payload == item.raw.rstrip(b"\n").decode()
    assert next(stored, None) is None


@SETTINGS
@given(stream=streams())
def test_store_agrees_with_the_gate(store: Lifecycle, stream: list[dict[str, Any]]) -> None:
    """Verdicts and every account's state are those of the in-memory gate for the same input."""
    wipe(store)
    gate = Gate()
    assert store.submit_many(stream) == gate.submit_many(stream)
    assert {s.account: s for s in store.accounts()} == {s.account: s for s in gate.accounts()}


@SETTINGS
@given(stream=streams(), cuts=st.lists(st.integers(0, 100), max_size=4))
def test_split_runs_do_not_change_verdicts(store: Lifecycle, stream: list[dict[str, Any]],
                                           cuts: list[int]) -> None:  # fmt: skip
    """Submitting the input in arbitrary runs gives the verdicts of one run through the gate."""
    wipe(store)
    expected = Gate().submit_many(stream)
    bounds = sorted({0, len(stream), *(c % (len(stream) + 1) for c in cuts)})
    got = []
    for start, end in itertools.pairwise(bounds):
        got += store.submit_many(stream[start:end])
    assert got == expected
