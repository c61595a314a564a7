"""How a legal history travels: batched, redelivered, among calls lifecycle ignores.

An application does not send its history one message per line. Segment's libraries
batch messages, retry a request whose answer was lost (the same ``messageId`` again),
and send every other call (identify, group, page, other track events) down the same
pipe. :func:`deliveries` draws such a delivery of a legal history, with the verdict
RULES.md gives each message of it: a pipeline in front of lifecycle, or one that
re-implements part of it, can then be tested on what it really receives.

Needs ``hypothesis``.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from lifecycle.envelope import group_id_of, message_id_of, user_of
from lifecycle.gate import Gate
from lifecycle.messages import batch_of
from lifecycle.policy import Policy
from lifecycle.rules import DEFAULT_POLICY
from lifecycle.testing.strategies import _check_policy

Message = dict[str, Any]

#: What :func:`deliveries` may do to a history.
KINDS = ("batch", "redeliver", "ignored", "no_message_id")
ACCEPTED, DUPLICATE, IGNORED = "accepted", "duplicate", "ignored"

# Names that are not lifecycle events (RULES.md matches names exactly): other spec
# and e-commerce events, and lifecycle names in another case or spacing.
_OTHER_EVENTS = (
    "Order Completed",
    "Product Viewed",
    "Account Updated",
    "signed in",
    "SIGNED UP",
    "Account created",
    " Signed Out",
    "Trial Started ",
)
# Calls that are not track calls, some carrying a lifecycle event name all the same.
_OTHER_TYPES = ("identify", "group", "page", "screen", "alias")


@dataclass(frozen=True)
class Delivery:
    """One delivery of a legal history and the verdict of each message in it.

    ``lines`` are what is sent, in order: messages and Segment batch objects
    (``{"batch": [...]}``; a batch's ``context`` is shared by its items). ``verdicts``
    hold one verdict per message, batch items in order: ``accepted`` for each first
    delivery of an event of the history, ``duplicate`` for a redelivery of one that has
    a ``messageId``, ``ignored`` for every call that is no lifecycle event.
    """

    lines: tuple[Message, ...]
    verdicts: tuple[str, ...]

    def jsonl(self) -> list[bytes]:
        """The lines as JSON text, as lifecycle reads them from a file."""
        return [orjson.dumps(line) for line in self.lines]

    def messages(self) -> Iterator[Message]:
        """Every message in order, batch items with the batch's context merged in."""
        for line in self.lines:
            if batch_of(line) is None:
                yield line
            elif "context" not in line:
                yield from line["batch"]
            else:
                for item in line["batch"]:
                    yield {**item, "context": {**line["context"], **item.get("context", {})}}

    def __repr__(self) -> str:
        """One row per message (line, event, account, user, verdict), not the messages."""
        rows, verdicts = [], iter(self.verdicts)
        for number, line in enumerate(self.lines, 1):
            batch = batch_of(line) is not None
            shared = line.get("context", {}).get("groupId") if batch else None
            for index, item in enumerate(line["batch"] if batch else [line]):
                where = f"{number}[{index}]" if batch else f"{number}"
                rows.append(f"  line {where} {_brief(item, shared)} -> {next(verdicts)}")
        return "\n".join(["Delivery(", *rows, ")"])

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        """What Hypothesis prints for a failing example: the same as :meth:`__repr__`."""
        printer.text(repr(self))


def _brief(message: Mapping[str, Any], shared_account: object) -> str:
    kind = message.get("event") or message.get("type")
    return f"{kind!r} {group_id_of(message) or shared_account} {user_of(message)}"


@st.composite
def deliveries(
    draw: st.DrawFn,
    history: Sequence[Mapping[str, Any]],
    *,
    policy: Policy = DEFAULT_POLICY,
    kinds: Sequence[str] = KINDS,
) -> Delivery:
    """One delivery of ``history`` (a history ``policy`` accepts in full).

    ``kinds`` says what may happen on the way, all by default: ``batch`` (runs of
    messages become batch objects, an account named once in the batch's context when
    all its items share it), ``redeliver`` (a message sent again later, same
    ``messageId``), ``ignored`` (identify, group, page ... calls and track events that
    are no lifecycle event, among them lifecycle names in another case) and
    ``no_message_id`` (a message sent without one: accepted all the same, and never a
    duplicate). The history's own events keep their order. Everything shrinks towards
    the history sent as it is, one message per line.

    Example::

        from hypothesis import given, strategies as st
        from lifecycle import Gate
        from lifecycle.testing import deliveries, legal_histories

        @given(st.data())
        def test_a_real_delivery_is_judged_as_the_history(data):
            delivery = data.draw(deliveries(data.draw(legal_histories())))
            gate = Gate()
            verdicts = [v.verdict for line in delivery.jsonl() for v in gate.submit_line(line)]
            assert verdicts == list(delivery.verdicts)
    """
    wanted = _checked_kinds(kinds)
    original = _legal(history, policy)
    sent: list[tuple[Message, str]] = []
    pending: list[Message] = []  # sent once, to be sent again later
    for number, message in enumerate(original):
        if "ignored" in wanted and draw(st.integers(0, 3)) == 3:
            sent.append((draw(_ignored_calls(policy, original, number)), IGNORED))
        if pending and draw(st.integers(0, 2)) == 2:
            sent.append((pending.pop(draw(st.integers(0, len(pending) - 1))), DUPLICATE))
        if "no_message_id" in wanted and draw(st.integers(0, 5)) == 5:
            message = {k: v for k, v in message.items() if k != "messageId"}
        elif "redeliver" in wanted and message_id_of(message) and draw(st.integers(0, 4)) == 4:
            pending.append(copy.deepcopy(message))
        sent.append((message, ACCEPTED))
    sent.extend((message, DUPLICATE) for message in pending)
    if "ignored" in wanted and original and draw(st.integers(0, 3)) == 3:
        sent.append((draw(_ignored_calls(policy, original, len(original) - 1)), IGNORED))
    lines = _in_lines(draw, [m for m, _ in sent]) if "batch" in wanted else [m for m, _ in sent]
    return Delivery(tuple(lines), tuple(v for _, v in sent))


def _checked_kinds(kinds: Sequence[str]) -> frozenset[str]:
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or isinstance(kinds, str):
        raise InvalidArgument(f"kinds={kinds!r}: choose among {list(KINDS)}")
    return frozenset(kinds)


def _legal(history: Sequence[Mapping[str, Any]], policy: Policy) -> list[Message]:
    """A copy of ``history``, checked to be accepted in full: the verdicts depend on it."""
    _check_policy(policy)
    original = [copy.deepcopy(dict(m)) for m in history]
    for number, message in enumerate(original):
        if batch_of(message) is not None:
            raise InvalidArgument(
                f"history[{number}] has a batch list of its own: on a line it would be read"
                " as a batch object, not as the message the history judges"
            )
    for number, verdict in enumerate(Gate(policy).submit_many(original)):
        if not verdict.accepted:
            raise InvalidArgument(
                f"history[{number}] is {verdict.code or verdict.verdict}, not accepted: "
                "deliveries() takes a history the policy accepts in full (legal_histories())"
            )
    return original


@st.composite
def _ignored_calls(
    draw: st.DrawFn, policy: Policy, history: Sequence[Message], number: int
) -> Message:
    """A call lifecycle ignores, naming an account and a user of the history."""
    near = history[number]
    call: Message = {
        "userId": user_of(near),
        "context": dict(near.get("context") or {}),
        "messageId": f"ignored-{number:03d}-{draw(st.integers(0, 999)):03d}",
    }
    others = [name for name in _OTHER_EVENTS if name not in policy.catalog]
    track: bool = draw(st.booleans())
    if track and others:
        call.update(type="track", event=draw(st.sampled_from(others)))
        # Not validated: properties a lifecycle event could not have.
        call["properties"] = {"trial_start_date": 42, "account_name": ["not", "a", "string"]}
    else:
        call["type"] = draw(st.sampled_from(_OTHER_TYPES))
        if draw(st.booleans()):  # a lifecycle name on a call that is no track call
            call["event"] = near["event"]
    return call


def _in_lines(draw: st.DrawFn, messages: list[Message]) -> list[Message]:
    """``messages`` cut into lines: single messages, or batches of those that join the
    line before. One choice per message, which shrinks to a line of its own: changing
    one choice changes no other (a draw per batch had kept Hypothesis from shrinking
    batches away)."""
    lines: list[Message | list[Message]] = []
    shared: list[bool] = []
    for message in messages:
        kind = draw(st.integers(0, 3))  # a line, a batch, a batch naming its account, joins
        if kind == 0:
            lines.append(message)
        elif kind == 3 and lines and isinstance(lines[-1], list):
            lines[-1].append(copy.deepcopy(message))
        else:
            lines.append([copy.deepcopy(message)])
            shared.append(kind == 2)
    hoisted = iter(shared)
    return [_batch(line, next(hoisted)) if isinstance(line, list) else line for line in lines]


def _batch(items: list[Message], shared: bool) -> Message:
    """A batch object of ``items``; their account named once, in its context, when
    ``shared`` and they all have it."""
    accounts = {group_id_of(m) for m in items}
    if shared and len(accounts) == 1 and None not in accounts:  # (each context a dict, then)
        for item in items:
            del item["context"]["groupId"]
            if not item["context"]:
                del item["context"]
        return {"batch": items, "context": {"groupId": accounts.pop()}}
    return {"batch": items}
