"""Mapping between domain values and stored rows, in one place.

Everything that decides how an event, a state or an instant looks in the
database is here; the repository only moves rows.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import orjson

from lifecycle.envelope import Event
from lifecycle.errors import StoreError
from lifecycle.state import AccountState


def utc_naive(moment: datetime) -> datetime:
    """An aware datetime as naive UTC, the form every backend stores the same way."""
    return moment.astimezone(UTC).replace(tzinfo=None)


def iso_utc(stored: datetime) -> str:
    """A stored (naive UTC) instant as ISO-8601 with ``Z``, as every output shows one."""
    return stored.isoformat() + "Z"


def now() -> datetime:
    """The current instant as naive UTC (the store's ``recorded_at``)."""
    return datetime.now(UTC).replace(tzinfo=None)


def occurred_at(event: Event) -> datetime | None:
    """The event's own ``timestamp`` as naive UTC, or None when it carried none."""
    parsed = event.occurred
    return utc_naive(parsed) if parsed is not None else None


def payload_text(message: Mapping[str, Any], raw: bytes | None) -> str:
    """The JSON text stored for a message: the line as sent when there is one, else JSON."""
    if raw is not None:
        return raw.rstrip(b"\r\n").decode("utf-8")
    return orjson.dumps(message).decode("utf-8")


def event_row(event: Event, version: int, payload: str, recorded_at: datetime) -> tuple[Any, ...]:
    """The ``events`` row of an accepted event, in ``repository.EVENT_COLUMNS`` order."""
    return (
        event.account,
        version,
        event.name,
        event.message_id,
        event.user,
        occurred_at(event),
        recorded_at,
        payload,
    )


def state_json(state: AccountState) -> str:
    """An account state as stored in ``account_heads.state``."""
    return state.to_json().decode("utf-8")


def state_from_json(text: str | bytes, where: str = "a stored state") -> AccountState:
    """The inverse of :func:`state_json`.

    A row edited or damaged outside lifecycle raises :class:`StoreError` naming
    ``where`` (say, "the head of account 'acct_1'"), not whatever decoding it hit.
    """
    try:
        return AccountState.from_dict(orjson.loads(text))
    except Exception as exc:  # any failure to read it back means the row is not a state
        raise StoreError(
            f"{where} is not a readable account state ({type(exc).__name__}: {exc}); "
            "`lifecycle replay --verify` lists such rows, and lifecycle rebuilds a head "
            "or snapshot row that is deleted"
        ) from exc


def head_row(state: AccountState, recorded_at: datetime) -> tuple[Any, ...]:
    """The ``account_heads`` row of an account's latest state (``repository.HEAD_COLUMNS``)."""
    return (state.account, state.version, state.status, state_json(state), recorded_at)
