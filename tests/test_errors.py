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
    ConcurrencyError("acct_1, acct_2", 8),
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
