"""A delivery of a legal history gets the verdicts it promises, wherever it is judged."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from lifecycle import Gate, Lifecycle
from lifecycle.envelope import message_id_of
from lifecycle.policy import Policy
from lifecycle.rules import DEFAULT_POLICY
from lifecycle.testing import Delivery, deliveries, legal_histories
from tests.policies import SUBSCRIPTIONS

HISTORIES = legal_histories(max_events=15).filter(bool)


def judged(delivery: Delivery, gate: Gate) -> list[str]:
    return [v.verdict for line in delivery.jsonl() for v in gate.submit_line(line)]


@pytest.mark.parametrize("policy", [DEFAULT_POLICY, SUBSCRIPTIONS], ids=lambda p: p.name)
@settings(max_examples=80, deadline=None)
@given(data=st.data())
def test_the_gate_gives_the_promised_verdicts(policy: Policy, data: st.DataObject) -> None:
    """Batched, redelivered, without messageIds and among ignored calls, a legal history
    is judged as promised, and its events reach the gate in their order."""
    history = data.draw(legal_histories(policy=policy, max_events=15))
    delivery = data.draw(deliveries(history, policy=policy))
    gate = Gate(policy)
    assert judged(delivery, gate) == list(delivery.verdicts)
    messages = list(delivery.messages())
    assert len(messages) == len(delivery.verdicts)
    firsts = [m for m, v in zip(messages, delivery.verdicts, strict=True) if v == "accepted"]
    assert [_without_id(m) for m in firsts] == [_without_id(m) for m in history]
    assert {s.account: s for s in gate.accounts()} == _states(history, policy)


def _without_id(message: dict[str, object]) -> dict[str, object]:
    return {k: v for k, v in message.items() if k != "messageId"}


def _states(history: list[dict[str, object]], policy: Policy) -> dict[str, object]:
    gate = Gate(policy)
    gate.submit_many(history)
    return {s.account: s for s in gate.accounts()}


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_each_kind_alone(data: st.DataObject) -> None:
    """Each kind does what it names, and nothing else."""
    history = data.draw(HISTORIES)
    batched = data.draw(deliveries(history, kinds=["batch"]))
    assert list(batched.messages()) == history
    assert set(batched.verdicts) == {"accepted"}
    redelivered = data.draw(deliveries(history, kinds=["redeliver"]))
    first: dict[str, int] = {}
    for position, (message, verdict) in enumerate(
        zip(redelivered.lines, redelivered.verdicts, strict=True)
    ):
        if verdict == "duplicate":  # a copy of a message sent before
            assert redelivered.lines[first[message["messageId"]]] == message
        else:
            first[message["messageId"]] = position
    assert redelivered.verdicts.count("accepted") == len(history)
    noisy = data.draw(deliveries(history, kinds=["ignored"]))
    events = [m for m in noisy.lines if m.get("type", "track") == "track"]
    assert [m for m in events if m["event"] in _names()] == history
    anonymous = data.draw(deliveries(history, kinds=["no_message_id"]))
    assert [_without_id(m) for m in anonymous.lines] == [_without_id(m) for m in history]
    assert set(anonymous.verdicts) == {"accepted"}
    assert data.draw(deliveries(history, kinds=[])).lines == tuple(history)


def _names() -> set[str]:
    return set(DEFAULT_POLICY.catalog)


def test_every_kind_happens() -> None:
    """Each kind shows up within a modest number of examples: none is drawn too rarely to
    be tried, and ignored calls include lifecycle names that must still be ignored."""
    seen: set[str] = set()

    @settings(max_examples=100, deadline=None, derandomize=True)
    @given(st.data())
    def collect(data: st.DataObject) -> None:
        delivery = data.draw(deliveries(data.draw(HISTORIES)))
        for line in delivery.lines:
            if "batch" in line:
                seen.add("batch" if "context" not in line else "shared context")
        seen.update(v for v in delivery.verdicts if v != "accepted")
        messages = list(delivery.messages())
        if any(message_id_of(m) is None for m in messages):
            seen.add("no messageId")
        if any(m.get("type") != "track" and m.get("event") in _names() for m in messages):
            seen.add("lifecycle name on another call")

    collect()
    assert seen == {
        "batch",
        "shared context",
        "duplicate",
        "ignored",
        "no messageId",
        "lifecycle name on another call",
    }


@settings(max_examples=25, deadline=None)
@given(st.data())
def test_a_store_gives_the_promised_verdicts(data: st.DataObject) -> None:
    """Through the event store, line by line, as `ingest` reads them."""
    delivery = data.draw(deliveries(data.draw(HISTORIES)))
    with Lifecycle("sqlite://") as store:
        verdicts = [v.verdict for line in delivery.jsonl() for v in store.submit_line(line)]
    assert verdicts == list(delivery.verdicts)


def test_ignored_names_are_not_in_the_policy() -> None:
    """A custom policy's own event is never drawn as an ignored call."""
    from lifecycle import EventSpec, Refusal

    ordering = SUBSCRIPTIONS.extend(
        name="orders",
        events=[EventSpec("Order Completed")],
        transitions=[
            {"trigger": "Order Completed", "source": live, "dest": live}
            for live in ("created", "trial", "active")
        ],
        refusals={"Order Completed": Refusal("no_orders_yet", "a live account")},
    )

    @settings(max_examples=60, deadline=None, derandomize=True)
    @given(st.data())
    def check(data: st.DataObject) -> None:
        history = data.draw(legal_histories(policy=ordering, max_events=10).filter(bool))
        delivery = data.draw(deliveries(history, policy=ordering, kinds=["ignored"]))
        assert judged(delivery, Gate(ordering)) == list(delivery.verdicts)

    check()


@pytest.mark.parametrize(
    ("history", "kinds", "message"),
    [
        (
            [{"event": "Signed In", "userId": "u", "context": {"groupId": "a"}}],
            None,
            "account_unknown",
        ),
        ([], ["bogus"], "choose among"),
        ([], "batch", "choose among"),
    ],
)
def test_bad_arguments_are_named(
    history: list[dict[str, object]], kinds: list[str] | None, message: str
) -> None:
    strategy = deliveries(history) if kinds is None else deliveries(history, kinds=kinds)

    @given(st.data())
    def draw(data: st.DataObject) -> None:
        data.draw(strategy)

    with pytest.raises(InvalidArgument, match=message):
        draw()


def test_a_failing_example_reads_as_a_table() -> None:
    """A failing example shows one row per message, batch items by position."""
    created = {
        "type": "track",
        "event": "Account Created",
        "userId": "u",
        "context": {"groupId": "a"},
        "messageId": "m1",
    }
    delivery = Delivery(
        (
            {
                "batch": [{k: v for k, v in created.items() if k != "context"}],
                "context": {"groupId": "a"},
            },
            {"type": "identify", "userId": "u"},
        ),
        ("accepted", "ignored"),
    )
    assert repr(delivery) == (
        "Delivery(\n"
        "  line 1[0] 'Account Created' a u -> accepted\n"
        "  line 2 'identify' None u -> ignored\n"
        ")"
    )
    assert orjson.loads(delivery.jsonl()[0])["context"] == {"groupId": "a"}


def test_a_failure_shrinks_to_one_message_per_line() -> None:
    """Cutting a batch back to plain lines took a draw per item, which Hypothesis could
    not delete: a failure that needs a redelivery shrank to batches of seven or eight."""
    from hypothesis import find

    history = find(legal_histories(min_events=20), lambda h: True)
    smallest = find(
        deliveries(history),
        lambda d: "duplicate" in d.verdicts,
        settings=settings(max_examples=500, database=None),
    )
    assert smallest.verdicts.count("duplicate") == 1
    assert not any(type(line.get("batch")) is list for line in smallest.lines)
    assert "ignored" not in smallest.verdicts


def test_a_batch_key_of_a_message_is_not_a_batch() -> None:
    """A message's own `batch` key that is no list leaves it a message (its characters
    were yielded as messages); a list would make its line a batch object, so such a
    history is refused."""

    @given(st.data())
    def draw(data: st.DataObject) -> None:
        tagged = [{**m, "batch": "nightly-import"} for m in data.draw(HISTORIES)]
        delivery = data.draw(deliveries(tagged, kinds=["batch", "ignored"]))
        assert judged(delivery, Gate()) == list(delivery.verdicts)
        assert [m for m in delivery.messages() if "batch" in m] == tagged
        repr(delivery)

    settings(max_examples=30, deadline=None)(draw)()
    listed = [{**_created(), "batch": []}]

    @given(st.data())
    def refuse(data: st.DataObject) -> None:
        data.draw(deliveries(listed))

    with pytest.raises(InvalidArgument, match=r"history\[0\] has a batch list of its own"):
        refuse()


def _created() -> dict[str, object]:
    return {"event": "Account Created", "userId": "u", "context": {"groupId": "a"}}
