"""Assertions about verdicts, with failures that show every message and its verdict.

Free of Hypothesis and pytest: usable from any test runner.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

from lifecycle.decide import Verdict

_COLUMNS = ("#", "event", "account", "user", "verdict", "code", "reason")


class Submitter(Protocol):
    """What judges messages one at a time: a :class:`lifecycle.Gate` or a ``Lifecycle``."""

    def submit(self, message: Mapping[str, Any] | str | bytes) -> Verdict:
        """Judge one message and apply it if accepted."""
        ...


def assert_accepted(
    target: Submitter, messages: Iterable[Mapping[str, Any] | str | bytes]
) -> list[Verdict]:
    """Submit ``messages`` in order to ``target`` and assert that every one is accepted.

    ``target`` is a :class:`lifecycle.Gate` or a :class:`lifecycle.Lifecycle`
    (anything with ``submit``). Returns the verdicts. On failure raises
    :class:`AssertionError` with a table of every message (index, event,
    account, user, verdict, code, reason), so the first refused event is
    seen in the context of the history that led to it.
    """
    __tracebackhide__ = True  # pytest shows the caller's line, not this helper's
    items = list(messages)
    verdicts = [target.submit(item) for item in items]
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


def verdict_table(
    messages: Sequence[Mapping[str, Any] | str | bytes], verdicts: Sequence[Verdict]
) -> str:
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


def _field(message: Mapping[str, Any] | str | bytes, key: str) -> str:
    if isinstance(message, Mapping):
        value = message.get(key)
        return "" if value is None else str(value)
    return ""


def _user(message: Mapping[str, Any] | str | bytes, verdict: Verdict) -> str:
    if verdict.event is not None:
        return verdict.event.user
    return _field(message, "userId") or _field(message, "anonymousId")
