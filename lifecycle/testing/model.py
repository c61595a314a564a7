"""Model-based coverage: test cases computed from a policy's graph, one per state and edge.

Like the path utilities of a state-chart library, these functions walk the
policy's compiled table breadth-first and return concrete, deterministic
histories:

* :func:`shortest_paths`: for every account state, the shortest history reaching it;
* :func:`transition_cases`: for every legal (state, event) pair, a history reaching
  the state, then the event, which must be accepted and lead to ``dest``;
* :func:`refusal_cases`: for every illegal (state, event) pair, a history reaching
  the state, then the event, which must be rejected with ``code``.

Every history is on one account (``acct_1``) and names its users ``user_1``,
``user_2``; messages carry a ``messageId`` (``msg-001`` ...) and valid spec
properties. Guards are satisfied by construction: the search folds every
candidate step through :func:`lifecycle.decide.decide`, so a ``Signed Up``
comes before a ``Signed In`` because nothing else lets ``Signed In`` through.
A custom policy (:meth:`lifecycle.Policy.extend`) gets its cases for free.

Each case has a readable ``name`` for ``pytest.mark.parametrize(..., ids=...)``::

    @pytest.mark.parametrize("case", transition_cases(DEFAULT_POLICY), ids=lambda c: c.name)
    def test_every_transition(case):
        verdicts = Gate().submit_many(case.messages)
        assert all(v.accepted for v in verdicts)

Pure and free of Hypothesis: usable in any test runner.
"""

from __future__ import annotations

import copy
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any, TypeVar

from lifecycle.decide import decide
from lifecycle.envelope import Event, parse_event
from lifecycle.policy import Policy, Refusal, Rule, checked
from lifecycle.spec import DATE, EventSpec, PropertyType
from lifecycle.state import AccountState
from lifecycle.testing._steps import Step, plain_message

#: A Segment message, as decoded JSON.
Message = dict[str, Any]

#: The account every case is about.
ACCOUNT = "acct_1"
#: The users a case may use, in the order they are tried.
USERS = ("user_1", "user_2")
#: How many steps a search goes before it gives up on a state or an edge.
MAX_DEPTH = 8
#: How many distinct account states a search visits at most.
MAX_STATES = 5000

T = TypeVar("T")


@dataclass(frozen=True)
class StatePath:
    """The shortest history that takes a new account to ``state``."""

    state: str
    history: tuple[Message, ...]

    @property
    def name(self) -> str:
        """The state, for test ids."""
        return self.state

    @property
    def messages(self) -> list[Message]:
        """The history as fresh dicts, ready to submit (and to change: deep copies)."""
        return [copy.deepcopy(m) for m in self.history]


@dataclass(frozen=True)
class TransitionCase:
    """A legal (state, event) pair: after ``history``, ``message`` is accepted, leading to ``dest``.

    ``dest`` equals ``source`` for internal transitions (user events).
    """

    source: str
    event: str
    dest: str
    history: tuple[Message, ...]
    message: Message

    @property
    def name(self) -> str:
        """``source --event--> dest``, for test ids."""
        return f"{self.source} --{self.event}--> {self.dest}"

    @property
    def messages(self) -> list[Message]:
        """The history and the event, as fresh dicts ready to submit (and to change)."""
        return copy.deepcopy([*self.history, self.message])


@dataclass(frozen=True)
class RefusalCase:
    """An illegal (state, event) pair: after ``history``, ``message`` is rejected with ``code``."""

    state: str
    event: str
    code: str
    history: tuple[Message, ...]
    message: Message

    @property
    def name(self) -> str:
        """``state --event--x code``, for test ids."""
        return f"{self.state} --{self.event}--x {self.code}"

    @property
    def messages(self) -> list[Message]:
        """The history and the event, as fresh dicts ready to submit (and to change)."""
        return copy.deepcopy([*self.history, self.message])


def shortest_paths(policy: Policy) -> list[StatePath]:
    """For every state of ``policy``, in the policy's order, the shortest history reaching it."""
    checked(policy)
    graph = _graph(policy)
    out = []
    for state in policy.states:
        found = graph.first(_status_is(state))
        if found is None:
            raise ValueError(
                f"policy {policy.name!r}: no history of legal events reaches {state!r}"
            )
        out.append(StatePath(state, _messages(found)))
    return out


def _status_is(state: str) -> Callable[[AccountState], bool]:
    return lambda s: s.status == state


def transition_cases(policy: Policy) -> list[TransitionCase]:
    """For every (state, event) pair ``policy`` accepts, a history and the event it accepts.

    The history is the shortest one after which some message for the event
    passes the rule's guards (so ``Signed Out`` comes after a sign-up and a
    sign-in). Cases come in the order of the policy's states, then its events.
    """
    checked(policy)
    graph = _graph(policy)
    out = []
    for (state, event), entry in _ordered(policy, Rule):
        spec = policy.catalog[event]

        def accepted(s: AccountState, st: str = state, sp: EventSpec = spec) -> Step | None:
            if s.status != st:
                return None
            return next((step for step in _candidates(sp) if _apply(policy, s, step)), None)

        found = graph.first_with(accepted)
        if found is None:
            raise ValueError(
                f"policy {policy.name!r}: no history found after which {event!r} is "
                f"accepted in state {state!r} (within {MAX_DEPTH} steps)"
            )
        path, step = found
        history = _messages(path)
        out.append(
            TransitionCase(state, event, entry.dest, history, _message(step, len(history) + 1))
        )
    return out


def refusal_cases(policy: Policy) -> list[RefusalCase]:
    """For every (state, event) pair ``policy`` refuses, a history and the refused event.

    The code is the one the compiled table names for the pair (``account_unknown``,
    ``account_deleted``, ``trial_not_active``, a custom refusal's code ...).
    """
    checked(policy)
    paths = {p.state: p.history for p in shortest_paths(policy)}
    out = []
    for (state, event), entry in _ordered(policy, Refusal):
        history = paths[state]
        step = Step(event, USERS[0], _properties(policy.catalog[event]))
        message = _message(step, len(history) + 1)
        out.append(RefusalCase(state, event, entry.code, history, message))
    return out


# -- the search ------------------------------------------------------------------------------


def _ordered(policy: Policy, kind: type[T]) -> list[tuple[tuple[str, str], T]]:
    states = {s: n for n, s in enumerate(policy.states)}
    events = {spec.name: n for n, spec in enumerate(policy.events)}
    pairs = [(key, entry) for key, entry in policy.table.items() if isinstance(entry, kind)]
    return sorted(pairs, key=lambda kv: (states[kv[0][0]], events[kv[0][1]]))


class _Graph:
    """Every account state reachable in a few legal steps, in breadth-first order."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        start = AccountState(ACCOUNT, policy.initial)
        self.order: list[tuple[AccountState, tuple[Step, ...]]] = [(start, ())]
        seen = {_key(start)}
        todo = deque(self.order)
        while todo and len(self.order) < MAX_STATES:
            state, path = todo.popleft()
            if len(path) >= MAX_DEPTH:
                continue
            for spec in policy.events:
                if not isinstance(policy.rule(state.status, spec.name), Rule):
                    continue
                for step in _candidates(spec):
                    after = _apply(policy, state, step)
                    if after is not None and _key(after) not in seen:
                        seen.add(_key(after))
                        item = (after, (*path, step))
                        self.order.append(item)
                        todo.append(item)

    def first(self, wanted: Callable[[AccountState], bool]) -> tuple[Step, ...] | None:
        return next((path for state, path in self.order if wanted(state)), None)

    def first_with(
        self, wanted: Callable[[AccountState], Step | None]
    ) -> tuple[tuple[Step, ...], Step] | None:
        for state, path in self.order:
            step = wanted(state)
            if step is not None:
                return path, step
        return None


@lru_cache(maxsize=32)
def _graph(policy: Policy) -> _Graph:
    return _Graph(policy)


def _key(state: AccountState) -> tuple[Any, ...]:
    return (state.status, tuple(sorted(state.users.items())), state.trial)


def _candidates(spec: EventSpec) -> list[Step]:
    """The messages tried for an event: every spec property set, then none; each user."""
    variants = [_properties(spec), {}] if spec.properties else [{}]
    return [Step(spec.name, user, p) for user in USERS for p in variants]


def _apply(policy: Policy, state: AccountState, step: Step) -> AccountState | None:
    event = parse_event(_message(step, 0), policy.catalog)
    if not isinstance(event, Event):
        return None
    after = decide(policy, state, event)
    return after if isinstance(after, AccountState) else None


def _messages(path: tuple[Step, ...]) -> tuple[Message, ...]:
    return tuple(_message(step, n) for n, step in enumerate(path, start=1))


def _message(step: Step, number: int) -> Message:
    return plain_message(ACCOUNT, step, f"msg-{number:03d}")


_VALUES = {
    "email": "ada.lovelace@example.com",
    "first_name": "Ada",
    "last_name": "Lovelace",
    "role": "Admin",
    "plan": "Pro",
    "username": "ada",
    "type": "organic",
    "name": "Acme Inc",
}


def _properties(spec: EventSpec) -> dict[str, str]:
    """Every spec property of ``spec`` with a fixed valid value; Dates 30 days apart."""
    out: dict[str, str] = {}
    dates = 0
    for name, kind in spec.properties.items():
        out[name] = _value(name, kind, dates)
        dates += kind is DATE
    return out


def _value(name: str, kind: PropertyType, position: int) -> str:
    if kind is DATE:
        day = datetime(2024, 1, 1, tzinfo=UTC) + timedelta(days=30 * position)
        return day.date().isoformat()
    for fragment, value in _VALUES.items():
        if fragment in name:
            return value
    return "example"
