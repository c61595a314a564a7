"""Policies the tests share."""

from __future__ import annotations

from lifecycle import DEFAULT_POLICY, STRING, EventSpec, Refusal

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
