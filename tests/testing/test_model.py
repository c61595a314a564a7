"""Model-based cases: every state, transition and refusal of a policy, judged as declared."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from lifecycle import Gate
from lifecycle.policy import Policy
from lifecycle.rules import DEFAULT_POLICY
from lifecycle.testing import (
    RefusalCase,
    TransitionCase,
    refusal_cases,
    shortest_paths,
    transition_cases,
)
from tests.policies import SUBSCRIPTIONS


def test_every_state_is_reached_by_its_shortest_path(policy: Policy) -> None:
    """Each state's shortest path is accepted in full and ends in that state."""
    paths = shortest_paths(policy)
    assert [p.state for p in paths] == list(policy.states)
    for path in paths:
        gate = Gate(policy)
        assert all(v.accepted for v in gate.submit_many(path.messages)), path.name
        state = gate.state("acct_1")
        assert (state.status if state else policy.initial) == path.state


def test_cases_cover_the_whole_table(policy: Policy) -> None:
    """Transition and refusal cases together name every (state, event) pair once."""
    pairs = [(c.source, c.event) for c in transition_cases(policy)]
    pairs += [(c.state, c.event) for c in refusal_cases(policy)]
    assert sorted(pairs) == sorted(policy.table)


def test_every_transition_case_is_accepted(policy: Policy) -> None:
    """A transition case is accepted in full and leaves the account in its dest state."""
    for case in transition_cases(policy):
        gate = Gate(policy)
        verdicts = gate.submit_many(case.messages)
        assert all(v.accepted for v in verdicts), case.name
        state = gate.state("acct_1")
        assert state is not None and state.status == case.dest, case.name


def test_every_refusal_case_gets_its_code(policy: Policy) -> None:
    """A refusal case's history is accepted and its last event gets the declared code."""
    for case in refusal_cases(policy):
        verdicts = Gate(policy).submit_many(case.messages)
        assert all(v.accepted for v in verdicts[:-1]), case.name
        assert (verdicts[-1].verdict, verdicts[-1].code) == ("rejected", case.code), case.name


def test_names_read_as_edges() -> None:
    """Case names show the edge, as test ids should."""
    names = {c.name for c in transition_cases(DEFAULT_POLICY)}
    assert "trial --Trial Ended--> active" in names
    refused = {c.name for c in refusal_cases(DEFAULT_POLICY)}
    assert "created --Trial Ended--x trial_not_active" in refused


def test_user_events_come_after_a_sign_up() -> None:
    """The shortest history for Signed Out signs the user up and in first."""
    case = next(
        c for c in transition_cases(DEFAULT_POLICY) if c.name.startswith("created --Signed Out")
    )
    assert [m["event"] for m in case.messages] == [
        "Account Created",
        "Signed Up",
        "Signed In",
        "Signed Out",
    ]


def test_custom_events_get_cases() -> None:
    """An extended policy's new event gets its transition and its refusals."""
    started = [c for c in transition_cases(SUBSCRIPTIONS) if c.event == "Subscription Started"]
    assert [c.name for c in started] == ["created --Subscription Started--> active"]
    codes = {
        c.state: c.code for c in refusal_cases(SUBSCRIPTIONS) if c.event == "Subscription Started"
    }
    assert codes["trial"] == codes["active"] == "subscription_not_allowed"


def test_cases_come_in_the_policy_s_order(policy: Policy) -> None:
    """As documented, cases are ordered by the policy's states, then by its events, so that a
    parametrized run reads like the policy's table."""
    states = {s: n for n, s in enumerate(policy.states)}
    events = {spec.name: n for n, spec in enumerate(policy.events)}
    keys = [(states[c.source], events[c.event]) for c in transition_cases(policy)]
    assert keys == sorted(keys)
    keys = [(states[c.state], events[c.event]) for c in refusal_cases(policy)]
    assert keys == sorted(keys)


def test_cases_are_deterministic() -> None:
    """The same policy gives the same cases, so test ids are stable."""
    assert transition_cases(DEFAULT_POLICY) == transition_cases(DEFAULT_POLICY)
    assert refusal_cases(DEFAULT_POLICY) == refusal_cases(DEFAULT_POLICY)


@pytest.mark.parametrize("case", transition_cases(DEFAULT_POLICY), ids=lambda c: c.name)
def test_cases_parametrize_with_readable_ids(case: TransitionCase) -> None:
    """Cases work as pytest parameters, one test per edge."""
    assert all(v.accepted for v in Gate().submit_many(case.messages))


@pytest.mark.parametrize("case", refusal_cases(SUBSCRIPTIONS), ids=lambda c: c.name)
def test_custom_refusals_parametrize(case: RefusalCase) -> None:
    """Refusal cases of a custom policy work as pytest parameters."""
    assert Gate(SUBSCRIPTIONS).submit_many(case.messages)[-1].code == case.code


def test_changing_the_messages_of_a_case_leaves_the_case_alone() -> None:
    """``messages`` are deep copies: retargeting one (its ``context``) had changed the
    case itself, so a list of cases shared by two tests depended on their order."""
    for case in (
        shortest_paths(DEFAULT_POLICY)[-1],
        transition_cases(DEFAULT_POLICY)[3],
        refusal_cases(DEFAULT_POLICY)[3],
    ):
        before = copy.deepcopy(case.messages)
        changed = case.messages
        for message in changed:
            message["context"]["groupId"] = "acct_elsewhere"
            message.setdefault("properties", {})["extra"] = 1
        assert case.messages == before, case.name


@pytest.mark.parametrize("make", [shortest_paths, transition_cases, refusal_cases])
def test_a_policy_of_the_wrong_kind_is_named(make: Any) -> None:
    """`transition_cases("x")` failed on an AttributeError about 'str'."""
    with pytest.raises(TypeError, match=r"^policy must be a lifecycle Policy, got 'x'$"):
        make("x")


def test_the_event_of_a_case_carries_every_spec_property(policy: Policy) -> None:
    """The event a case is about is sent with every property of its spec, as documented, so
    that a rule which reads a property is tried with it (and a type check has a value)."""
    for case in [*transition_cases(policy), *refusal_cases(policy)]:
        sent = case.message.get("properties") or {}
        assert set(sent) == set(policy.catalog[case.event].properties), case.name
