"""The states a Lifecycle keeps or writes for later submissions must be states the
events give: a savepoint rolled back, or a head rebuilt while another writer appends."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from sqlalchemy import event, text

from lifecycle.service import Lifecycle
from tests.store.helpers import msg, onboarding


def test_a_savepoint_rolled_back_in_a_store_transaction_takes_its_state_with_it(
    db_url: str,
) -> None:
    """A submission in a savepoint of the block's connection that the application rolls
    back stores nothing: later submissions of the block are judged without it, and the
    heads written when the block ends agree with the events."""
    store = Lifecycle(db_url, create_schema=True)
    store.submit_many(onboarding("acct_1"))
    with store.transaction() as connection:
        savepoint = connection.begin_nested()
        assert store.submit(msg("Signed Out", "u1", "acct_1"), connection=connection).accepted
        savepoint.rollback()
        # Nothing of it is stored: u1 is still signed in, so signing out is legal.
        again = store.submit(msg("Signed Out", "u1", "acct_1"), connection=connection)
        assert (again.verdict, again.code) == ("accepted", None)
    assert [e.version for e in store.events("acct_1")] == [1, 2, 3, 4, 5]
    assert list(store.verify()) == []
    store.close()


@pytest.mark.parametrize("backend", ["postgres", "mariadb"], indirect=True)
def test_a_head_rebuilt_in_a_store_transaction_does_not_overwrite_a_newer_one(
    db_url: str,
) -> None:
    """A store transaction that rebuilds an account whose head row was deleted (as
    replay.md tells an operator to do with a damaged one) but appends nothing to it holds
    none of its versions: another writer may append meanwhile. The block's end must not
    write the rebuilt, older state over the newer head."""
    store = Lifecycle(db_url, create_schema=True)
    other = Lifecycle(db_url)
    store.submit_many(onboarding("acct_1"))
    with store.engine.begin() as connection:
        connection.execute(text("DELETE FROM account_heads WHERE account = 'acct_1'"))
    with store.transaction() as connection:
        again = store.submit(msg("Signed Up", "u1", "acct_1"), connection=connection)
        assert again.code == "user_already_signed_up"
        assert other.submit(msg("Signed Out", "u1", "acct_1")).accepted  # version 5
        # The block judges the account as stored now, not as it rebuilt it.
        assert store.submit(msg("Signed In", "u1", "acct_1"), connection=connection).accepted
    assert [e.version for e in store.events("acct_1")] == [1, 2, 3, 4, 5, 6]
    assert list(store.verify()) == []
    # u1 signed in again at version 6: signing out is legal, for any writer.
    assert other.submit(msg("Signed Out", "u1", "acct_1")).accepted
    store.close()
    other.close()


@pytest.mark.parametrize("backend", ["postgres", "mariadb"], indirect=True)
def test_a_head_rebuilt_by_a_live_submission_does_not_overwrite_a_newer_one(
    db_url: str,
) -> None:
    """Two writers find an account's head row missing and rebuild it from its events. The
    one that appends nothing (its message is rejected) but writes its head last must not
    put the older state over the head of the one that appended: the account then has a
    head behind its events, and every later submission to it loses its race 8 times."""
    store = Lifecycle(db_url, create_schema=True)
    other = Lifecycle(db_url)
    store.submit_many(onboarding("acct_1"))
    with store.engine.begin() as connection:
        connection.execute(text("DELETE FROM account_heads WHERE account = 'acct_1'"))
    raced: list[bool] = []
    rebuilt: list[bool] = []

    def racer() -> None:
        raced.append(other.submit(msg("Signed Out", "u1", "acct_1")).accepted)  # version 5

    def between(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        # The careful look-up of stored messageIds: after the rebuild (which read the
        # account's snapshots), before the head write.
        if "snapshots" in statement:
            rebuilt.append(True)
        if rebuilt and not raced and "message_id" in statement and " IN " in statement:
            thread = threading.Thread(target=racer)
            thread.start()
            thread.join(30)

    event.listen(store.engine, "before_cursor_execute", between)
    again = store.submit(msg("Signed Up", "u1", "acct_1"))
    event.remove(store.engine, "before_cursor_execute", between)
    assert again.code == "user_already_signed_up"
    assert raced == [True]
    assert list(store.verify()) == []
    assert other.submit(msg("Signed In", "u1", "acct_1")).accepted
    store.close()
    other.close()
