"""Shared setup of the tests of lifecycle.testing."""

from __future__ import annotations

import pytest

from lifecycle.policy import Policy
from lifecycle.rules import DEFAULT_POLICY
from tests.policies import SUBSCRIPTIONS

pytest_plugins = ["pytester"]


@pytest.fixture(params=[DEFAULT_POLICY, SUBSCRIPTIONS], ids=lambda p: p.name)
def policy(request: pytest.FixtureRequest) -> Policy:
    """The default policy and a custom one."""
    return request.param  # type: ignore[no-any-return]
