"""Account states: a large account's users are shared between states, and still a mapping."""

from __future__ import annotations

import pickle
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from lifecycle import Gate
from lifecycle.state import LARGE_ACCOUNT, SharedUsers, UserState, user_state, with_user

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
