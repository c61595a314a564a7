"""The compiled table agrees with the `transitions` machine it is read from, on every pair."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from transitions import MachineError

from lifecycle import (
    DEFAULT_POLICY,
    STRING,
    AccountState,
    Event,
    EventSpec,
    Guard,
    Policy,
    Refusal,
    Rule,
)
from lifecycle.policy import Change
from tests.policies import USER_EVENTS


def _reason_given(state: AccountState, event: Event) -> str | None:
    return None if event.properties.get("reason") else "a resumed account says why"


def _note_resume(state: AccountState, event: Event) -> Change:
    return state.users, state.trial


_PAUSED = Refusal("account_paused", "the account is paused")

#: A policy with a new state, guarded and effectful transitions into and out of it,
#: and a new creating-free event with its own refusal.
PAUSES = DEFAULT_POLICY.extend(
    name="with-pauses",
    states=["paused"],
    events=[
        EventSpec("Account Paused"),
        EventSpec("Account Resumed", {"reason": STRING}),
        EventSpec("Subscription Started", {"plan_name": STRING}),
    ],
    transitions=[
        {
            "trigger": "Account Paused",
            "source": ["trial", "active"],
            "dest": "paused",
            "conditions": ["user_known"],
        },
        {
            "trigger": "Account Resumed",
            "source": "paused",
            "dest": "active",
            "conditions": ["user_known", "reason_given"],
            "after": ["note_resume"],
        },
        {"trigger": "Account Deleted", "source": "paused", "dest": "deleted"},
        {"trigger": "Subscription Started", "source": "created", "dest": "active"},
    ],
    guards=[Guard("reason_given", "resume_reason_missing", _reason_given)],
    effects={"note_resume": _note_resume},
    refusals={
        **dict.fromkeys(USER_EVENTS, _PAUSED),
        "Account Paused": Refusal("account_not_running", "only a running account pauses"),
        "Account Resumed": Refusal("account_not_paused", "only a paused account resumes"),
        "Subscription Started": Refusal(
            "subscription_not_allowed", "a subscription starts only on a new account"
        ),
    },
)

POLICIES = [DEFAULT_POLICY, PAUSES]


class Model:
    """A stand-in account for the machine: every guard and effect is a stub that records calls.

    The machine binds ``trigger`` and sets ``state`` when the model is added.
    """

    state: str
    trigger: Callable[[str], bool]

    def __init__(self, policy: Policy, failing: frozenset[str] = frozenset()) -> None:
        self.calls: list[str] = []
        for name in policy.guards:
            setattr(self, name, self._stub(name, name not in failing))
        for name in policy.effects:
            setattr(self, name, self._stub(name, None))

    def _stub(self, name: str, result: bool | None) -> Callable[[object], bool | None]:
        def stub(event_data: object) -> bool | None:
            self.calls.append(name)
            return result

        return stub


@contextmanager
def on_machine(
    policy: Policy, state: str, failing: frozenset[str] = frozenset()
) -> Iterator[Model]:
    """A model placed in ``state`` on the policy's own machine, removed afterwards."""
    model = Model(policy, failing)
    policy.machine.add_model(model, initial=state)
    try:
        yield model
    finally:
        policy.machine.remove_model(model)


def machine_transition(policy: Policy, state: str, event: str) -> Any:
    """The machine's single transition for ``event`` from ``state``."""
    (transition,) = policy.machine.events[event].transitions[state]
    return transition


def _pairs(rules_only: bool = False) -> list[Any]:
    return [
        pytest.param(policy, state, event, id=f"{policy.name}:{state}:{event}")
        for policy in POLICIES
        for (state, event), entry in policy.table.items()
        if isinstance(entry, Rule) or not rules_only
    ]


def _guarded() -> list[Any]:
    return [
        pytest.param(
            policy, state, event, guard.name, id=f"{policy.name}:{state}:{event}:{guard.name}"
        )
        for policy in POLICIES
        for (state, event), entry in policy.table.items()
        if isinstance(entry, Rule)
        for guard in entry.guards
    ]


PAIRS, RULE_PAIRS, GUARDED = _pairs(), _pairs(rules_only=True), _guarded()


@pytest.mark.parametrize("policy", POLICIES, ids=lambda p: p.name)
def test_the_table_has_every_pair(policy: Policy) -> None:
    """The table holds exactly one entry per (state, canonical event) pair."""
    assert set(policy.table) == {(s, e.name) for s in policy.states for e in policy.events}


@pytest.mark.parametrize("policy", POLICIES, ids=lambda p: p.name)
def test_the_machine_offers_exactly_the_rules(policy: Policy) -> None:
    """In every state the machine's triggers are the events the table has a Rule for."""
    for state in policy.states:
        rules = {
            e for (s, e), entry in policy.table.items() if s == state and isinstance(entry, Rule)
        }
        assert set(policy.machine.get_triggers(state)) == rules, state


@pytest.mark.parametrize(("policy", "state", "event"), PAIRS)
def test_the_machine_moves_like_the_table(policy: Policy, state: str, event: str) -> None:
    """With every condition true the machine goes where the Rule says, or refuses like it."""
    entry = policy.rule(state, event)
    with on_machine(policy, state) as model:
        if isinstance(entry, Refusal):
            with pytest.raises(MachineError):
                model.trigger(event)
            assert model.state == state
            assert model.calls == []
        else:
            assert model.trigger(event) is True
            assert model.state == entry.dest
            guards = [g.name for g in entry.guards]
            effects = model.calls[len(guards) :]
            assert model.calls[: len(guards)] == guards
            assert [policy.effects[name] for name in effects] == list(entry.effects)


@pytest.mark.parametrize(("policy", "state", "event"), RULE_PAIRS)
def test_guards_are_the_machine_conditions(policy: Policy, state: str, event: str) -> None:
    """A Rule's guards and effects are the transition's conditions and callbacks, in order."""
    entry = policy.rule(state, event)
    assert isinstance(entry, Rule)
    transition = machine_transition(policy, state, event)
    assert [c.func for c in transition.conditions] == [g.name for g in entry.guards]
    assert all(c.target for c in transition.conditions)  # no `unless`
    assert [policy.effects[name] for name in transition.after] == list(entry.effects)
    assert entry.dest == (transition.dest if transition.dest is not None else state)


@pytest.mark.parametrize(("policy", "state", "event", "guard"), GUARDED)
def test_one_false_condition_stops_the_machine(
    policy: Policy, state: str, event: str, guard: str
) -> None:
    """When any one condition is false the machine stays put and runs no effect."""
    entry = policy.rule(state, event)
    assert isinstance(entry, Rule)
    names = [g.name for g in entry.guards]
    with on_machine(policy, state, frozenset({guard})) as model:
        assert model.trigger(event) is False
        assert model.state == state
        assert model.calls == names[: names.index(guard) + 1]


@pytest.mark.parametrize("policy", POLICIES, ids=lambda p: p.name)
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_machine_and_table_agree_on_any_sequence(policy: Policy, data: st.DataObject) -> None:
    """Any sequence of events and condition outcomes leaves the machine where the table does."""
    events = [spec.name for spec in policy.events]
    steps = data.draw(
        st.lists(
            st.tuples(st.sampled_from(events), st.frozensets(st.sampled_from(list(policy.guards)))),
            max_size=15,
        ),
        label="steps (event, failing conditions)",
    )
    state = policy.initial
    for event, failing in steps:
        entry = policy.rule(state, event)
        with on_machine(policy, state, failing) as model:
            if isinstance(entry, Refusal):
                with pytest.raises(MachineError):
                    model.trigger(event)
            else:
                moves = not any(g.name in failing for g in entry.guards)
                assert model.trigger(event) is moves
                state = entry.dest if moves else state
            assert model.state == state


# -- the default table is the one RULES.md describes ------------------------------------------

_USER_GUARDS = {
    "Signed Up": ["user_already_signed_up"],
    "Account Added User": ["user_already_member"],
    "Account Removed User": ["user_not_member"],
    "Signed In": ["user_unknown"],
    "Signed Out": ["user_unknown", "not_signed_in"],
    "Invite Sent": ["user_unknown"],
}


def expected_by_rules(state: str, event: str) -> tuple[str, ...]:
    """RULES.md's entry for a pair: ("rule", dest, *guard codes) or ("refusal", code)."""
    if state == "none":
        return ("rule", "created") if event == "Account Created" else ("refusal", "account_unknown")
    if state == "deleted":
        return ("refusal", "account_deleted")
    if event == "Account Created":
        return ("refusal", "account_exists")
    if event == "Account Deleted":
        return ("rule", "deleted")
    if event == "Trial Started":
        if state == "created":
            return ("rule", "trial", "trial_dates_inverted")
        return ("refusal", "trial_already_started")
    if event == "Trial Ended":
        if state == "trial":
            return ("rule", "active", "trial_dates_inverted", "trial_mismatch")
        return ("refusal", "trial_not_active")
    return ("rule", state, *_USER_GUARDS[event])


@pytest.mark.parametrize(("state", "event"), list(DEFAULT_POLICY.table))
def test_the_default_table_is_the_rules(state: str, event: str) -> None:
    """Each default (state, event) entry has the destination and codes RULES.md gives it."""
    entry = DEFAULT_POLICY.rule(state, event)
    if isinstance(entry, Refusal):
        got: tuple[str, ...] = ("refusal", entry.code)
    else:
        got = ("rule", entry.dest, *(g.code for g in entry.guards))
    assert got == expected_by_rules(state, event)
