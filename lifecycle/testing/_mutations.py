"""Mutations of a legal history, paired with the verdicts the policy gives the result.

A mutation is one of the mistakes real pipelines make: an event lost
(``drop``), redelivered (``duplicate``: the same message, same ``messageId``,
sent again later), delivered out of order (``swap`` of two neighbours), or
sent to the wrong account (``retarget``). :func:`mutations` draws one and
judges the mutated history with a fresh :class:`lifecycle.Gate`.

Some verdicts follow from the rules alone, whatever the history; each
:class:`Mutation` states them in ``guaranteed`` (index -> verdict or code):

* every message before the mutated position keeps its verdict (``accepted``);
* a ``duplicate`` of an accepted message gets ``duplicate`` and changes
  nothing, so every other message stays ``accepted``;
* a ``drop`` of the last event leaves a legal history: all ``accepted``;
* a ``retarget`` to an account never created gets ``account_unknown`` (unless
  it is the creating event, which is then ``accepted``).

Needs ``hypothesis``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from lifecycle.decide import Verdict
from lifecycle.envelope import group_id_of, message_id_of, user_of
from lifecycle.gate import Gate
from lifecycle.policy import Policy, Rule
from lifecycle.rules import DEFAULT_POLICY
from lifecycle.spec import ACCOUNT_UNKNOWN
from lifecycle.testing.strategies import _check_policy

Message = dict[str, Any]

#: The kinds of mutation :func:`mutations` draws.
KINDS = ("drop", "duplicate", "swap", "retarget")
#: The account a ``retarget`` sends an event to: never created by a generated history.
STRANGER = "acct_stranger"


@dataclass(frozen=True)
class Mutation:
    """One mutated history and the verdicts the policy gives it.

    ``kind`` is one of :data:`KINDS`; ``index`` is the position in ``history``
    of the message dropped, copied, moved or retargeted; ``verdicts`` are the
    policy's verdicts for ``history`` in order; ``guaranteed`` maps positions
    of ``history`` to the verdict (``accepted``, ``duplicate``) or rejection
    code the rules alone imply there.
    """

    kind: str
    index: int
    history: tuple[Message, ...]
    verdicts: tuple[Verdict, ...]
    guaranteed: Mapping[int, str]

    @property
    def name(self) -> str:
        """``kind@index``, for readable failures."""
        return f"{self.kind}@{self.index}"

    def outcome(self, position: int) -> str:
        """The verdict at ``position``, or its code when it was rejected."""
        verdict = self.verdicts[position]
        return verdict.code if verdict.code is not None else verdict.verdict

    def __repr__(self) -> str:
        """One line per message (event, account, user, outcome), not the messages whole:
        a failing example printed each message three times, hundreds of lines."""
        rows = [
            f"  #{n} {_brief(message)} -> {self.outcome(n)}"
            + (f" (guaranteed {self.guaranteed[n]})" if n in self.guaranteed else "")
            for n, message in enumerate(self.history)
        ]
        return "\n".join([f"Mutation({self.name},", *rows, ")"])

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        """What Hypothesis prints for a failing example: the same as :meth:`__repr__`."""
        printer.text(repr(self))


def _brief(message: Mapping[str, Any]) -> str:
    return f"{message.get('event')} {group_id_of(message)} {user_of(message)}"


@st.composite
def mutations(
    draw: st.DrawFn,
    history: Sequence[Mapping[str, Any]],
    *,
    policy: Policy = DEFAULT_POLICY,
    kinds: Sequence[str] = KINDS,
) -> Mutation:
    """One mutation of ``history`` (a history ``policy`` accepts in full) and its verdicts.

    Example::

        from hypothesis import given, strategies as st
        from lifecycle.testing import legal_histories, mutations

        @given(st.data())
        def test_redelivery_is_harmless(data):
            history = data.draw(legal_histories(max_events=10, min_events=1))
            mutation = data.draw(mutations(history, kinds=["duplicate"]))
            for position, expected in mutation.guaranteed.items():
                assert mutation.outcome(position) == expected
    """
    _check_policy(policy)
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds or isinstance(kinds, str):
        raise InvalidArgument(f"kinds={kinds!r}: choose among {list(KINDS)}")
    original = [copy.deepcopy(dict(m)) for m in history]
    if not original:
        raise InvalidArgument("history must hold at least one message")
    usable = [k for k in kinds if k != "swap" or len(original) > 1]
    if not usable:
        raise InvalidArgument("a swap needs a history of at least two messages")
    kind = draw(st.sampled_from(usable))
    last = len(original) - 1
    index = draw(st.integers(0, last - 1 if kind == "swap" else last))
    mutated = list(original)
    guaranteed: dict[int, str] = {n: "accepted" for n in range(index)}
    if kind == "drop":
        del mutated[index]
        if index == last:
            guaranteed = {n: "accepted" for n in range(len(mutated))}
    elif kind == "duplicate":
        at = draw(st.integers(index + 1, len(original)))
        mutated.insert(at, copy.deepcopy(original[index]))
        if message_id_of(original[index]) is not None:  # as the gate de-duplicates
            # A duplicate changes no state: everything else is judged as before.
            guaranteed = {n: "accepted" for n in range(len(mutated))}
            guaranteed[at] = "duplicate"
    elif kind == "swap":
        mutated[index], mutated[index + 1] = mutated[index + 1], mutated[index]
    else:
        moved = copy.deepcopy(original[index])
        moved["context"] = {**dict(moved.get("context") or {}), "groupId": STRANGER}
        mutated[index] = moved
        creating = isinstance(policy.rule(policy.initial, _event(policy, moved)), Rule)
        guaranteed[index] = "accepted" if creating else ACCOUNT_UNKNOWN
    verdicts = tuple(Gate(policy).submit_many(mutated))
    return Mutation(kind, index, tuple(mutated), verdicts, guaranteed)


def _event(policy: Policy, message: Mapping[str, Any]) -> str:
    spec = policy.catalog.get(str(message.get("event")))
    return spec.name if spec is not None else str(message.get("event"))
