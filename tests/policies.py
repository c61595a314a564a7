"""Policies the tests share."""

from __future__ import annotations

from dataclasses import dataclass

from lifecycle import DEFAULT_POLICY, STRING, AccountState, EventSpec, Guard, Refusal
from lifecycle.envelope import Event

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

#: The events about users, which the default policy takes in every live state: a custom
#: state must refuse them, or take them.
USER_EVENTS = ("Signed Up", "Signed In", "Signed Out", "Invite Sent", "Account Added User",
               "Account Removed User")  # fmt: skip
_PAUSED_REFUSES = [*USER_EVENTS, "Trial Started", "Trial Ended"]

#: A custom policy with a state of its own: a new account may be paused, then resumed.
PAUSING = DEFAULT_POLICY.extend(
    name="pausing",
    states=["paused"],
    events=[EventSpec("Account Paused"), EventSpec("Account Resumed")],
    transitions=[
        {"trigger": "Account Paused", "source": "created", "dest": "paused"},
        {"trigger": "Account Resumed", "source": "paused", "dest": "created"},
        {"trigger": "Account Deleted", "source": "paused", "dest": "deleted"},
    ],
    refusals={
        "Account Paused": Refusal("not_pausable", "only a new account pauses"),
        "Account Resumed": Refusal("not_paused", "only a paused account resumes"),
        **{name: Refusal("account_paused", "the account is paused") for name in _PAUSED_REFUSES},
    },
)


@dataclass(frozen=True)
class _Allowed:
    """Settings a guard closes over; its repr holds a set, whose order varies by process."""

    methods: frozenset[str]


def _only(allowed: _Allowed) -> Guard:
    def check(state: AccountState, event: Event) -> str | None:
        method = event.properties.get("method")
        return None if method is None or method in allowed.methods else f"method {method}"

    return Guard("known_method", "unknown_method", check)


#: A tightened policy whose guard closes over an object holding a set.
KNOWN_METHODS = DEFAULT_POLICY.with_guard(
    "Signed In", _only(_Allowed(frozenset({"password", "sso", "magic-link", "passkey"})))
)

#: Roles in an order that comes from a set (string hashes vary from process to process).
_ROLES = dict.fromkeys({"Owner", "Admin", "Member", "Viewer", "Billing", "Guest", "Auditor"})
#: A number of more than 4,300 digits, which ``repr`` refuses.
_MASK = (1 << 20_000) - 1


def _known_role(state: AccountState, event: Event) -> str | None:
    role = event.properties.get("role")
    if role is None or (role in _ROLES and _MASK > 0):  # reads both constants
        return None
    return f"a role among {sorted(_ROLES)}"


#: A tightened policy whose guard reads module constants: a dict and a large number.
KNOWN_ROLES = DEFAULT_POLICY.with_guard(
    "Account Added User", Guard("role_known", "role_unknown", _known_role)
)
