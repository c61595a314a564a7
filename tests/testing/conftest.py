"""Shared setup of the tests of lifecycle.testing."""

from __future__ import annotations

import pytest

from lifecycle.policy import Policy, Refusal
from lifecycle.rules import DEFAULT_POLICY
from lifecycle.spec import STRING, EventSpec

pytest_plugins = ["pytester"]

#: A custom policy: an account may be activated by a subscription, without a trial.
SUBSCRIPTIONS = DEFAULT_POLICY.extend(
    name="with-subscriptions",
    events=[EventSpec("Subscription Started", {"plan_name": STRING})],
    transitions=[{"trigger": "Subscription Started", "source": "created", "dest": "active"}],
    refusals={
        "Subscription Started": Refusal(
            "subscription_not_allowed", "a subscription starts only on a new account"
        )
    },
)


@pytest.fixture(params=[DEFAULT_POLICY, SUBSCRIPTIONS], ids=lambda p: p.name)
def policy(request: pytest.FixtureRequest) -> Policy:
    """The default policy and a custom one."""
    return request.param  # type: ignore[no-any-return]
