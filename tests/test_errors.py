"""The exception hierarchy: one root, and every error survives a trip between processes."""

from __future__ import annotations

import pickle

import pytest

from lifecycle import errors
from lifecycle.errors import ConcurrencyError, LifecycleError

EXAMPLES = [
    errors.PolicyError("policy 'p': no initial state"),
    errors.InputError("--policy 'x': expected module:attribute"),
    errors.StoreError("cannot open the event store"),
    errors.SchemaError("the schema is at 0002, expected 0004"),
    ConcurrencyError(["acct_2", "acct_1"], 8),
    ConcurrencyError("acct_1", 1, deadlock=True),
    errors.RelayError("no Segment write key"),
]


def test_every_error_class_is_covered_and_rooted() -> None:
    """Each public error class is a LifecycleError and has an example below."""
    classes = {
        c
        for c in vars(errors).values()
        if isinstance(c, type) and issubclass(c, Exception) and c.__module__ == errors.__name__
    }
    assert classes - {LifecycleError} == {type(e) for e in EXAMPLES}
    assert all(issubclass(c, LifecycleError) for c in classes)


@pytest.mark.parametrize("error", EXAMPLES, ids=lambda e: type(e).__name__)
def test_errors_pickle_with_their_message_and_fields(error: LifecycleError) -> None:
    """A worker process can raise any of them to its parent (a pool pickles what it raises)."""
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error)
    assert str(copy) == str(error)
    assert vars(copy) == vars(error)


def test_concurrency_error_keeps_its_account_and_attempts() -> None:
    copy = pickle.loads(pickle.dumps(ConcurrencyError("acct_1", 8)))
    assert (copy.account, copy.attempts, copy.deadlock) == ("acct_1", 8, False)
    assert "acct_1" in str(copy) and "8 times" in str(copy)
    lost = pickle.loads(pickle.dumps(ConcurrencyError("acct_1", 1, deadlock=True)))
    assert lost.deadlock and "deadlock" in str(lost)


def test_concurrency_error_keeps_every_account_and_names_the_first_few() -> None:
    """A batch's error lists all its accounts for the caller and only a few in the message."""
    accounts = [f"acct_{n:02}" for n in range(12, 0, -1)] + ["acct_01"]
    error = pickle.loads(pickle.dumps(ConcurrencyError(accounts, 3)))
    assert error.accounts == tuple(f"acct_{n:02}" for n in range(1, 13))
    assert error.account == "acct_01"
    assert str(error).startswith(
        "accounts 'acct_01', 'acct_02', 'acct_03', 'acct_04', 'acct_05' and 7 more: "
    )
    two = ConcurrencyError(["b", "a"], 1, deadlock=True)
    assert str(two).startswith("accounts 'a', 'b': ") and two.account == "a"
    assert str(ConcurrencyError("a, b", 8)).startswith("account 'a, b': ")
    assert str(ConcurrencyError([], 8)).startswith("account '?': ")
