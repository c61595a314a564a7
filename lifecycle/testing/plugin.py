"""The pytest plugin of lifecycle: fixtures for tests of code that emits lifecycle events.

Registered through the ``pytest11`` entry point, so installing lifecycle is
enough. Fixtures:

* ``lifecycle_policy``: the policy the other fixtures use (the default policy;
  override the fixture in a ``conftest.py`` to test under your own);
* ``lifecycle_gate``: a fresh in-memory :class:`lifecycle.Gate`;
* ``lifecycle_store``: a :class:`lifecycle.Lifecycle` on a temporary SQLite
  database, closed after the test.

Needs neither Hypothesis nor a database server.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from lifecycle.gate import Gate
from lifecycle.policy import Policy
from lifecycle.rules import DEFAULT_POLICY

if TYPE_CHECKING:
    from lifecycle.service import Lifecycle


@pytest.fixture
def lifecycle_policy() -> Policy:
    """The policy ``lifecycle_gate`` and ``lifecycle_store`` judge under (override to change)."""
    return DEFAULT_POLICY


@pytest.fixture
def lifecycle_gate(lifecycle_policy: Policy) -> Gate:
    """A fresh in-memory gate: no account exists yet."""
    return Gate(lifecycle_policy)


@pytest.fixture
def lifecycle_store(lifecycle_policy: Policy, tmp_path: Path) -> Iterator[Lifecycle]:
    """A database-backed lifecycle on a temporary SQLite file, closed after the test."""
    from lifecycle.service import Lifecycle  # storage is imported only when asked for

    store = Lifecycle(f"sqlite:///{tmp_path / 'lifecycle.db'}", policy=lifecycle_policy)
    try:
        yield store
    finally:
        store.close()
