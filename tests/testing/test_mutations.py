"""Mutated legal histories get the verdicts the rules guarantee."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lifecycle import Gate
from lifecycle.testing import legal_histories, mutations

HISTORIES = legal_histories(max_events=12).filter(bool)


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_guaranteed_verdicts_hold(data: st.DataObject) -> None:
    """Whatever the mutation, every verdict it guarantees is the one the gate gives."""
    mutation = data.draw(mutations(data.draw(HISTORIES)))
    for position, expected in mutation.guaranteed.items():
        assert mutation.outcome(position) == expected, (mutation.name, position)


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_a_redelivered_message_is_a_duplicate(data: st.DataObject) -> None:
    """A message sent again with the same messageId gets `duplicate` and changes nothing else."""
    history = data.draw(HISTORIES)
    mutation = data.draw(mutations(history, kinds=["duplicate"]))
    outcomes = [mutation.outcome(n) for n in range(len(mutation.history))]
    assert outcomes.count("duplicate") == 1
    assert outcomes.count("accepted") == len(history)


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_a_retargeted_event_needs_its_account(data: st.DataObject) -> None:
    """An event sent to an account never created is `account_unknown` unless it creates it."""
    mutation = data.draw(mutations(data.draw(HISTORIES), kinds=["retarget"]))
    moved = mutation.history[mutation.index]
    expected = "accepted" if moved["event"] == "Account Created" else "account_unknown"
    assert mutation.outcome(mutation.index) == expected


@pytest.mark.parametrize(
    "imports",
    [
        "from lifecycle.testing import Mutation, mutations",
        "from lifecycle.testing import mutations, Mutation",
        "import lifecycle.testing as t; t.Mutation; mutations = t.mutations",
    ],
)
def test_mutations_is_the_strategy_whatever_was_imported_first(imports: str) -> None:
    """Importing ``Mutation`` first had loaded a submodule of the same name as the strategy,
    and ``from lifecycle.testing import mutations`` then gave that module."""
    code = f"{imports}\nimport inspect\nassert not inspect.ismodule(mutations), mutations"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@settings(max_examples=20, deadline=None)
@given(st.data())
def test_a_mutation_prints_one_line_per_message(data: st.DataObject) -> None:
    """A failing example shows the mutation in a line per message: it printed every message
    three times over (its dict, its verdict, the verdict's event), hundreds of lines."""
    mutation = data.draw(mutations(data.draw(HISTORIES)))
    lines = repr(mutation).splitlines()
    assert lines[0] == f"Mutation({mutation.name}," and lines[-1] == ")"
    assert len(lines) == len(mutation.history) + 2
    for n, line in enumerate(lines[1:-1]):
        assert line.startswith(f"  #{n} {mutation.history[n].get('event')} ")
        assert f"-> {mutation.outcome(n)}" in line


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_every_verdict_the_rules_imply_is_guaranteed(data: st.DataObject) -> None:
    """A mutation guarantees all that its docs promise, not merely nothing false: each message
    before the mutated one, the whole history around a redelivery (generated messages all
    have a messageId), all of a history whose last event was dropped, a retargeted event."""
    history = data.draw(HISTORIES)
    mutation = data.draw(mutations(history))
    guaranteed = mutation.guaranteed
    assert all(guaranteed.get(n) == "accepted" for n in range(mutation.index)), mutation.name
    everywhere = sorted(guaranteed) == list(range(len(mutation.history)))
    if mutation.kind == "duplicate":
        assert everywhere and list(guaranteed.values()).count("duplicate") == 1, mutation.name
    elif mutation.kind == "drop" and mutation.index == len(history) - 1:
        assert everywhere and set(guaranteed.values()) <= {"accepted"}, mutation.name
    elif mutation.kind == "retarget":
        assert mutation.index in guaranteed, mutation.name


@settings(max_examples=10, derandomize=True, database=None, deadline=None)
@given(st.data())
def test_a_duplicate_without_a_usable_message_id_is_not_guaranteed_a_duplicate(
    data: st.DataObject,
) -> None:
    """No usable messageId (the gate reads only a non-empty string) means no
    de-duplication. A history the policy accepts in full, whose message carries
    ``"messageId": ""``: a redelivery of it is judged afresh, yet the mutation
    guarantees ``duplicate`` for it and ``accepted`` for everything else."""
    created = {
        "type": "track",
        "event": "Account Created",
        "userId": "user_1",
        "context": {"groupId": "acct_1"},
        "messageId": "",
    }
    history = [created]
    assert all(v.accepted for v in Gate().submit_many(history))
    mutation = data.draw(mutations(history, kinds=["duplicate"]))
    for position, expected in mutation.guaranteed.items():
        assert mutation.outcome(position) == expected, mutation
