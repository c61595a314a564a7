"""The in-memory gate: messages in, verdicts out, account states kept in memory.

Use it to embed lifecycle without a database (a request handler that must
refuse illegal events, a notebook, a test) and as the engine of
``lifecycle check``. Memory grows with the number of accounts and of accepted
messageIds, never with the number of messages judged. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from lifecycle.decide import Verdict, judge, malformed
from lifecycle.messages import (
    EMPTY_BATCH,
    Item,
    Malformed,
    batch_of,
    decode_line,
    expand_batch,
    not_an_object,
    one_by_one,
)
from lifecycle.policy import Policy, checked
from lifecycle.rules import DEFAULT_POLICY
from lifecycle.state import AccountState


class Gate:
    """Judges messages one at a time, in order, keeping every account's state.

    >>> gate = Gate()
    >>> gate.submit({"type": "track", "event": "Account Created", "userId": "u1",
    ...              "context": {"groupId": "acct_1"}}).verdict
    'accepted'
    >>> gate.submit({"event": "Trial Ended", "userId": "u1",
    ...              "context": {"groupId": "acct_1"}}).reason
    'Trial Ended for acct_1 by u1: no trial is running (account is created)'

    Not thread-safe: give each thread its own gate, or use
    :class:`lifecycle.Lifecycle`, which is.
    """

    def __init__(self, policy: Policy = DEFAULT_POLICY) -> None:
        self.policy = checked(policy)
        self._accounts: dict[str, AccountState] = {}
        self._accepted: set[str] = set()
        # Bound once: judge() calls them for every message.
        self._seen = self._accepted.__contains__
        self._load_state = self._load

    def submit(self, message: Mapping[str, Any] | str | bytes) -> Verdict:
        """Judge one message (a dict, or its JSON text) and apply it if accepted.

        A batch object (as a dict or as JSON text) has every item judged and
        gives the verdict of its first; use :meth:`submit_line` for all of them.
        """
        if isinstance(message, (str, bytes)):
            verdicts = self.submit_line(message)
        elif (batch := batch_of(message)) is not None:
            # As its JSON text would be: a dict was judged as one message, and ignored.
            verdicts = [self.submit_item(item) for item in expand_batch(message, batch)]
        else:
            return self._judge_given(message)
        return verdicts[0] if verdicts else malformed(EMPTY_BATCH)

    def submit_many(self, messages: Iterable[Mapping[str, Any]]) -> list[Verdict]:
        """Judge messages in order; each sees the effect of the ones before it."""
        return [self._judge_given(m) for m in one_by_one(messages, "submit_many")]

    def submit_line(self, line: str | bytes) -> list[Verdict]:
        """Judge every message of one line of JSONL input (a message or a batch object)."""
        return [self.submit_item(item) for item in decode_line(line)]

    def submit_item(self, item: Item) -> Verdict:
        """Judge one item of a line, as :func:`lifecycle.reader.items_of` splits them: a
        message (one with a ``batch`` key of its own included: batches do not nest), or
        the :class:`~lifecycle.messages.Malformed` reason a line or item is not one."""
        return malformed(item.reason) if isinstance(item, Malformed) else self._judge(item)

    def state(self, account: str) -> AccountState | None:
        """The current state of ``account``, or None if no event of it was accepted."""
        return self._accounts.get(account)

    def accounts(self) -> Iterator[AccountState]:
        """Every account with at least one accepted event, in first-seen order."""
        return iter(self._accounts.values())

    def __len__(self) -> int:
        return len(self._accounts)

    def _judge_given(self, message: Mapping[str, Any]) -> Verdict:
        """:meth:`_judge` for a value given from Python, which may not be an object at all."""
        if (wrong := not_an_object(message)) is not None:
            return malformed(wrong.reason)
        return self._judge(message)

    def _judge(self, message: Mapping[str, Any]) -> Verdict:
        verdict, new = judge(self.policy, message, self._load_state, self._seen)
        if new is not None:
            self._accounts[new.account] = new
            if verdict.message_id is not None:
                self._accepted.add(verdict.message_id)
        return verdict

    def _load(self, account: str) -> AccountState:
        state = self._accounts.get(account)
        return state if state is not None else AccountState(account, self.policy.initial)
