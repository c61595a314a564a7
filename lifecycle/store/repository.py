"""Rows in and out of the event store, on a connection the caller controls.

Functions here neither begin nor commit transactions: the service decides
what one transaction holds. Lists of keys are queried in chunks so that no
statement exceeds a backend's parameter limit.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import bindparam, func, select, update
from sqlalchemy.engine import Connection

from lifecycle.decide import Rejection, decide
from lifecycle.envelope import EnvelopeError, parse_event
from lifecycle.errors import StoreError
from lifecycle.policy import Policy
from lifecycle.state import AccountState
from lifecycle.store.codec import state_from_json
from lifecycle.store.schema import account_heads, events, quarantine

CHUNK = 500


def chunks(keys: Sequence[str], size: int = CHUNK) -> Iterator[Sequence[str]]:
    """``keys`` in slices of at most ``size``."""
    for start in range(0, len(keys), size):
        yield keys[start : start + size]


def load_heads(connection: Connection, accounts: Sequence[str]) -> dict[str, AccountState]:
    """The stored head state of each account that has one."""
    found: dict[str, AccountState] = {}
    for part in chunks(accounts):
        rows = connection.execute(
            select(account_heads.c.account, account_heads.c.state).where(
                account_heads.c.account.in_(part)
            )
        )
        for account, state in rows:
            found[account] = state_from_json(state)
    return found


def stored_versions(connection: Connection, accounts: Sequence[str]) -> dict[str, int]:
    """The latest stored version of each account that has events."""
    found: dict[str, int] = {}
    for part in chunks(accounts):
        rows = connection.execute(
            select(events.c.account, func.max(events.c.version))
            .where(events.c.account.in_(part))
            .group_by(events.c.account)
        )
        found.update({account: version for account, version in rows})
    return found


def accepted_ids(connection: Connection, message_ids: Sequence[str]) -> set[str]:
    """Which of ``message_ids`` belong to stored (accepted) events."""
    found: set[str] = set()
    for part in chunks(message_ids):
        rows = connection.execute(select(events.c.message_id).where(events.c.message_id.in_(part)))
        found.update(mid for (mid,) in rows)
    return found


def known_digests(connection: Connection, digests: Sequence[str]) -> set[str]:
    """Which quarantine digests are already stored (a re-run of the same input)."""
    found: set[str] = set()
    for part in chunks(digests):
        rows = connection.execute(select(quarantine.c.digest).where(quarantine.c.digest.in_(part)))
        found.update(digest for (digest,) in rows)
    return found


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """One row of ``events``, with its payload as stored."""

    position: int
    account: str
    version: int
    event: str
    message_id: str | None
    user_id: str
    occurred_at: datetime | None
    recorded_at: datetime
    payload: str


def stored_events(
    connection: Connection, account: str | None = None, after_version: int = 0
) -> Iterator[StoredEvent]:
    """Stored events in append order (one account's in version order), streamed."""
    query = select(*events.c)
    if account is not None:
        query = query.where(events.c.account == account, events.c.version > after_version)
        query = query.order_by(events.c.version)
    else:
        query = query.order_by(events.c.position)
    result = connection.execute(query, execution_options={"yield_per": 2000})
    for row in result:
        yield StoredEvent(*row)


def fold(policy: Policy, state: AccountState, stored: Iterable[StoredEvent]) -> AccountState:
    """Apply stored events to ``state``; a stored event the policy refuses is an error."""
    for row in stored:
        message = orjson.loads(row.payload)
        parsed = parse_event(message, policy.catalog)
        if parsed is None or isinstance(parsed, EnvelopeError):
            raise StoreError(f"stored event {row.position} is not a valid lifecycle event")
        outcome = decide(policy, state, parsed)
        if isinstance(outcome, Rejection):
            raise StoreError(
                f"stored event {row.position} ({row.account} v{row.version}) is refused "
                f"under policy {policy.name!r}: {outcome.reason}"
            )
        state = outcome
    return state


def replay_account(connection: Connection, policy: Policy, account: str) -> AccountState | None:
    """An account's state rebuilt from its events alone, or None if it has none."""
    state = fold(policy, AccountState(account, policy.initial), stored_events(connection, account))
    return state if state.version else None


def update_heads(connection: Connection, rows: list[dict[str, Any]]) -> None:
    """Overwrite existing head rows (keyed by account)."""
    if rows:
        connection.execute(
            update(account_heads)
            .where(account_heads.c.account == bindparam("b_account"))
            .values(
                version=bindparam("version"),
                status=bindparam("status"),
                state=bindparam("state"),
                updated_at=bindparam("updated_at"),
            ),
            [{**row, "b_account": row["account"]} for row in rows],
        )
