"""What lifecycle knows about one account, as immutable values.

A state is the fold of the account's accepted events: applying the same events
in the same order always gives an equal state, which is what makes replay,
snapshots and audits exact. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from lifecycle._frozen import fast_init

#: Status of an account that was never created (the machine's initial state).
NONE = "none"


@fast_init
@dataclass(frozen=True, slots=True)
class UserState:
    """One user within one account. A user is *known* once signed up or added."""

    signed_up: bool = False
    role: str | None = None
    signed_in: bool = False

    @property
    def known(self) -> bool:
        """True when the user signed up to, or was added to, the account."""
        return self.signed_up or self.role is not None

    def to_dict(self) -> dict[str, Any]:
        """The ``accounts show`` shape of a user."""
        return {"signed_up": self.signed_up, "role": self.role, "signed_in": self.signed_in}

    def __reduce__(self) -> tuple[Any, ...]:
        # Unpickled as the shared instance; the parallel replay sends states between processes.
        return user_state, (self.signed_up, self.role, self.signed_in)


#: A user the account has never heard of.
UNKNOWN_USER = UserState()


@lru_cache(maxsize=1024)
def user_state(signed_up: bool, role: str | None, signed_in: bool) -> UserState:
    """The :class:`UserState` with these values, shared rather than built anew.

    User states are immutable and few distinct ones exist (two flags and a
    handful of roles), so effects take them from here: most judged messages sign
    a user in or out, and each would otherwise build a new one.
    """
    return UserState(signed_up, role, signed_in)


@dataclass(frozen=True, slots=True)
class TrialState:
    """The account's one trial, as announced by ``Trial Started`` and closed by ``Trial Ended``.

    Dates are kept as sent (ISO-8601 strings); ``started_at``/``ended_at`` are the
    ``timestamp`` of the two events, when they carried one.
    """

    plan_name: str | None = None
    start_date: str | None = None
    end_date: str | None = None
    started_at: str | None = None
    ended: bool = False
    ended_at: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The ``accounts show`` shape of a trial."""
        return {
            "plan_name": self.plan_name,
            "start_date": self.start_date,
            "end_date": self.end_date,
            "started_at": self.started_at,
            "ended": self.ended,
            "ended_at": self.ended_at,
        }


@fast_init
@dataclass(frozen=True, slots=True)
class AccountState:
    """One account: its status in the account machine, its users and its trial.

    ``version`` counts accepted events (the account's stream length);
    ``created_at``/``updated_at`` are the ``timestamp`` of the first and the
    latest accepted event, when they carried one.
    """

    account: str
    status: str = NONE
    version: int = 0
    users: Mapping[str, UserState] = field(default_factory=dict)
    trial: TrialState | None = None
    created_at: str | None = None
    updated_at: str | None = None

    def user(self, user: str) -> UserState:
        """The state of ``user`` in this account (an unknown user if never seen)."""
        return self.users.get(user, UNKNOWN_USER)

    def to_dict(self) -> dict[str, Any]:
        """The ``accounts show --format json`` shape (keys in a stable order)."""
        return {
            "account": self.account,
            "status": self.status,
            "version": self.version,
            "users": {name: self.users[name].to_dict() for name in sorted(self.users)},
            "trial": self.trial.to_dict() if self.trial is not None else None,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled as its fields, rebuilt by the fast constructor: a parallel replay
        # sends every account's state from its worker process.
        return AccountState, (
            self.account, self.status, self.version, self.users, self.trial, self.created_at,
            self.updated_at,
        )  # fmt: skip

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AccountState:
        """Rebuild a state from :meth:`to_dict` output (used for snapshots)."""
        trial = data.get("trial")
        return cls(
            account=data["account"],
            status=data["status"],
            version=data["version"],
            users={
                name: UserState(u["signed_up"], u["role"], u["signed_in"])
                for name, u in data["users"].items()
            },
            trial=TrialState(**trial) if trial is not None else None,
            created_at=data.get("created_at"),
            updated_at=data.get("updated_at"),
        )
