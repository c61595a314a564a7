"""Policies: broken definitions are refused by name, extensions work, diagrams are generated."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from lifecycle import (
    DEFAULT_POLICY,
    AccountState,
    EventSpec,
    Gate,
    Guard,
    LifecycleError,
    Policy,
    PolicyError,
    Refusal,
    Rule,
    UserState,
    decide,
)
from lifecycle.decide import evolve
from lifecycle.envelope import Event
from lifecycle.policy import Change
from tests.policies import SUBSCRIPTIONS, USER_EVENTS

CTX = {"groupId": "acct_1"}


def _always(state: AccountState, event: Event) -> str | None:
    return None


def _unchanged(state: AccountState, event: Event) -> Change:
    return state.users, state.trial


def tiny(**overrides: Any) -> Policy:
    """A small sound policy (open, ping, close) with any keyword replaced by ``overrides``."""
    definition: dict[str, Any] = {
        "name": "tiny",
        "states": ["none", "open", "closed"],
        "initial": "none",
        "final": ["closed"],
        "events": [EventSpec("Opened"), EventSpec("Pinged"), EventSpec("Closed")],
        "transitions": [
            {"trigger": "Opened", "source": "none", "dest": "open"},
            {
                "trigger": "Pinged",
                "source": "open",
                "dest": None,
                "conditions": ["always"],
                "after": ["unchanged"],
            },
            {"trigger": "Closed", "source": "open", "dest": "closed"},
        ],
        "guards": [Guard("always", "never_refused", _always)],
        "effects": {"unchanged": _unchanged},
    }
    definition.update(overrides)
    return Policy(**definition)


def tiny_with(*transitions: dict[str, Any], **overrides: Any) -> Policy:
    """:func:`tiny` with ``transitions`` added to its own."""
    base = [
        {"trigger": "Opened", "source": "none", "dest": "open"},
        {"trigger": "Pinged", "source": "open", "dest": None, "conditions": ["always"]},
        {"trigger": "Closed", "source": "open", "dest": "closed"},
    ]
    return tiny(transitions=base + list(transitions), **overrides)


def test_tiny_policy_is_sound() -> None:
    """The base of the broken policies below is itself accepted, so each break is the cause."""
    policy = tiny()
    assert policy.accepts("open", "Pinged")
    assert policy.rule("none", "Pinged") == Refusal(
        "account_unknown", "the account was never created"
    )


# -- broken definitions ------------------------------------------------------------------------


def test_unknown_source_state() -> None:
    """A transition from a state the policy does not list is refused, naming the state."""
    with pytest.raises(PolicyError) as caught:
        tiny_with({"trigger": "Pinged", "source": "nowhere", "dest": None})
    assert str(caught.value) == (
        "policy 'tiny': transition 'Pinged': unknown source state 'nowhere'"
    )


def test_unknown_target_state() -> None:
    """A transition to a state the policy does not list is refused, naming the state."""
    with pytest.raises(PolicyError) as caught:
        tiny_with({"trigger": "Closed", "source": "none", "dest": "limbo"})
    assert str(caught.value) == "policy 'tiny': transition 'Closed': unknown target state 'limbo'"


def test_unknown_guard() -> None:
    """A condition that names no guard is refused, naming the guard."""
    broken = [
        {"trigger": "Opened", "source": "none", "dest": "open", "conditions": ["is_vip"]},
        {"trigger": "Pinged", "source": "open", "dest": None},
        {"trigger": "Closed", "source": "open", "dest": "closed"},
    ]
    with pytest.raises(PolicyError) as caught:
        tiny(transitions=broken)
    assert str(caught.value) == "policy 'tiny': transition 'Opened': unknown guard 'is_vip'"


def test_unknown_effect() -> None:
    """An after-callback that names no effect is refused, naming the effect."""
    broken = [
        {"trigger": "Opened", "source": "none", "dest": "open", "after": ["send_mail"]},
        {"trigger": "Pinged", "source": "open", "dest": None},
        {"trigger": "Closed", "source": "open", "dest": "closed"},
    ]
    with pytest.raises(PolicyError) as caught:
        tiny(transitions=broken)
    assert str(caught.value) == "policy 'tiny': transition 'Opened': unknown effect 'send_mail'"


def test_unknown_event() -> None:
    """A trigger that is not in the policy's catalog is refused, naming the trigger."""
    with pytest.raises(PolicyError) as caught:
        DEFAULT_POLICY.extend(
            transitions=[{"trigger": "Subscription Started", "source": "created", "dest": "active"}]
        )
    assert str(caught.value) == (
        "policy 'b2b-saas+': transition 'Subscription Started': "
        "unknown event (not in the policy's catalog)"
    )


def test_unreachable_state() -> None:
    """A state no event reaches from the initial state is refused, naming it."""
    with pytest.raises(PolicyError) as caught:
        tiny_with(
            {"trigger": "Closed", "source": "limbo", "dest": "closed"},
            {"trigger": "Pinged", "source": "limbo", "dest": None},
            states=["none", "open", "limbo", "closed"],
        )
    assert str(caught.value) == "policy 'tiny': no event reaches state(s) ['limbo']"


def test_live_state_without_a_way_out() -> None:
    """A reachable state that is not final and that no event leaves is refused, naming it."""
    with pytest.raises(PolicyError) as caught:
        tiny(
            states=["none", "open", "stuck", "closed"],
            transitions=[
                {"trigger": "Opened", "source": "none", "dest": "open"},
                {"trigger": "Pinged", "source": "open", "dest": "stuck"},
                {"trigger": "Pinged", "source": "stuck", "dest": None},
                {"trigger": "Closed", "source": "open", "dest": "closed"},
            ],
            refusals={"Closed": Refusal("stuck_for_good", "nothing leaves stuck")},
        )
    assert str(caught.value) == "policy 'tiny': state 'stuck' is not final and no event leaves it"


def test_event_no_state_accepts() -> None:
    """A catalog event that no transition accepts is refused, naming the event."""
    with pytest.raises(PolicyError) as caught:
        tiny(
            events=[
                EventSpec("Opened"),
                EventSpec("Pinged"),
                EventSpec("Closed"),
                EventSpec("Lost"),
            ],
            refusals={"Lost": Refusal("lost", "nothing accepts it")},
        )
    assert str(caught.value) == "policy 'tiny': no state accepts event 'Lost'"


def test_refused_event_without_a_refusal() -> None:
    """An event some live state does not allow, with no refusal code for it, is refused."""
    with pytest.raises(PolicyError) as caught:
        DEFAULT_POLICY.extend(
            events=[EventSpec("Subscription Started")],
            transitions=[
                {"trigger": "Subscription Started", "source": "created", "dest": "active"}
            ],
        )
    assert str(caught.value) == (
        "policy 'b2b-saas+': event 'Subscription Started' is not allowed in state 'trial' "
        "and has no refusal (add refusals={event: Refusal(code, expected)})"
    )


def test_transition_leaving_a_final_state() -> None:
    """A transition out of a final state is refused, naming the state."""
    with pytest.raises(PolicyError) as caught:
        tiny_with({"trigger": "Opened", "source": "closed", "dest": "open"})
    assert str(caught.value) == "policy 'tiny': transition 'Opened': leaves final state 'closed'"


def test_state_event_pair_defined_twice() -> None:
    """Two transitions for the same (state, event) are refused, naming both."""
    with pytest.raises(PolicyError) as caught:
        tiny_with({"trigger": "Pinged", "source": ["open"], "dest": "closed"})
    assert str(caught.value) == (
        "policy 'tiny': transition 'Pinged': defined twice from state 'open'"
    )


def test_two_guards_of_one_name_are_refused() -> None:
    """A guard to tighten ``Signed In``, named as a default guard, replaced that guard on
    every event that names it: ``Signed Out`` no longer needed the user signed in."""
    named_as_default = Guard("user_signed_in", "missing_username", _always)
    with pytest.raises(PolicyError) as caught:
        DEFAULT_POLICY.with_guard("Signed In", named_as_default)
    assert str(caught.value) == (
        "policy 'b2b-saas+user_signed_in': two guards are named 'user_signed_in': "
        "a transition names its guards, so each needs a name of its own"
    )
    with pytest.raises(PolicyError, match="two guards are named 'user_known'"):
        DEFAULT_POLICY.extend(guards=[Guard("user_known", "x", _always)])
    # The same guard again is the same guard: reusing one on another event is fine.
    reused = DEFAULT_POLICY.extend(guards=[DEFAULT_POLICY.guards["user_known"]])
    assert reused.fingerprint == DEFAULT_POLICY.fingerprint
    signed_in = DEFAULT_POLICY.guards["user_signed_in"]
    assert "user_signed_in" in DEFAULT_POLICY.with_guard("Invite Sent", signed_in).guards
    # ... but on an event that has it already, it ran twice.
    with pytest.raises(PolicyError, match="'Signed In' has guard 'user_known'"):
        DEFAULT_POLICY.with_guard("Signed In", DEFAULT_POLICY.guards["user_known"])


def test_the_graph_is_checked_before_the_refusals() -> None:
    """A new state nothing reaches, or an event no state accepts, was reported as an event
    with no refusal in it: the message named a symptom, not the mistake."""
    with pytest.raises(PolicyError) as caught:
        DEFAULT_POLICY.extend(states=["limbo"])
    assert str(caught.value) == "policy 'b2b-saas+': no event reaches state(s) ['limbo']"
    with pytest.raises(PolicyError) as caught:
        DEFAULT_POLICY.extend(events=[EventSpec("Subscription Started")])
    assert str(caught.value) == "policy 'b2b-saas+': no state accepts event 'Subscription Started'"


@pytest.mark.parametrize(
    ("extension", "message"),
    [
        (
            {"refusals": {"Trial Startd": Refusal("typo", "a typo")}},
            "policy 'b2b-saas+': a refusal for 'Trial Startd', which is not in the catalog",
        ),
        (
            {"events": [EventSpec("Paused", {"reason": str})]},  # type: ignore[dict-item]
            "policy 'b2b-saas+': event 'Paused': property 'reason' has type <class 'str'>, "
            "not a PropertyType (STRING or DATE)",
        ),
        (
            {"guards": ["is_vip"]},
            "policy 'b2b-saas+': guards must be Guards, got 'is_vip'",
        ),
        (
            {"transitions": [{"trigger": ["Trial Started"], "source": "created"}]},
            "transition {'trigger': ['Trial Started'], 'source': 'created'}: "
            "'trigger' is one event name",
        ),
    ],
    ids=["refusal of no event", "property type", "guard", "trigger"],
)
def test_definitions_of_the_wrong_kind_are_policy_errors(
    extension: dict[str, Any], message: str
) -> None:
    """A refusal for a misspelt event was accepted and never used; the others raised an
    AttributeError or a TypeError from deep inside the build."""
    with pytest.raises(PolicyError) as caught:
        DEFAULT_POLICY.extend(**extension)
    assert str(caught.value) == message


def test_with_guard_takes_an_alias_for_its_event() -> None:
    """``with_guard("User Signed In", ...)`` said that no state accepts the event: the
    alias names ``Signed In`` everywhere else."""
    has_username = Guard("has_username", "no_username", _always)
    policy = DEFAULT_POLICY.with_guard("User Signed In", has_username)
    rule = policy.rule("active", "Signed In")
    assert isinstance(rule, Rule) and rule.guards[-1] is has_username
    relaxed = policy.without_guard("User Signed In", "has_username").rule("active", "Signed In")
    assert relaxed == DEFAULT_POLICY.rule("active", "Signed In")


def test_a_policy_cannot_be_changed_in_place() -> None:
    """``policy.final = ()`` changed a shared policy for the whole process and kept its
    fingerprint, so snapshots of the old machine were trusted."""
    with pytest.raises(AttributeError, match="cannot be changed: derive a new one"):
        DEFAULT_POLICY.final = ()  # type: ignore[misc]
    with pytest.raises(AttributeError, match="cannot be changed"):
        del DEFAULT_POLICY.initial
    assert DEFAULT_POLICY.final == ("deleted",)


def _closing_into(state: str) -> dict[str, Any]:
    """:func:`tiny`'s keywords with its final state renamed ``state``."""
    closed = {"trigger": "Closed", "source": "open", "dest": state}
    transitions = [*map(dict, tiny().transitions[:2]), closed]
    return {"states": ["none", "open", state], "final": [state], "transitions": transitions}


LONG_ALIAS = [EventSpec("Opened", aliases=("O" * 256,)), EventSpec("Pinged"), EventSpec("Closed")]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            _closing_into("c" * 65),
            "state 'cccccccccccccccccccccccccccccccccccccccc'... is 65 characters; "
            "the event store holds at most 64",
        ),
        (
            {"guards": [Guard("always", "n" * 65, _always)]},
            "rejection code 'nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnn'... is 65 characters; "
            "the event store holds at most 64",
        ),
        (
            {"events": LONG_ALIAS},
            "event name 'OOOOOOOOOOOOOOOOOOOOOOOOOOOOOOOOOOOOOOOO'... is 256 characters; "
            "the event store holds at most 255",
        ),
    ],
    ids=["state", "code", "event"],
)
def test_names_too_long_for_the_store(overrides: dict[str, Any], message: str) -> None:
    """A state, event name or code the store could not hold fails when the policy is built."""
    with pytest.raises(PolicyError) as caught:
        tiny(**overrides)
    assert str(caught.value) == f"policy 'tiny': {message}"
    assert tiny(**_closing_into("c" * 64)).final == ("c" * 64,)


def test_policy_error_is_a_lifecycle_error() -> None:
    """PolicyError is caught by the library's root exception."""
    with pytest.raises(LifecycleError):
        tiny(initial="nowhere")


# -- extending and relaxing ----------------------------------------------------------------------


def submit_all(gate: Gate, *events: str) -> list[str | None]:
    """Submit ``events`` by u1 on acct_1; the code of each verdict (None when accepted)."""
    verdicts = [gate.submit({"event": e, "userId": "u1", "context": CTX}) for e in events]
    return [v.code if v.verdict == "rejected" else None for v in verdicts]


def test_extension_accepts_the_new_event_from_created() -> None:
    """The documented extension moves a created account straight to active."""
    gate = Gate(SUBSCRIPTIONS)
    assert submit_all(gate, "Account Created", "Subscription Started") == [None, None]
    state = gate.state("acct_1")
    assert state is not None
    assert state.status == "active"


@pytest.mark.parametrize(
    ("history", "status"),
    [
        (("Account Created", "Trial Started"), "trial"),
        (("Account Created", "Subscription Started"), "active"),
    ],
)
def test_extension_refuses_with_its_new_code(history: tuple[str, ...], status: str) -> None:
    """The new event is refused from trial and active with the extension's own code."""
    gate = Gate(SUBSCRIPTIONS)
    assert submit_all(gate, *history) == [None, None]
    verdict = gate.submit({"event": "Subscription Started", "userId": "u1", "context": CTX})
    assert (verdict.code, verdict.reason) == (
        "subscription_not_allowed",
        f"Subscription Started for acct_1 by u1: a subscription starts only on a new account "
        f"(account is {status})",
    )


def test_extension_type_checks_the_new_property() -> None:
    """The new event's String property is type-checked like a spec property."""
    gate = Gate(SUBSCRIPTIONS)
    submit_all(gate, "Account Created")
    message = {
        "event": "Subscription Started",
        "userId": "u1",
        "context": CTX,
        "properties": {"plan_name": 3},
    }
    assert gate.submit(message).code == "invalid_property"


def test_extension_leaves_the_default_policy_untouched() -> None:
    """Extending builds a new policy; the default still ignores the custom event."""
    assert "Subscription Started" not in DEFAULT_POLICY.catalog
    assert ("created", "Subscription Started") not in DEFAULT_POLICY.table
    gate = Gate()
    assert submit_all(gate, "Account Created") == [None]
    message = {"event": "Subscription Started", "userId": "u1", "context": CTX}
    assert gate.submit(message).verdict == "ignored"
    assert SUBSCRIPTIONS.codes[-1] == "subscription_not_allowed"
    assert "subscription_not_allowed" not in DEFAULT_POLICY.codes


def _buggy_guard(state: AccountState, event: Event) -> str | None:
    return None if event.properties["username"] else "a username"


def _buggy_effect(state: AccountState, event: Event) -> Change:
    raise RuntimeError("effect bug")


def test_a_guard_or_effect_that_raises_is_a_policy_error_naming_it() -> None:
    """A policy's own code that raises is a PolicyError naming the guard or effect, where it
    raised and the event, with the original as its cause; the gate's state is unchanged.
    (A bare KeyError from deep inside judging had told none of that, and the command line
    exited 1, "rejections found".)"""
    strict = DEFAULT_POLICY.with_guard(
        "Signed Up", Guard("has_username", "no_username", _buggy_guard)
    )
    gate = Gate(strict)
    assert submit_all(gate, "Account Created") == [None]
    with pytest.raises(PolicyError) as raised:
        gate.submit({"event": "Signed Up", "userId": "u1", "context": CTX})
    assert re.fullmatch(
        r"guard 'has_username' raised KeyError: 'username' at \S+test_policy\.py:\d+,"
        r" on Signed Up for acct_1 by u1",
        str(raised.value),
    )
    assert isinstance(raised.value.__cause__, KeyError)
    state = gate.state("acct_1")
    assert state is not None and (state.version, dict(state.users)) == (1, {})

    effects = {"unchanged": _buggy_effect}
    with pytest.raises(
        PolicyError, match=r"^effect _buggy_effect raised RuntimeError: effect bug at "
    ):
        submit_all(Gate(tiny(effects=effects)), "Opened", "Pinged")


def _joins(state: AccountState, event: Event) -> Change:
    return {**state.users, event.user: UserState(signed_up=True)}, state.trial


def _promotes(state: AccountState, event: Event) -> Change:
    users = dict(state.users)
    if event.user in users:
        users[event.user] = UserState(signed_up=True, role="Admin")
    return users, state.trial


def test_each_effect_sees_what_the_effects_before_it_did() -> None:
    """A rule's effects run in order, each on the state the ones before it left: a second
    effect that saw the state before the event would undo or miss the first one's work."""
    policy = tiny(
        transitions=[
            {"trigger": "Opened", "source": "none", "dest": "open"},
            {"trigger": "Pinged", "source": "open", "dest": None, "after": ["joins", "promotes"]},
            {"trigger": "Closed", "source": "open", "dest": "closed"},
        ],
        effects={"joins": _joins, "promotes": _promotes},
    )
    gate = Gate(policy)
    assert submit_all(gate, "Opened", "Pinged") == [None, None]
    state = gate.state("acct_1")
    assert state is not None and dict(state.users) == {"u1": UserState(True, "Admin")}


def test_a_policy_whose_initial_state_is_not_none_judges_new_accounts() -> None:
    """A new account starts in the policy's own initial state, whatever it is named."""
    policy = tiny(
        states=["new", "open", "closed"],
        initial="new",
        transitions=[
            {"trigger": "Opened", "source": "new", "dest": "open"},
            {"trigger": "Pinged", "source": "open", "dest": None},
            {"trigger": "Closed", "source": "open", "dest": "closed"},
        ],
    )
    gate = Gate(policy)
    assert submit_all(gate, "Pinged", "Opened", "Pinged") == ["account_unknown", None, None]
    state = gate.state("acct_1")
    assert state is not None and (state.status, state.version) == ("open", 2)


def _pinged(account: str = "acct_1") -> Event:
    message = {"event": "Pinged", "userId": "u1", "context": {"groupId": account}}
    return Event("Pinged", "Pinged", account, "u1", None, None, {}, message)


def test_a_state_the_policy_does_not_have_is_a_policy_error() -> None:
    """An account stored in a state the policy lacks (a store written under a larger policy,
    --policy forgotten) stops judging with a PolicyError that says so, not a KeyError."""
    with pytest.raises(PolicyError, match=r"^account acct_1 is in state 'trial', which policy"):
        decide(tiny(), AccountState("acct_1", "trial", 3), _pinged())


def test_folding_an_event_the_policy_refuses_names_the_refusal() -> None:
    """Folding a stored event (no guard runs again) that the policy refuses in the account's
    state, or does not know, is a PolicyError naming why, never a refusal applied as a rule."""
    with pytest.raises(
        PolicyError,
        match=r"^policy 'tiny' refuses Pinged in state 'none' \(account_unknown\), "
        r"yet account acct_1 stored it as event 1",
    ):
        evolve(tiny(), AccountState("acct_1"), _pinged())
    stranger = Event("Waved", "Waved", "acct_1", "u1", None, None, {}, {})
    with pytest.raises(PolicyError, match=r"^Waved is not an event of policy 'tiny'"):
        evolve(tiny(), AccountState("acct_1", "open", 1), stranger)
    after = evolve(tiny(), AccountState("acct_1", "open", 1), _pinged())
    assert (after.status, after.version) == ("open", 2)


def test_without_guard_relaxes_the_rule() -> None:
    """Without user_signed_in, Signed Out is accepted from a user who never signed in."""
    lenient = DEFAULT_POLICY.without_guard("Signed Out", "user_signed_in")
    assert submit_all(Gate(lenient), "Account Created", "Signed Up", "Signed Out") == [None] * 3
    assert submit_all(Gate(), "Account Created", "Signed Up", "Signed Out") == [
        None,
        None,
        "not_signed_in",
    ]


def test_without_guard_keeps_the_other_guards() -> None:
    """Relaxing one guard leaves the event's other guards in place."""
    lenient = DEFAULT_POLICY.without_guard("Signed Out", "user_signed_in")
    assert submit_all(Gate(lenient), "Account Created", "Signed Out") == [None, "user_unknown"]
    rule = lenient.rule("trial", "Signed Out")
    assert isinstance(rule, Rule)
    assert [g.name for g in rule.guards] == ["user_known"]


def test_without_an_unknown_guard() -> None:
    """Removing a guard the event does not have raises PolicyError naming both."""
    with pytest.raises(PolicyError) as caught:
        DEFAULT_POLICY.without_guard("Signed Out", "user_is_vip")
    assert str(caught.value) == "policy 'b2b-saas': event 'Signed Out' has no guard 'user_is_vip'"


# -- fingerprints --------------------------------------------------------------------------------


def test_fingerprint_differs_between_policies() -> None:
    """The default, an extension and a relaxation have three different fingerprints."""
    lenient = DEFAULT_POLICY.without_guard("Signed Out", "user_signed_in")
    prints = {DEFAULT_POLICY.fingerprint, SUBSCRIPTIONS.fingerprint, lenient.fingerprint}
    assert len(prints) == 3
    assert all(re.fullmatch(r"[0-9a-f]{16}", p) for p in prints)


def test_fingerprint_is_stable_for_equal_definitions() -> None:
    """Two policies built from the same definition have the same fingerprint."""
    assert tiny().fingerprint == tiny().fingerprint
    assert DEFAULT_POLICY.extend(name="copy").fingerprint == DEFAULT_POLICY.fingerprint
    again = DEFAULT_POLICY.without_guard("Signed Out", "user_signed_in", name="again")
    assert (
        again.fingerprint
        == DEFAULT_POLICY.without_guard("Signed Out", "user_signed_in").fingerprint
    )


def test_fingerprint_sees_a_refusal_change() -> None:
    """Changing only a refusal's sentence changes the fingerprint."""
    reworded = DEFAULT_POLICY.extend(
        refusals={"Trial Ended": Refusal("trial_not_active", "there is no trial to end")}
    )
    assert reworded.fingerprint != DEFAULT_POLICY.fingerprint


def _effect_named_unchanged(body: str) -> Any:
    """An effect named ``unchanged`` in this module, whose body is ``body``."""
    namespace: dict[str, Any] = {"__name__": __name__}
    exec(f"def unchanged(state, event):\n    {body}\n", namespace)
    return namespace["unchanged"]


def test_fingerprint_sees_what_a_function_does() -> None:
    """A guard or effect that keeps its name and changes its body (the next version of
    the rules), two lambdas, or two closures over other values: other fingerprints.
    Hashing names only, snapshots folded by the old body were trusted by the new."""
    old = tiny(effects={"unchanged": _effect_named_unchanged("return None")})
    new = tiny(effects={"unchanged": _effect_named_unchanged("return {'users': {}}")})
    same = tiny(effects={"unchanged": _effect_named_unchanged("return None")})
    assert old.fingerprint != new.fingerprint
    assert old.fingerprint == same.fingerprint

    def guard(check: Any) -> Any:
        return tiny(guards=[Guard("always", "never_refused", check)])

    assert guard(lambda s, e: None).fingerprint != guard(lambda s, e: "no").fingerprint

    def closing_over(answer: str | None) -> Any:
        return guard(lambda s, e: answer)

    assert closing_over(None).fingerprint != closing_over("no").fingerprint
    assert closing_over("no").fingerprint == closing_over("no").fingerprint

    def calling(helper_body: str) -> Any:
        """An effect that calls a helper of its module by name; the helper's body varies."""
        namespace: dict[str, Any] = {"__name__": __name__}
        exec(f"def helper(state):\n    {helper_body}\n", namespace)
        exec("def unchanged(state, event):\n    return helper(state)\n", namespace)
        return tiny(effects={"unchanged": namespace["unchanged"]})

    assert calling("return None").fingerprint != calling("return {}").fingerprint
    assert calling("return None").fingerprint == calling("return None").fingerprint

    def reading(role: object) -> Any:
        """An effect that reads a constant of its module; the constant varies."""
        namespace: dict[str, Any] = {"__name__": __name__, "DEFAULT_ROLE": role}
        exec("def unchanged(state, event):\n    return DEFAULT_ROLE\n", namespace)
        return tiny(effects={"unchanged": namespace["unchanged"]})

    # A constant of the module counted not: snapshots folded with the old one were trusted.
    assert reading("Admin").fingerprint != reading("Member").fingerprint
    assert reading(("Admin", 1)).fingerprint == reading(("Admin", 1)).fingerprint
    assert reading(object()).fingerprint == reading(object()).fingerprint  # not data: left out
    huge = 1 << 20_000  # repr refuses it: the policy could not be built
    assert reading(huge).fingerprint != reading(huge + 1).fingerprint


def test_fingerprints_are_the_same_in_every_process() -> None:
    """The fingerprint of a policy does not depend on the process (string hashing is
    randomised per process, objects have other addresses): snapshots stay usable. A
    module constant its guard reads, a dict built from a set, had the set's order."""
    script = (
        "from tests.policies import KNOWN_METHODS, KNOWN_ROLES, PAUSING, SUBSCRIPTIONS;"
        "from lifecycle import DEFAULT_POLICY;"
        "print(DEFAULT_POLICY.fingerprint, SUBSCRIPTIONS.fingerprint, PAUSING.fingerprint,"
        " KNOWN_METHODS.fingerprint, KNOWN_ROLES.fingerprint)"
    )
    root = Path(__file__).resolve().parent.parent
    prints = {
        subprocess.run(
            [sys.executable, "-c", script],
            cwd=root,
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            check=True,
        ).stdout
        for seed in ("1", "2", "3")
    }
    assert len(prints) == 1


# -- diagrams --------------------------------------------------------------------------------------

Edge = tuple[str, str, str]


def table_edges(policy: Policy) -> set[Edge]:
    """Every accepting (state, event) pair of the compiled table as (source, target, event)."""
    return {
        (state, entry.dest, event)
        for (state, event), entry in policy.table.items()
        if isinstance(entry, Rule)
    }


def mermaid_edges(policy: Policy, text: str) -> set[Edge]:
    """The (source, target, event) edges drawn in a Mermaid state diagram."""
    edges: set[Edge] = set()
    for src, dest, labels in re.findall(r"^    (\S+) --> (\S+): (.+)$", text, flags=re.M):
        for label in labels.split("<br/>"):
            edges.add((policy.initial if src == "[*]" else src, dest, label.split(" [")[0]))
    return edges


def dot_edges(text: str) -> set[Edge]:
    """The (source, target, event) edges drawn in a Graphviz dot graph."""
    edges: set[Edge] = set()
    for src, dest, labels in re.findall(r'^    "(.+?)" -> "(.+?)" \[label="(.*)"\];$', text, re.M):
        for label in labels.split("\\n"):
            edges.add((src, dest, label.split(" [")[0]))
    return edges


@pytest.mark.parametrize("policy", [DEFAULT_POLICY, SUBSCRIPTIONS], ids=lambda p: p.name)
def test_mermaid_draws_every_transition(policy: Policy) -> None:
    """The Mermaid diagram has exactly the edges of the compiled table, and the final states."""
    text = policy.diagram("mermaid")
    assert text.startswith("stateDiagram-v2\n")
    assert mermaid_edges(policy, text) == table_edges(policy)
    assert "    deleted --> [*]\n" in text


@pytest.mark.parametrize("policy", [DEFAULT_POLICY, SUBSCRIPTIONS], ids=lambda p: p.name)
def test_dot_draws_every_transition(policy: Policy) -> None:
    """The dot graph has exactly the edges of the compiled table, one line break per label."""
    text = policy.diagram("dot")
    assert text.startswith(f'digraph "{policy.name}" {{\n')
    assert text.endswith("}\n")
    assert dot_edges(text) == table_edges(policy)
    assert '    "none" -> "created" [label="Account Created"];\n' in text


#: Names a diagram must quote: a hyphen and a space (Mermaid read `on hold` as two states
#: and failed on `past-due`), one of Mermaid's keywords, and quotes (dot's `digraph "odd
#: "quoted" policy"` did not parse).
ODD = DEFAULT_POLICY.extend(
    name='odd "quoted" policy',
    states=["on hold", "past-due", "end"],
    events=[EventSpec("Account Paused"), EventSpec("Payment: Failed")],
    transitions=[
        {"trigger": "Account Paused", "source": "created", "dest": "on hold"},
        {"trigger": "Payment: Failed", "source": "active", "dest": "past-due"},
        {"trigger": "Trial Ended", "source": "past-due", "dest": "end"},
        {"trigger": "Account Deleted", "source": ["on hold", "past-due", "end"], "dest": "deleted"},
    ],
    refusals={
        "Account Paused": Refusal("not_pausable", "a new account"),
        "Payment: Failed": Refusal("not_billed", "an active account"),
        **dict.fromkeys([*USER_EVENTS, "Trial Started"], Refusal("elsewhere", "another state")),
    },
)


def _unentity(text: str) -> str:
    for code, char in (("#quot;", '"'), ("#58;", ":"), ("#lt;", "<"), ("#gt;", ">")):
        text = text.replace(code, char)
    return text.replace("#35;", "#")


def test_diagrams_quote_names_that_are_not_plain_ids() -> None:
    """Read back the way Mermaid and dot read them, both diagrams of a policy whose names
    hold spaces, hyphens, quotes and colons have exactly the edges of its table."""
    text = ODD.diagram("mermaid")
    aliases = {
        alias: _unentity(name)
        for name, alias in re.findall(r'^    state "(.+)" as (s\d+)$', text, re.M)
    }
    assert set(aliases.values()) == {"on hold", "past-due", "end"}
    edges = {
        (aliases.get(src, src), aliases.get(dest, dest), label)
        for src, dest, label in mermaid_edges(ODD, text)
    }
    assert {(s, d, _unentity(e)) for s, d, e in edges} == table_edges(ODD)
    quoted = r'"((?:[^"\\]|\\.)*)"'
    dot = ODD.diagram("dot")
    assert re.match(rf"digraph {quoted} {{", dot).group(1).replace('\\"', '"') == ODD.name
    drawn = set()
    for src, dest, labels in re.findall(
        rf"^    {quoted} -> {quoted} \[label={quoted}\];$", dot, re.M
    ):
        for label in labels.split("\\n"):
            drawn.add((src, dest, label.split(" [")[0]))
    assert drawn == table_edges(ODD)


def test_diagrams_change_with_the_policy() -> None:
    """An extension adds its edge and a relaxation drops its guard from the drawing."""
    lenient = DEFAULT_POLICY.without_guard("Signed Out", "user_signed_in")
    for fmt in ("mermaid", "dot"):
        default = DEFAULT_POLICY.diagram(fmt)
        assert "Subscription Started" not in default
        assert "Subscription Started" in SUBSCRIPTIONS.diagram(fmt)
        assert "Signed Out [user_known, user_signed_in]" in default
        assert "Signed Out [user_known, user_signed_in]" not in lenient.diagram(fmt)
        assert "Signed Out [user_known]" in lenient.diagram(fmt)
    assert ("created", "active", "Subscription Started") in mermaid_edges(
        SUBSCRIPTIONS, SUBSCRIPTIONS.diagram("mermaid")
    )


def test_unknown_diagram_format() -> None:
    """A diagram format other than mermaid or dot raises ValueError naming it."""
    with pytest.raises(ValueError, match=r"unknown diagram format 'svg'"):
        DEFAULT_POLICY.diagram("svg")


# -- hunt11: diagrams of names Mermaid or dot misread ------------------------------------------


def _holding(*states: str, events: tuple[str, ...] = ()) -> Policy:
    """The default policy with ``states`` added, each reached from ``created`` by an event of
    its own (``events``, else ``To <n>``) and left by ``Account Deleted``."""
    names = list(events) or [f"To {n}" for n in range(len(states))]
    return DEFAULT_POLICY.extend(
        name="holding",
        states=list(states),
        events=[EventSpec(name) for name in names],
        transitions=[
            *(
                {"trigger": e, "source": "created", "dest": s}
                for e, s in zip(names, states, strict=True)
            ),
            {"trigger": "Account Deleted", "source": list(states), "dest": "deleted"},
        ],
        refusals={
            **{name: Refusal("not_from_here", "a new account") for name in names},
            **dict.fromkeys([*USER_EVENTS, "Trial Started", "Trial Ended"],
                            Refusal("elsewhere", "another state")),
        },
    )  # fmt: skip


#: Words Mermaid's stateDiagram lexer reads as keywords, in any case (its lexer is
#: case-insensitive): a state drawn under one of them as its id fails to parse, or loses
#: its edges (checked with mermaid 11's own parser).
MERMAID_KEYWORDS = ("default", "click", "href", "style", "scale", "accTitle", "accDescr",
                    "Note", "NOTE", "Class", "classdef", "State")  # fmt: skip


def _mermaid_ids(policy: Policy, text: str) -> dict[str, str]:
    """The id each state of ``policy`` is drawn under in the Mermaid ``text``."""
    aliases = {
        _unentity(name): alias
        for name, alias in re.findall(r'^    state "(.+)" as (\S+)$', text, re.M)
    }
    return {state: aliases.get(state, state) for state in policy.states}


@pytest.mark.parametrize("state", MERMAID_KEYWORDS)
def test_mermaid_does_not_draw_a_state_under_a_keyword(state: str) -> None:
    """A state named ``default``, ``style``, ``click``... or ``Note`` (the keyword ``note`` in
    another case) was drawn under its own name as its id: Mermaid refuses the diagram
    ("Expecting 'ID', got 'DEFAULT'", "Lexical error") or, for ``State``, drops its edges.
    Only six keywords, in one case each, were declared under an alias."""
    policy = _holding(state)
    text = policy.diagram("mermaid")
    drawn = _mermaid_ids(policy, text)[state]
    assert drawn.lower() not in {k.lower() for k in MERMAID_KEYWORDS}, text


def test_mermaid_aliases_never_take_the_name_of_another_state() -> None:
    """A state named ``s6`` and a state that needs an alias at index 6 (``on hold``) were
    drawn as one state: the alias ``s6`` was the other state's id, so the edges of both
    met in one box and the diagram no longer matched the machine."""
    policy = _holding("s6", "on hold")  # states: none, created, trial, active, deleted, s6, on hold
    assert policy.states.index("on hold") == 6
    text = policy.diagram("mermaid")
    ids = _mermaid_ids(policy, text)
    assert len(set(ids.values())) == len(policy.states), ids
    by_id = {v: k for k, v in ids.items()}
    edges = {
        (by_id.get(src, src), by_id.get(dest, dest), label)
        for src, dest, label in mermaid_edges(policy, text)
    }
    assert edges == table_edges(policy)


def test_mermaid_keeps_an_event_name_with_a_semicolon_whole() -> None:
    """Mermaid ends a statement at ``;``: the label of ``Paused; billing`` was drawn as
    ``Paused`` (and ``&amp;`` cut the same way). A semicolon must be written as an entity,
    as ``#`` and ``:`` are."""
    policy = _holding("held", events=("Paused; billing",))
    text = policy.diagram("mermaid")
    (line,) = [line for line in text.splitlines() if "Paused" in line]
    label = line.split(": ", 1)[1]
    assert ";" not in label.replace("#59;", "").replace("#35;", "").replace("#58;", "")
    assert "Paused" in label and "billing" in label


#: A quoted dot id: dot reads only ``\"`` as an escape in one.
_DOT_QUOTED = r'"((?:[^"\\]|\\.)*)"'


@pytest.mark.parametrize(
    ("state", "name"),
    [("on\\", "p"), ('a\\"b', "p"), ("held", "policy\\")],
    ids=["state ending in a backslash", "state with backslash and quote", "policy name"],
)
def test_dot_quotes_names_with_backslashes(state: str, name: str) -> None:
    """A state or policy name ending in a backslash was written as ``"on\\"``: dot reads the
    backslash and the closing quote as an escaped quote, and refuses the graph ("syntax
    error in line 10 near ']'"). Labels doubled their backslashes; names did not."""
    policy = _holding(state).extend(name=name)
    dot = policy.diagram("dot")
    assert re.match(rf"digraph {_DOT_QUOTED} {{\n", dot), dot.splitlines()[0]
    edge_lines = [line for line in dot.splitlines() if " -> " in line]
    for line in edge_lines:
        edge = rf"    {_DOT_QUOTED} -> {_DOT_QUOTED} \[label={_DOT_QUOTED}\];"
        assert re.fullmatch(edge, line), line
    if shutil.which("dot"):
        run = subprocess.run(["dot", "-Tplain"], input=dot.encode(), capture_output=True)
        assert run.returncode == 0, run.stderr.decode()


# -- hunt11: definitions of the wrong kind --------------------------------------------------------


@pytest.mark.parametrize(
    "extension",
    [
        {"refusals": {"Trial Started": "trial_already_started"}},
        {"refusals": {"Trial Started": Refusal(None, "an account gets one trial")}},  # type: ignore[arg-type]
        {"refusals": {"Trial Started": Refusal("", "an account gets one trial")}},
    ],
    ids=["refusal as a string", "refusal code None", "empty refusal code"],
)
def test_a_refusal_of_the_wrong_kind_is_a_policy_error(extension: dict[str, Any]) -> None:
    """A refusal given as its code (a string) raised ``AttributeError: 'str' object has no
    attribute 'guards'`` from ``Policy.codes``, and a code of None a ``TypeError`` from the
    length check; an empty code was taken, and rejections went out with code ``""``. Guards,
    property types and triggers of the wrong kind are PolicyErrors naming them."""
    with pytest.raises(PolicyError, match=r"Trial Started|refusal|code"):
        DEFAULT_POLICY.extend(**extension)


@pytest.mark.parametrize("code", [None, 42, ""], ids=["None", "int", "empty"])
def test_a_guard_code_of_the_wrong_kind_is_a_policy_error(code: Any) -> None:
    """``Guard("vip", None, check)`` raised ``TypeError: object of type 'NoneType' has no
    len()`` from deep inside the build; an empty code was taken."""
    with pytest.raises(PolicyError, match="vip"):
        DEFAULT_POLICY.with_guard("Signed In", Guard("vip", code, _always))


def test_aliases_given_as_one_string_are_not_its_letters() -> None:
    """``EventSpec("Account Held", aliases="Held")`` (a string, not a tuple) made each letter
    an alias: ``H``, ``e``, ``l`` and ``d`` became lifecycle events, so an unrelated track
    call named ``e`` was judged (``account_unknown``) instead of ignored. The policy must
    refuse it, or take the string as one alias."""
    try:
        policy = DEFAULT_POLICY.extend(
            states=["held"],
            events=[EventSpec("Account Held", aliases="Held")],  # type: ignore[arg-type]
            transitions=[
                {"trigger": "Account Held", "source": "created", "dest": "held"},
                {"trigger": "Account Deleted", "source": "held", "dest": "deleted"},
            ],
            refusals={
                "Account Held": Refusal("not_holdable", "a new account"),
                **dict.fromkeys([*USER_EVENTS, "Trial Started", "Trial Ended"],
                                Refusal("elsewhere", "another state")),
            },
        )  # fmt: skip
    except PolicyError:
        return
    assert "e" not in policy.catalog
    verdict = Gate(policy).submit({"event": "e", "userId": "u1", "context": CTX})
    assert verdict.verdict == "ignored"


# -- hunt11: fingerprints ------------------------------------------------------------------------


def _clear_users(state: AccountState, event: Event) -> Change:
    return {}, state.trial


def _chain(*effects: Any) -> Any:
    """An effect that runs ``effects`` in turn (a combinator closing over a tuple of them)."""

    def chained(state: AccountState, event: Event) -> Change:
        change: Change = (state.users, state.trial)
        for effect in effects:
            change = effect(state, event)
        return change

    return chained


def test_fingerprint_sees_the_functions_a_closure_holds_in_a_tuple() -> None:
    """An effect closing over a tuple of effects (``chain(a)`` vs ``chain(b)``) had one
    fingerprint whatever the functions: each was hashed as ``function{}``. Snapshots folded
    by one were trusted by the other, so ``load()`` mixed two policies' states. A single
    function closed over counts by its code; one in a tuple must too."""
    one = tiny(effects={"unchanged": _chain(_unchanged)})
    other = tiny(effects={"unchanged": _chain(_clear_users)})
    assert one.fingerprint != other.fingerprint
    assert one.fingerprint == tiny(effects={"unchanged": _chain(_unchanged)}).fingerprint


def test_a_target_state_of_the_wrong_kind_is_a_policy_error() -> None:
    """``"dest": ["trial"]`` (a list, as ``source`` may be) raised ``TypeError: unhashable
    type: 'list'`` from deep inside the build, not a PolicyError naming the transition."""
    with pytest.raises(PolicyError, match="Trial Started"):
        DEFAULT_POLICY.extend(
            transitions=[{"trigger": "Trial Started", "source": "active", "dest": ["trial"]}]
        )
