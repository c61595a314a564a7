"""What lifecycle knows about one account, as immutable values.

A state is the fold of the account's accepted events: applying the same events
in the same order always gives an equal state, which is what makes replay,
snapshots and audits exact. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import ItemsView, Iterator, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from math import isqrt
from typing import Any

import orjson

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
    # bool(): the cache takes 1 for True, so the first caller must not decide the type.
    return UserState(bool(signed_up), role, bool(signed_in))


def sorted_users(users: Mapping[str, UserState]) -> list[tuple[str, UserState]]:
    """``users`` as (name, state) pairs in name order."""
    plain = users if isinstance(users, dict) else dict(users.items())
    return [(name, plain[name]) for name in sorted(plain)]


#: From this many users on, an account's users live in a :class:`SharedUsers`.
LARGE_ACCOUNT = 512


def with_user(
    users: Mapping[str, UserState], user: str, new: UserState | None
) -> Mapping[str, UserState]:
    """``users`` with ``user`` set to ``new`` (removed when None), ``users`` unchanged.

    A small account's users are copied, which is the fastest way to change a few
    entries; a large one's go into a :class:`SharedUsers`, which copies a small
    part of them, so that a change does not cost as much as the account is big.
    """
    if len(users) < LARGE_ACCOUNT:
        changed = dict(users)
        if new is None:
            changed.pop(user, None)
        else:
            changed[user] = new
        return changed
    shared = users if isinstance(users, SharedUsers) else SharedUsers.of(users)
    return shared.with_user(user, new)


class SharedUsers(Mapping[str, UserState]):
    """An immutable mapping of users that shares all but one bucket with its predecessor.

    Copying every user on every sign-in made a fold quadratic in an account's users
    (80,000 users: 9 s for 80,000 sign-ups). The users are spread over about
    √n buckets by hash; a change copies one bucket and the tuple of buckets, so it
    costs about 2√n, and the buckets are spread again as the account grows. Equal to
    any mapping with the same items, a dict included.
    """

    __slots__ = ("_buckets", "_mask", "_size")

    def __init__(self, buckets: tuple[dict[str, UserState], ...], size: int) -> None:
        self._buckets = buckets
        self._mask = len(buckets) - 1
        self._size = size

    @classmethod
    def of(cls, users: Mapping[str, UserState]) -> SharedUsers:
        """The same users, spread over a power of two of at least √n buckets."""
        count = 1 << max(isqrt(len(users)), 1).bit_length()
        buckets: list[dict[str, UserState]] = [{} for _ in range(count)]
        for name, state in users.items():
            buckets[hash(name) & (count - 1)][name] = state
        return cls(tuple(buckets), len(users))

    def with_user(self, user: str, new: UserState | None) -> SharedUsers:
        """A mapping with ``user`` set to ``new`` (removed when None); this one is unchanged."""
        index = hash(user) & self._mask
        bucket = dict(self._buckets[index])
        had = user in bucket
        if new is None:
            bucket.pop(user, None)
        else:
            bucket[user] = new
        size = self._size + (new is not None) - had
        buckets = (*self._buckets[:index], bucket, *self._buckets[index + 1 :])
        changed = SharedUsers(buckets, size)
        return SharedUsers.of(changed) if size > 4 * len(buckets) ** 2 else changed

    def __getitem__(self, user: str) -> UserState:
        return self._buckets[hash(user) & self._mask][user]

    def get(self, user: str, default: Any = None) -> Any:
        return self._buckets[hash(user) & self._mask].get(user, default)

    def __contains__(self, user: object) -> bool:
        return user in self._buckets[hash(user) & self._mask]

    def __iter__(self) -> Iterator[str]:
        for bucket in self._buckets:
            yield from bucket

    def items(self) -> ItemsView[str, UserState]:
        # A view over one merged dict: the Mapping default looks every key up in Python.
        return {k: v for bucket in self._buckets for k, v in bucket.items()}.items()

    def __len__(self) -> int:
        return self._size

    def __repr__(self) -> str:
        return f"SharedUsers({dict(self)!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        # Rebuilt by hashing again: string hashes differ between interpreters.
        return SharedUsers.of, (dict(self),)


#: Encoded user states by ``id``, each kept alive by its entry so that the id stays its own.
_USER_JSON: dict[int, tuple[UserState, orjson.Fragment]] = {}


def _user_json(user: UserState) -> orjson.Fragment:
    """A user state's JSON, remembered (user states are few and shared: :func:`user_state`)."""
    if len(_USER_JSON) >= 4096:  # states built elsewhere, not shared: start again
        _USER_JSON.clear()
    fragment = orjson.Fragment(orjson.dumps(user.to_dict(), option=orjson.OPT_SORT_KEYS))
    _USER_JSON[id(user)] = (user, fragment)
    return fragment


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
        return self._shape({name: user.to_dict() for name, user in sorted_users(self.users)})

    def to_json(self) -> bytes:
        """:meth:`to_dict` as JSON, keys sorted; fast enough to write with every event.

        Each distinct user state is encoded once (there are a handful), so an account
        of 20,000 users costs a few milliseconds, not tens.
        """
        known = _USER_JSON  # by identity: user states are shared, and hashing one is slow
        users = {}
        for name, user in self.users.items():
            hit = known.get(id(user))
            users[name] = hit[1] if hit is not None and hit[0] is user else _user_json(user)
        return orjson.dumps(self._shape(users), option=orjson.OPT_SORT_KEYS)

    def _shape(self, users: dict[str, Any]) -> dict[str, Any]:
        return {
            "account": self.account,
            "status": self.status,
            "version": self.version,
            "users": users,
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
                name: user_state(u["signed_up"], u["role"], u["signed_in"])
                for name, u in data["users"].items()
            },
            trial=TrialState(**trial) if trial is not None else None,
            created_at=data.get("created_at"),
            updated_at=data.get("updated_at"),
        )
