"""Small builders shared by the store tests."""

from __future__ import annotations

from itertools import count
from typing import Any

from sqlalchemy import delete

from lifecycle.service import Lifecycle
from lifecycle.store.schema import metadata

_ids = count(1)


def msg(
    event: str, user: str, account: str, mid: str | None = None, **properties: Any
) -> dict[str, Any]:
    """A track message; a fresh messageId unless one is given (``mid=""`` for none)."""
    message: dict[str, Any] = {
        "type": "track",
        "event": event,
        "userId": user,
        "context": {"groupId": account},
        "properties": properties,
    }
    if mid is None:
        mid = f"m-{next(_ids)}"
    if mid:
        message["messageId"] = mid
    return message


def wipe(store: Lifecycle) -> None:
    """Delete every row of every table (between hypothesis examples on one database)."""
    with store.engine.begin() as connection:
        for table in reversed(metadata.sorted_tables):
            connection.execute(delete(table))


def onboarding(account: str, user: str = "u1") -> list[dict[str, Any]]:
    """A short legal history: create, sign up, sign in, start a trial."""
    return [
        msg("Account Created", user, account),
        msg("Signed Up", user, account),
        msg("Signed In", user, account),
        msg("Trial Started", user, account, trial_plan_name="Pro", trial_start_date="2024-01-01"),
    ]
