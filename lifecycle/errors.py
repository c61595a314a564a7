"""Every exception lifecycle raises, under one root.

Catch :class:`LifecycleError` to handle anything the library raises on purpose::

    LifecycleError
    ├── PolicyError          a policy definition is inconsistent (raised when it is built)
    ├── InputError           input cannot be read at all (missing or unreadable file)
    ├── StoreError           the event store failed; the transaction was rolled back whole
    │   ├── SchemaError      the database schema is missing or not at the expected revision
    │   └── ConcurrencyError optimistic concurrency retries were exhausted
    └── RelayError           forwarding to Segment cannot go on (configuration, write key)

A *rejected message* is not an exception: it is a verdict (see
:class:`lifecycle.Verdict`). Exceptions are for problems with the program, the
policy or the environment, never with the data being judged.
"""

from __future__ import annotations

from collections.abc import Iterable


class LifecycleError(Exception):
    """Root of every exception lifecycle raises on purpose."""


class PolicyError(LifecycleError):
    """A policy is unfit for its work; the message names the problem.

    Its definition is inconsistent (raised when it is built), one of its own guards
    or effects raised, or a stored history holds an event it would not have
    accepted there (the history was written under another policy).
    """


class InputError(LifecycleError):
    """Input could not be read (a missing file, a directory, a permission error)."""


class StoreError(LifecycleError):
    """The event store failed; the transaction that was running was rolled back whole."""


class SchemaError(StoreError):
    """The database schema is missing or not at the revision this version expects."""


class ConcurrencyError(StoreError):
    """Another writer kept appending to the same accounts; retries were exhausted.

    ``accounts`` holds every account the failed submission touched, sorted, so that
    an application can tell which ones to submit again; ``account`` is the first of
    them. The message names the first few.

    With ``deadlock``, the submission ran in a transaction that holds other
    accounts (``Lifecycle.transaction()`` or the application's own) and that
    transaction and another writer's waited for each other: retrying inside it
    cannot help, so the whole transaction must be rolled back and run again
    (MariaDB has already rolled it back).
    """

    #: How many accounts the message names before it says how many more there are.
    NAMED = 5

    def __init__(
        self, accounts: str | Iterable[str], attempts: int, deadlock: bool = False
    ) -> None:
        self.accounts = (accounts,) if isinstance(accounts, str) else tuple(sorted(set(accounts)))
        self.account = self.accounts[0] if self.accounts else "?"
        self.attempts = attempts
        self.deadlock = deadlock
        who = _naming(self.accounts, self.NAMED)
        if deadlock:
            message = (
                f"{who}: this transaction and another writer's waited for each "
                "other (a deadlock); roll it back and run it again"
            )
        else:
            message = (
                f"{who}: another writer appended concurrently {attempts} times "
                "in a row; giving up (retry the submission later)"
            )
        super().__init__(message)

    def __reduce__(self) -> tuple[type[ConcurrencyError], tuple[tuple[str, ...], int, bool]]:
        # Rebuilt from its own arguments, so that it crosses process boundaries
        # (a multiprocessing pool cannot otherwise return it and waits forever).
        return (type(self), (self.accounts, self.attempts, self.deadlock))


def _naming(accounts: tuple[str, ...], named: int) -> str:
    """``account 'a'``, ``accounts 'a', 'b'`` or ``accounts 'a', ... and 3 more``."""
    if len(accounts) <= 1:
        return f"account {accounts[0] if accounts else '?'!r}"
    shown = ", ".join(repr(a) for a in accounts[:named])
    more = len(accounts) - named
    return f"accounts {shown}" + (f" and {more} more" if more > 0 else "")


class RelayError(LifecycleError):
    """Forwarding to Segment cannot go on: no client library, no write key, or a refused key.

    Delivery failures that may pass (timeouts, 429, 5xx) are retried, never raised.
    """


def first_line(exc: BaseException) -> str:
    """The first line of what an exception says (a driver's own error when it wraps one).

    Database drivers put several lines (SQL, hints) in their messages; one line is
    what a ``StoreError`` and the command line show.
    """
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def database_error(exc: BaseException) -> StoreError:
    """The :class:`StoreError` raised for a failed database operation (its first line).

    A lost connection says so, and that the transaction in flight is gone: the driver's
    own words for it ("the connection is closed", PyMySQL's bare ``(0, '')``) do not.
    """
    if not getattr(exc, "connection_invalidated", False):
        return StoreError(f"database error: {first_line(exc)}")
    return StoreError(
        f"database error: the connection to the database was lost{in_brackets(exc)}; the"
        " transaction in flight was rolled back"
    )


def in_brackets(exc: BaseException) -> str:
    """`` (what the driver said)``, or nothing when it said nothing (PyMySQL's ``(0, '')``)."""
    detail = first_line(exc)
    return f" ({detail})" if any(c.isalpha() for c in detail) else ""
