"""The store tests' backends (SQLite, PostgreSQL, MariaDB), and a fake Segment per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.relay.fake_segment import FakeSegment

# Re-exported fixtures: every relay test that takes `db_url` runs on each backend.
from tests.store.conftest import backend, db_url  # noqa: F401


@pytest.fixture
def segment() -> Iterator[FakeSegment]:
    """A running fake Segment on 127.0.0.1 that records every batch."""
    with FakeSegment() as server:
        yield server
