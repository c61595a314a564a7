"""The mapping from events to stored rows (no database needed)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st

from lifecycle.envelope import Event, catalog_index, parse_event
from lifecycle.spec import SPEC_EVENTS
from lifecycle.store.codec import occurred_at

CATALOG = catalog_index(SPEC_EVENTS)

offsets = st.integers(min_value=-14 * 60, max_value=14 * 60).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)
instants = st.datetimes(
    min_value=datetime(1970, 1, 2), max_value=datetime(2100, 1, 1), timezones=offsets
)


def _signed_in(timestamp: str) -> Event:
    message = {
        "type": "track",
        "event": "Signed In",
        "userId": "u1",
        "context": {"groupId": "acct_1"},
        "timestamp": timestamp,
    }
    event = parse_event(message, CATALOG)
    assert isinstance(event, Event)
    return event


@given(instants, st.sampled_from(["auto", "milliseconds", "microseconds"]))
def test_occurred_at_is_the_instant_in_naive_utc(moment: datetime, precision: str) -> None:
    """Whatever the offset and precision sent, the stored instant is the same moment in UTC,
    whether the envelope's parsed value is reused or the timestamp is parsed again."""
    text = moment.isoformat(timespec=precision)
    event = _signed_in(text)
    expected = datetime.fromisoformat(text).astimezone(UTC).replace(tzinfo=None)
    assert occurred_at(event) == expected
    assert occurred_at(dataclasses.replace(event, _occurred=None)) == expected


def test_the_parsed_instant_takes_no_part_in_equality() -> None:
    """``occurred`` is derived from ``timestamp``: events built either way compare equal."""
    event = _signed_in("2024-03-01T10:00:00Z")
    assert event.occurred == datetime(2024, 3, 1, 10, tzinfo=UTC)
    assert dataclasses.replace(event, _occurred=None) == event
    assert occurred_at(dataclasses.replace(event, timestamp=None, _occurred=None)) is None
