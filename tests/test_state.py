"""Account states: a large account's users are shared between states, and still a mapping."""

from __future__ import annotations

import pickle
from typing import Any

import orjson
from hypothesis import example, given, settings
from hypothesis import strategies as st

from lifecycle import AccountState, Gate
from lifecycle.state import LARGE_ACCOUNT, SharedUsers, UserState, user_state, with_user
from lifecycle.testing import Message, legal_histories

STATES = st.sampled_from(
    [user_state(a, r, b) for a in (0, 1) for r in (None, "Admin") for b in (0, 1)]
)
#: Changes: set a user (drawn from few names, so that users are replaced and removed too).
CHANGES = st.lists(
    st.tuples(st.integers(0, 3 * LARGE_ACCOUNT), st.one_of(st.none(), STATES)), max_size=400
)


@settings(max_examples=40, deadline=None)
@given(start=st.integers(0, 2 * LARGE_ACCOUNT), changes=CHANGES)
def test_with_user_behaves_like_a_copied_dict(start: int, changes: list[Any]) -> None:
    """Every change gives what a copied dict gives, and leaves the mapping it changed alone."""
    model: dict[str, UserState] = {f"u{n}": user_state(True, None, False) for n in range(start)}
    users: Any = dict(model)
    for number, new in changes:
        before, snapshot = users, dict(users)
        users = with_user(users, f"u{number}", new)
        if new is None:
            model.pop(f"u{number}", None)
        else:
            model[f"u{number}"] = new
        assert before == snapshot  # unchanged
        assert users == model and model == users and len(users) == len(model)
        if len(before) >= LARGE_ACCOUNT:
            assert isinstance(users, SharedUsers)
        elif isinstance(before, dict):
            assert isinstance(users, dict)
    assert dict(users.items()) == model
    assert sorted(users) == sorted(model)
    assert all(users.get(name) is state and name in users for name, state in model.items())
    assert users.get("nobody") is None and "nobody" not in users


def test_an_account_of_exactly_large_account_users_is_shared() -> None:
    """From LARGE_ACCOUNT users on, a change gives a SharedUsers; below, a copied dict."""
    below = {f"u{n}": user_state(True, None, False) for n in range(LARGE_ACCOUNT - 1)}
    assert type(with_user(below, "u0", None)) is dict
    at = {**below, "last": user_state(True, None, False)}
    assert isinstance(with_user(at, "u0", user_state(True, None, True)), SharedUsers)


def test_user_states_are_shared_with_real_booleans() -> None:
    """A state asked for with 1/0 is the one with True/False (the cache cannot tell them apart)."""
    assert user_state(1, "Owner", 0) is user_state(True, "Owner", False)  # type: ignore[arg-type]
    assert user_state(True, "Owner", False).signed_up is True


def test_shared_users_pickle_and_compare_with_dicts() -> None:
    users = SharedUsers.of({f"u{n}": user_state(True, "Admin", n % 2 == 0) for n in range(3000)})
    copy = pickle.loads(pickle.dumps(users))
    assert isinstance(copy, SharedUsers) and copy == users == dict(users)
    assert users != {**dict(users), "u0": user_state(False, None, False)}
    assert repr(SharedUsers.of({"a": UserState()})).startswith("SharedUsers({'a': ")


def test_a_large_account_keeps_its_users_shared() -> None:
    """20,000 users signing up and in: the state holds them all, equal to a plain dict of
    them, in a SharedUsers (copying every user on each event took 9 s for 80,000 sign-ups)."""
    account = {"context": {"groupId": "big"}, "type": "track"}
    messages = [{**account, "event": "Account Created", "userId": "u0"}]
    for n in range(20_000):
        messages.append({**account, "event": "Signed Up", "userId": f"u{n}"})
        messages.append({**account, "event": "Signed In", "userId": f"u{n}"})
    gate = Gate()
    assert all(v.accepted for v in gate.submit_many(messages))
    state = gate.state("big")
    assert state is not None and isinstance(state.users, SharedUsers)
    assert state.users == {f"u{n}": user_state(True, None, True) for n in range(20_000)}


def _sent(event: str, user: str, at: str | None = None, **properties: str) -> Message:
    message: Message = {"type": "track", "event": event, "userId": user}
    message["context"] = {"groupId": "acct_1"}
    return {**message, "properties": properties, **({"timestamp": at} if at else {})}


#: Users met out of name order, a trial started and ended, first and latest timestamps apart.
EVERY_PART = [
    _sent("Account Created", "u2", "2024-01-01T08:00:00Z"),
    _sent("Signed Up", "u2"),
    _sent("Signed Up", "u1"),
    _sent("Signed In", "u1"),
    _sent("Trial Started", "u1", trial_plan_name="Pro", trial_start_date="2024-01-02"),
    _sent("Trial Ended", "u1", "2024-02-01T08:00:00Z"),
]


@settings(max_examples=15, deadline=None)
@given(history=legal_histories(max_events=15))
@example(history=EVERY_PART)
def test_a_state_survives_its_json_and_pickle_forms(history: list[Message]) -> None:
    """A state written as JSON (a snapshot) or pickled (sent by a parallel replay) comes back
    equal, field for field; the JSON is to_dict, its keys sorted and its users in name order."""
    gate = Gate()
    assert all(v.accepted for v in gate.submit_many(history))
    for state in gate.accounts():
        shape = state.to_dict()
        assert list(shape["users"]) == sorted(state.users)
        written = orjson.loads(state.to_json())
        assert written == shape and list(written) == sorted(shape)
        assert AccountState.from_dict(orjson.loads(state.to_json())) == state
        copy = pickle.loads(pickle.dumps(state))
        assert copy == state and copy.to_dict() == shape


def test_to_json_sorts_the_keys_of_users_too() -> None:
    """to_json promises to_dict as JSON with its keys sorted: a user's keys are keys too."""
    state = AccountState("acct_1", "created", 2, {"u1": user_state(True, None, False)})
    assert state.to_json() == orjson.dumps(state.to_dict(), option=orjson.OPT_SORT_KEYS)
