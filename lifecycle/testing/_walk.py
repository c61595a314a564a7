"""Walking a policy: which events are legal next, and how to reach a given rejection.

This is the pure half of :mod:`lifecycle.testing.strategies`: it draws nothing.
It keeps the state of every account of a history being generated (folded with
:func:`lifecycle.decide`), lists the legal next steps from the policy's compiled
table and guards, and, for a rejection code, lists the final events that
RULES.md says must get it, and the shortest legal steps that make one possible.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from lifecycle.decide import decide
from lifecycle.envelope import Event, parse_event
from lifecycle.policy import Policy, Refusal, Rule
from lifecycle.rules import CREATED, DEFAULT_POLICY, TRIAL
from lifecycle.spec import (
    ACCOUNT_ADDED_USER,
    ACCOUNT_CREATED,
    ACCOUNT_DELETED_CODE,
    ACCOUNT_EXISTS,
    ACCOUNT_REMOVED_USER,
    ACCOUNT_UNKNOWN,
    ENVELOPE_CODES,
    INVALID_PROPERTY,
    INVITE_SENT,
    NOT_SIGNED_IN,
    REJECTION_CODES,
    SIGNED_IN,
    SIGNED_OUT,
    SIGNED_UP,
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
    EventSpec,
)
from lifecycle.state import AccountState
from lifecycle.testing._steps import Step
from lifecycle.testing._values import full_properties

#: How a final event's properties are drawn: realistic and valid, trial dates
#: inverted, or a trial that differs from the one started.
ANY, INVERTED, MISMATCH = "any", "inverted", "mismatch"

#: What :meth:`Walk.apply` returns for a message the policy does not take for an event.
IGNORED = "ignored"

#: Steps a new account may need before a code can be produced, and how many
#: users those steps are sent by.
MAX_RECIPE_STEPS, RECIPE_USERS = 5, 2


@dataclass(frozen=True, slots=True)
class Final:
    """One event that must be rejected with a code, and how to draw its properties."""

    event: str
    user: str
    shape: str = ANY


#: The default policy's guards: each looks at the account, the event's properties and its
#: sender's state in the account, not at the sender's name.
_STATE_GUARDS = frozenset(
    guard
    for rule in DEFAULT_POLICY.table.values()
    if isinstance(rule, Rule)
    for guard in rule.guards
)


def probe(account: str, event: str, user: str, properties: Mapping[str, Any]) -> Event:
    """An :class:`Event` as if sent without messageId or timestamp (for checks only)."""
    return Event(event, event, account, user, None, None, properties, {})


class Walk:
    """The accounts of one history being generated, folded as the policy would fold them."""

    def __init__(self, policy: Policy, accounts: list[str], users: list[str]) -> None:
        self.policy = policy
        self.accounts = accounts
        self.users = users
        self.states: dict[str, AccountState] = {}
        self.history: list[dict[str, Any]] = []
        self._options: dict[str, list[tuple[EventSpec, list[str]]]] = {}

    def state(self, account: str) -> AccountState:
        """The account's state so far (the initial state if it was never created)."""
        return self.states.get(account) or AccountState(account, self.policy.initial)

    def options(self, account: str) -> list[tuple[EventSpec, list[str]]]:
        """Each event legal now on ``account``, with the users who may send it.

        An event is legal for a user when its guards pass without properties
        or with every spec property set (see :func:`full_properties`).
        """
        found = self._options.get(account)
        if found is None:
            found = self._options[account] = self._legal_now(self.state(account))
        return found

    def _legal_now(self, state: AccountState) -> list[tuple[EventSpec, list[str]]]:
        found = []
        for spec in self.policy.events:
            entry = self.policy.rule(state.status, spec.name)
            if not isinstance(entry, Rule):
                continue
            users = self.users
            if entry.guards:
                users = self._passing(entry, state, spec)
            if users:
                found.append((spec, users))
        return found

    def _passing(self, entry: Rule, state: AccountState, spec: EventSpec) -> list[str]:
        """The users whose ``spec`` event the guards of ``entry`` let through in ``state``.

        The default policy's guards look at a user's state in the account, never at the
        name: users in one state (every user the account has not seen shares one) are
        asked about once. Trying each user against the guards at every step had made
        generation grow with the users (18 ms an event with 1,000). A policy's own
        guards may look at anything, so with one of them every user is tried.
        """
        variants = _variants(spec)
        by_state = all(guard in _STATE_GUARDS for guard in entry.guards)
        answers: dict[object, bool] = {}
        users = []
        for user in self.users:
            key = state.user(user) if by_state else user
            ok = answers.get(key)
            if ok is None:
                ok = answers[key] = any(
                    passes(entry, state, probe(state.account, spec.name, user, p)) for p in variants
                )
            if ok:
                users.append(user)
        return users

    def apply(self, message: dict[str, Any]) -> str | None:
        """Fold a message into its account and the history.

        Returns None when the policy accepted it, else the code it was refused
        with (:data:`IGNORED` if it was not even taken for a lifecycle event).
        """
        event = parse_event(message, self.policy.catalog)
        if event is None:
            return IGNORED
        if not isinstance(event, Event):
            return event.code
        outcome = decide(self.policy, self.state(event.account), event)
        if not isinstance(outcome, AccountState):
            return outcome.code
        self.states[event.account] = outcome
        self._options.pop(event.account, None)
        self.history.append(message)
        return None

    def send(self, message: dict[str, Any]) -> None:
        """Add a message RULES.md accepts, whatever the policy says.

        If the policy refuses it, it joins the history unapplied: a test that
        judges the history then shows the disagreement instead of a strategy
        quietly working around it.
        """
        if self.apply(message) is not None:
            self.history.append(message)

    def fresh_account(self) -> str:
        """An account of the pool never created, else one more name."""
        for account in self.accounts:
            if account not in self.states:
                return account
        return f"acct_{len(self.accounts) + 1}"

    def candidate_users(self) -> list[str]:
        """The pool of users and one more, unknown everywhere."""
        return [*self.users, f"user_{len(self.users) + 1}"]


def _variants(spec: EventSpec) -> list[Mapping[str, Any]]:
    """The properties a legal step is tried with: none, then every spec property."""
    return [{}, full_properties(spec)] if spec.properties else [{}]


def passes(rule: Rule, state: AccountState, event: Event) -> bool:
    """True when every guard of ``rule`` lets ``event`` through in ``state``."""
    return all(guard.check(state, event) is None for guard in rule.guards)


# -- reaching a code -------------------------------------------------------------------


def live(policy: Policy, state: AccountState) -> bool:
    """True for an account that exists and is not deleted."""
    return state.status != policy.initial and state.status not in policy.final


def _names(policy: Policy, state: AccountState, code: str) -> Iterator[tuple[str, bool]]:
    """Events whose compiled entry in ``state`` names ``code``, and whether as a refusal."""
    for spec in policy.events:
        entry = policy.rule(state.status, spec.name)
        if isinstance(entry, Refusal):
            if entry.code == code:
                yield spec.name, True
        elif any(guard.code == code for guard in entry.guards):
            yield spec.name, False


def finals(policy: Policy, state: AccountState, code: str, users: list[str]) -> list[Final]:
    """The events RULES.md says must get ``code`` if sent now to the account in ``state``.

    Only (state, event) pairs whose compiled entry names ``code`` are offered,
    so a relaxed or extended policy is never asked for a rule it does not have.
    A code RULES.md does not define is produced only where the policy refuses
    an event with it (a custom guard's failing input cannot be guessed).
    """
    out: list[Final] = []
    status, is_live = state.status, live(policy, state)
    for name, refused in _names(policy, state, code):
        if code == ACCOUNT_UNKNOWN:
            ok = status == policy.initial and name != ACCOUNT_CREATED
        elif code == ACCOUNT_EXISTS:
            ok = is_live and name == ACCOUNT_CREATED
        elif code == ACCOUNT_DELETED_CODE:
            ok = status in policy.final
        elif code == TRIAL_ALREADY_STARTED:
            ok = is_live and status != CREATED and name == TRIAL_STARTED
        elif code == TRIAL_NOT_ACTIVE:
            ok = is_live and status != TRIAL and name == TRIAL_ENDED
        elif code == TRIAL_DATES_INVERTED:
            ok = (status, name) in ((CREATED, TRIAL_STARTED), (TRIAL, TRIAL_ENDED))
            out.extend(Final(name, user, INVERTED) for user in users if ok)
            continue
        elif code == TRIAL_MISMATCH:
            trial = state.trial
            started = trial is not None and (trial.plan_name, trial.start_date) != (None, None)
            ok = (status, name) == (TRIAL, TRIAL_ENDED) and started
            out.extend(Final(name, user, MISMATCH) for user in users if ok)
            continue
        elif code in _USER_RULES:
            events, wanted = _USER_RULES[code]
            out.extend(
                Final(name, user)
                for user in users
                if is_live and name in events and wanted(state, user)
            )
            continue
        else:
            ok = refused and code not in _SPEC_CODES
        out.extend(Final(name, user) for user in users if ok)
    return out


def _unknown(state: AccountState, user: str) -> bool:
    return not state.user(user).known


_USER_RULES = {
    USER_UNKNOWN: ((SIGNED_IN, SIGNED_OUT, INVITE_SENT), _unknown),
    USER_ALREADY_MEMBER: ((ACCOUNT_ADDED_USER,), lambda s, u: s.user(u).role is not None),
    USER_NOT_MEMBER: ((ACCOUNT_REMOVED_USER,), _unknown),
    USER_ALREADY_SIGNED_UP: ((SIGNED_UP,), lambda s, u: s.user(u).signed_up),
    NOT_SIGNED_IN: ((SIGNED_OUT,), lambda s, u: s.user(u).known and not s.user(u).signed_in),
}

#: The state codes RULES.md defines; every other code comes from a policy's refusals.
_SPEC_CODES = frozenset(
    {
        ACCOUNT_UNKNOWN,
        ACCOUNT_EXISTS,
        ACCOUNT_DELETED_CODE,
        TRIAL_ALREADY_STARTED,
        TRIAL_NOT_ACTIVE,
        TRIAL_DATES_INVERTED,
        TRIAL_MISMATCH,
        *_USER_RULES,
    }
)


def legal_steps(
    policy: Policy, state: AccountState, users: list[str]
) -> list[tuple[Step, AccountState]]:
    """Every legal next step (without properties, or with all of them) and the state after it."""
    out = []
    for spec in policy.events:
        if not isinstance(policy.rule(state.status, spec.name), Rule):
            continue
        for user in users:
            for properties in _variants(spec):
                event = probe(state.account, spec.name, user, properties)
                after = decide(policy, state, event)
                if isinstance(after, AccountState):
                    out.append((Step(spec.name, user, properties), after))
    return out


def one_step_plans(
    policy: Policy, state: AccountState, code: str, users: list[str]
) -> list[tuple[Step, list[Final]]]:
    """Single legal steps after which ``code`` can be produced on the same account."""
    plans = []
    for step, after in legal_steps(policy, state, users):
        found = finals(policy, after, code, users)
        if found:
            plans.append((step, found))
    return plans


@lru_cache(maxsize=256)
def recipe(policy: Policy, code: str, users: tuple[str, ...]) -> tuple[Step, ...] | None:
    """The shortest legal steps that let a new account produce ``code`` (None if none do).

    A breadth-first search over the policy's legal steps, at most
    :data:`MAX_RECIPE_STEPS` deep and by the first :data:`RECIPE_USERS` users;
    the result is the same for every new account.
    """
    start = AccountState("acct", policy.initial)
    level: list[tuple[tuple[Step, ...], AccountState]] = [((), start)]
    seen = {_key(start)}
    for _depth in range(MAX_RECIPE_STEPS + 1):
        for path, state in level:
            if finals(policy, state, code, list(users)):
                return path
        following = []
        for path, state in level:
            for step, after in legal_steps(policy, state, list(users[:RECIPE_USERS])):
                if _key(after) not in seen:
                    seen.add(_key(after))
                    following.append(((*path, step), after))
        level = following
    return None


def _key(state: AccountState) -> tuple[Any, ...]:
    return (state.status, tuple(sorted(state.users.items())), state.trial)


def producible_codes(policy: Policy, users: tuple[str, ...]) -> tuple[str, ...]:
    """The codes a history under ``policy`` can be made to end with, in check order.

    ``users`` are the users a violation may be sent by (as for :func:`recipe`).
    """
    with_properties = any(spec.properties for spec in policy.events)
    envelope = [c for c in ENVELOPE_CODES if c != INVALID_PROPERTY or with_properties]
    state_codes = [c for c in policy.codes if recipe(policy, c, users) is not None]
    order = {code: n for n, code in enumerate(REJECTION_CODES)}
    return (*envelope, *sorted(state_codes, key=lambda c: order.get(c, len(order))))
