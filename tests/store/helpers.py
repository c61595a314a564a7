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


def account_history(account: str, users: int = 3, sessions: int = 3) -> list[dict[str, Any]]:
    """A longer legal history of one account: users join, sign in and out, a trial runs."""
    owner = f"{account}-u0"
    history = [
        msg("Account Created", owner, account, account_name=account.title()),
        msg("Signed Up", owner, account, email=f"{owner}@example.com"),
        msg("Account Added User", owner, account, role="Owner"),
        msg("Trial Started", owner, account, trial_plan_name="Pro", trial_start_date="2024-01-01"),
    ]
    for n in range(1, users):
        user = f"{account}-u{n}"
        history.append(msg("Invite Sent", owner, account, invitee_email=f"{user}@example.com"))
        history.append(msg("Signed Up", user, account, type="invited"))
    for _ in range(sessions):
        for n in range(users):
            history.append(msg("Signed In", f"{account}-u{n}", account))
            history.append(msg("Signed Out", f"{account}-u{n}", account))
    history.append(msg("Trial Ended", owner, account, trial_plan_name="Pro"))
    history.append(msg("Account Removed User", f"{account}-u{users - 1}", account))
    return history


def interleave(histories: list[list[dict[str, Any]]], seed: int) -> list[dict[str, Any]]:
    """Merge per-account histories into one stream, keeping each account's order."""
    import random

    rng = random.Random(seed)
    queues = [list(h) for h in histories]
    merged: list[dict[str, Any]] = []
    while any(queues):
        queue = rng.choice([q for q in queues if q])
        merged.append(queue.pop(0))
    return merged
