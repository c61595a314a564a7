"""The default B2B SaaS lifecycle: the guards, effects and machine of RULES.md.

Each guard is one rule with one code; each effect is one change to users or
the trial. :data:`DEFAULT_POLICY` wires them to the account machine::

    (none) --Account Created--> created --Trial Started--> trial --Trial Ended--> active
    created | trial | active --Account Deleted--> deleted   (final)

User events are internal transitions of every live state. Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from lifecycle.envelope import Event
from lifecycle.policy import Change, Guard, Policy, Refusal
from lifecycle.spec import (
    ACCOUNT_ADDED_USER,
    ACCOUNT_CREATED,
    ACCOUNT_DELETED,
    ACCOUNT_REMOVED_USER,
    INVITE_SENT,
    NOT_SIGNED_IN,
    SIGNED_IN,
    SIGNED_OUT,
    SIGNED_UP,
    SPEC_EVENTS,
    TRIAL_ALREADY_STARTED,
    TRIAL_DATES_INVERTED,
    TRIAL_ENDED,
    TRIAL_MISMATCH,
    TRIAL_NOT_ACTIVE,
    TRIAL_STARTED,
    USER_ALREADY_MEMBER,
    USER_ALREADY_SIGNED_UP,
    USER_NOT_MEMBER,
    USER_UNKNOWN,
    date_instant,
)
from lifecycle.state import NONE, AccountState, TrialState, UserState, user_state, with_user

CREATED, TRIAL, ACTIVE, DELETED = "created", "trial", "active", "deleted"
LIVE = [CREATED, TRIAL, ACTIVE]

# -- guards -------------------------------------------------------------------------------


def _trial_dates_ordered(state: AccountState, event: Event) -> str | None:
    start, end = event.properties.get("trial_start_date"), event.properties.get("trial_end_date")
    if start is None or end is None:
        return None
    start_at, end_at = date_instant(start), date_instant(end)
    if start_at is not None and end_at is not None and end_at < start_at:
        return f"trial_end_date {end} is before trial_start_date {start}"
    return None


def _trial_matches(state: AccountState, event: Event) -> str | None:
    trial = state.trial or TrialState()
    plan = event.properties.get("trial_plan_name")
    if plan is not None and trial.plan_name is not None and plan != trial.plan_name:
        return f"trial_plan_name {plan!r} differs from the started trial's {trial.plan_name!r}"
    start = event.properties.get("trial_start_date")
    started = trial.start_date
    if start is not None and started is not None and date_instant(start) != date_instant(started):
        return f"trial_start_date {start} differs from the started trial's {trial.start_date}"
    return None


def _user_not_signed_up(state: AccountState, event: Event) -> str | None:
    if state.user(event.user).signed_up:
        return f"user {event.user} already signed up"
    return None


def _user_not_member(state: AccountState, event: Event) -> str | None:
    role = state.user(event.user).role
    if role is not None:
        return f"user {event.user} is already a member (role {role!r})"
    return None


def _user_removable(state: AccountState, event: Event) -> str | None:
    if not state.user(event.user).known:
        return f"user {event.user} is not a member (expected Signed Up or Account Added User first)"
    return None


def _user_known(state: AccountState, event: Event) -> str | None:
    if not state.user(event.user).known:
        return f"user {event.user} is unknown (expected Signed Up or Account Added User first)"
    return None


def _user_signed_in(state: AccountState, event: Event) -> str | None:
    if not state.user(event.user).signed_in:
        return f"user {event.user} is not signed in (expected Signed In first)"
    return None


GUARDS = (
    Guard("trial_dates_ordered", TRIAL_DATES_INVERTED, _trial_dates_ordered,
          "trial_end_date is not before trial_start_date"),
    Guard("trial_matches", TRIAL_MISMATCH, _trial_matches,
          "plan and start date agree with the started trial"),
    Guard("user_not_signed_up", USER_ALREADY_SIGNED_UP, _user_not_signed_up,
          "the user has not signed up yet"),
    Guard("user_not_member", USER_ALREADY_MEMBER, _user_not_member,
          "the user is not a member yet"),
    Guard("user_removable", USER_NOT_MEMBER, _user_removable,
          "the user is known to the account"),
    Guard("user_known", USER_UNKNOWN, _user_known, "the user is known to the account"),
    Guard("user_signed_in", NOT_SIGNED_IN, _user_signed_in, "the user is signed in"),
)  # fmt: skip

# -- effects ------------------------------------------------------------------------------


def _with_user(state: AccountState, user: str, new: UserState | None) -> Change:
    return with_user(state.users, user, new), state.trial


def _start_trial(state: AccountState, event: Event) -> Change:
    p = event.properties
    trial = TrialState(
        plan_name=p.get("trial_plan_name"),
        start_date=p.get("trial_start_date"),
        end_date=p.get("trial_end_date"),
        started_at=event.timestamp,
    )
    return state.users, trial


def _end_trial(state: AccountState, event: Event) -> Change:
    trial = state.trial or TrialState()
    end = event.properties.get("trial_end_date") or trial.end_date
    return state.users, replace(trial, end_date=end, ended=True, ended_at=event.timestamp)


def _sign_up(state: AccountState, event: Event) -> Change:
    user = state.user(event.user)
    return _with_user(state, event.user, user_state(True, user.role, user.signed_in))


def _add_user(state: AccountState, event: Event) -> Change:
    role = event.properties.get("role") or ""
    user = state.user(event.user)
    return _with_user(state, event.user, user_state(user.signed_up, role, user.signed_in))


def _remove_user(state: AccountState, event: Event) -> Change:
    return _with_user(state, event.user, None)


def _sign_in(state: AccountState, event: Event) -> Change:
    user = state.user(event.user)
    if user.signed_in:
        return state.users, state.trial
    return _with_user(state, event.user, user_state(user.signed_up, user.role, True))


def _sign_out(state: AccountState, event: Event) -> Change:
    user = state.user(event.user)
    return _with_user(state, event.user, user_state(user.signed_up, user.role, False))


EFFECTS = {
    "start_trial": _start_trial,
    "end_trial": _end_trial,
    "sign_up": _sign_up,
    "add_user": _add_user,
    "remove_user": _remove_user,
    "sign_in": _sign_in,
    "sign_out": _sign_out,
}

# -- the machine --------------------------------------------------------------------------

TRANSITIONS: list[dict[str, Any]] = [
    {"trigger": ACCOUNT_CREATED, "source": NONE, "dest": CREATED},
    {"trigger": TRIAL_STARTED, "source": CREATED, "dest": TRIAL,
     "conditions": ["trial_dates_ordered"], "after": ["start_trial"]},
    {"trigger": TRIAL_ENDED, "source": TRIAL, "dest": ACTIVE,
     "conditions": ["trial_dates_ordered", "trial_matches"], "after": ["end_trial"]},
    {"trigger": ACCOUNT_DELETED, "source": LIVE, "dest": DELETED},
    {"trigger": SIGNED_UP, "source": LIVE, "dest": None,
     "conditions": ["user_not_signed_up"], "after": ["sign_up"]},
    {"trigger": ACCOUNT_ADDED_USER, "source": LIVE, "dest": None,
     "conditions": ["user_not_member"], "after": ["add_user"]},
    {"trigger": ACCOUNT_REMOVED_USER, "source": LIVE, "dest": None,
     "conditions": ["user_removable"], "after": ["remove_user"]},
    {"trigger": SIGNED_IN, "source": LIVE, "dest": None,
     "conditions": ["user_known"], "after": ["sign_in"]},
    {"trigger": SIGNED_OUT, "source": LIVE, "dest": None,
     "conditions": ["user_known", "user_signed_in"], "after": ["sign_out"]},
    {"trigger": INVITE_SENT, "source": LIVE, "dest": None, "conditions": ["user_known"]},
]  # fmt: skip

REFUSALS = {
    TRIAL_STARTED: Refusal(
        TRIAL_ALREADY_STARTED, "an account gets one trial and it was already started"
    ),
    TRIAL_ENDED: Refusal(TRIAL_NOT_ACTIVE, "no trial is running"),
}

#: The default policy: exactly the contract of RULES.md.
DEFAULT_POLICY = Policy(
    name="b2b-saas",
    states=[NONE, CREATED, TRIAL, ACTIVE, DELETED],
    initial=NONE,
    final=[DELETED],
    events=SPEC_EVENTS,
    transitions=TRANSITIONS,
    guards=GUARDS,
    effects=EFFECTS,
    refusals=REFUSALS,
)
