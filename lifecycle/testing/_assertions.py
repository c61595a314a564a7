"""Assertions about verdicts, with failures that show every message and its verdict.

Free of Hypothesis and pytest: usable from any test runner.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

from lifecycle.decide import Verdict, malformed
from lifecycle.messages import (
    EMPTY_BATCH,
    Malformed,
    batch_of,
    decode_line,
    expand_batch,
    one_by_one,
)

_COLUMNS = ("#", "event", "account", "user", "verdict", "code", "reason")

#: A message as tests give it: a dict, or JSON text (one message or a batch object).
Given = Mapping[str, Any] | str | bytes


class Submitter(Protocol):
    """What judges messages one at a time: a :class:`lifecycle.Gate` or a ``Lifecycle``."""

    def submit(self, message: Given) -> Verdict:
        """Judge one message and apply it if accepted."""
        ...

    def submit_line(self, line: str | bytes) -> list[Verdict]:
        """Judge every message of one line of JSON text (a message or a batch object)."""
        ...


def judged(target: Submitter, given: Given) -> list[tuple[Given, Verdict]]:
    """Submit ``given`` and pair each message it holds with its verdict.

    A batch object, as JSON text or as a dict, has every item judged and checked, not
    only the first (``submit`` answers for the first alone), and an empty batch is not
    accepted.
    """
    if isinstance(given, Mapping) and (batch := batch_of(given)) is not None:
        items = expand_batch(given, batch)
        if not items:
            return [(given, malformed(EMPTY_BATCH))]
        return [
            (given, malformed(item.reason))
            if isinstance(item, Malformed)
            else (item, target.submit(item))
            for item in items
        ]
    if not isinstance(given, (str, bytes)):
        return [(given, target.submit(given))]
    verdicts = target.submit_line(given)
    if not verdicts:
        return [(given, malformed(EMPTY_BATCH))]
    items = decode_line(given)
    shown = [given if isinstance(m, Malformed) else m for m in items]
    return list(zip(shown, verdicts, strict=True))


def assert_accepted(target: Submitter, messages: Iterable[Given]) -> list[Verdict]:
    """Submit ``messages`` in order to ``target`` and assert that every one is accepted.

    ``target`` is a :class:`lifecycle.Gate` or a :class:`lifecycle.Lifecycle`
    (anything with ``submit`` and ``submit_line``). A message given as JSON text
    may be a batch object: each of its items counts as a message. Returns the
    verdicts, one per message. On failure raises :class:`AssertionError` with a
    table of every message (index, event, account, user, verdict, code, reason),
    so the first refused event is seen in the context of the history that led to it.
    """
    __tracebackhide__ = True  # pytest shows the caller's line, not this helper's
    given_all = one_by_one(messages, "assert_accepted", "pass [message] for one message")
    pairs = [pair for given in given_all for pair in judged(target, given)]
    items = [message for message, _ in pairs]
    verdicts = [verdict for _, verdict in pairs]
    refused = [n for n, v in enumerate(verdicts) if not v.accepted]
    if refused:
        first = verdicts[refused[0]]
        raise AssertionError(
            f"{len(refused)} of {len(items)} messages not accepted; first at #{refused[0]}: "
            f"{first.verdict} {first.code or ''}".rstrip()
            + "\n"
            + verdict_table(items, verdicts)
        )
    return verdicts


def verdict_table(messages: Sequence[Given], verdicts: Sequence[Verdict]) -> str:
    """A plain-text table of messages and their verdicts, one row per message."""
    rows = [_COLUMNS]
    for n, (message, verdict) in enumerate(zip(messages, verdicts, strict=True)):
        rows.append(
            (
                str(n),
                str(verdict.event_name or _field(message, "event")),
                str(verdict.account or ""),
                _user(message, verdict),
                ("!" if not verdict.accepted else "") + verdict.verdict,
                verdict.code or "",
                verdict.reason or "",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS) - 1)]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row[:-1], widths, strict=True)) + "  " + row[-1]
        for row in rows
    ]
    return "\n".join(line.rstrip() for line in lines)


def _field(message: Given, key: str) -> str:
    if isinstance(message, Mapping):
        value = message.get(key)
        return "" if value is None else str(value)
    return ""


def _user(message: Given, verdict: Verdict) -> str:
    if verdict.event is not None:
        return verdict.event.user
    return _field(message, "userId") or _field(message, "anonymousId")
