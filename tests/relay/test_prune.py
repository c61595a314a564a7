"""Pruning delivered outbox rows: what goes, what stays, and what backfill makes of it."""

from __future__ import annotations

import io
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from lifecycle import StoreError
from lifecycle import relay as relay_module
from lifecycle.cli.relay import _accounts_bar
from lifecycle.service import Lifecycle
from lifecycle.store import outbox
from lifecycle.store.codec import now
from lifecycle.store.engine import create_engine, for_writing
from lifecycle.store.schema import outbox_pruned
from tests.relay.fake_segment import FakeSegment
from tests.relay.helpers import relay_for
from tests.relay.test_cli import run
from tests.relay.test_outbox import outbox_rows
from tests.store.helpers import msg, onboarding

NOW = timedelta(0)


def test_prune_deletes_each_accounts_delivered_run(db_url: str, segment: FakeSegment) -> None:
    """Rows go from each account's first up to its first undelivered one; nothing is resent."""
    with Lifecycle(db_url, create_schema=True) as store:
        a, b = onboarding("acct_a"), onboarding("acct_b")
        store.submit_many(a + b)
        segment.refuse(b[1]["messageId"])
        with relay_for(db_url, segment) as relay:
            relay.run()
            assert relay.prune(older_than=timedelta(hours=1)) == 0, "delivered just now: kept"
            assert relay.prune(older_than=NOW) == 5  # acct_a's 4, acct_b's first
            assert [(acct, v, s) for acct, v, _, s in outbox_rows(store)] == [
                ("acct_b", 2, "parked"),
                ("acct_b", 3, "delivered"),
                ("acct_b", 4, "delivered"),
            ]
            status = relay.status()
            assert (status.pending, status.delivered, status.parked, status.pruned) == (0, 2, 1, 5)
            # The record names the last version deleted, not the parked one that stopped the run.
            assert _pruned_record(db_url) == {"acct_a": (4, 4), "acct_b": (1, 1)}
            assert relay.backfill() == 0, "pruned events are settled, not unqueued"
            assert relay.prune(older_than=NOW) == 0, "a parked row holds the rows after it"

            later = msg("Signed Out", "u1", "acct_a")
            store.submit(later)
            relay.run()
            assert relay.prune(older_than=NOW) == 1
            assert relay.status().pruned == 6
    ids = segment.message_ids()
    assert len(ids) == len(set(ids)), "pruning made the relay send an event again"
    assert set(ids) == {m["messageId"] for m in [*a, *b, later] if m is not b[1]}


def test_backfill_queues_what_came_after_the_pruned_version(
    db_url: str, segment: FakeSegment
) -> None:
    """Events stored without an outbox row after a prune are still backfilled, in order."""
    with Lifecycle(db_url, create_schema=True) as store:
        store.submit_many(onboarding("acct_c"))
    with relay_for(db_url, segment) as relay:
        relay.run()
        assert relay.prune(older_than=NOW) == 4
        with Lifecycle(db_url, outbox=False) as quiet:
            later = [msg("Signed Out", "u1", "acct_c")] + onboarding("acct_d")
            assert {v.verdict for v in quiet.submit_many(later)} == {"accepted"}
        assert relay.backfill() == 5
        relay.run()
        assert relay.status().delivered == 5
    arrived = [m["messageId"] for m in segment.first_arrivals()]
    assert arrived[4:] == [m["messageId"] for m in later]


def _pruned_record(url: str) -> dict[str, tuple[int, int]]:
    """``outbox_pruned`` as ``{account: (version, events)}``."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(select(outbox_pruned.c.account, outbox_pruned.c.version,
                                       outbox_pruned.c.events))  # fmt: skip
            return {account: (version, events) for account, version, events in rows}
    finally:
        engine.dispose()


def test_a_prune_that_looked_earlier_never_lowers_the_record(
    db_url: str, segment: FakeSegment
) -> None:
    """Runs found before another prune ran still add up, and never lower its version.

    A lowered version would make backfill queue deleted, delivered events again.
    """
    with Lifecycle(db_url, create_schema=True) as store, relay_for(db_url, segment) as relay:
        store.submit_many(onboarding("acct_f"))
        relay.run()
        with relay.engine.connect() as conn:
            early = outbox.prunable(conn, now())
        store.submit_many([msg("Signed Out", "u1", "acct_f"), msg("Signed In", "u1", "acct_f")])
        relay.run()
        with relay.engine.connect() as conn:
            late = outbox.prunable(conn, now())
        assert (early, late) == ([("acct_f", 4)], [("acct_f", 6)])
        writer = for_writing(relay.engine)
        for runs in (late, early):  # the prune that looked first records last
            with writer.begin() as conn:
                outbox.prune(conn, runs, now(), now())
        assert _pruned_record(db_url) == {"acct_f": (6, 6)}
        assert relay.status().pruned == 6
        assert relay.backfill() == 0, "deleted, delivered events queued again"


def test_prunes_at_once_add_up(db_url: str, segment: FakeSegment) -> None:
    """Two prunes of the same accounts at the same moment: one deletes, both record, no error.

    The second waits for the first's rows (or, on SQLite, for the write lock), then
    finds them gone; it must neither insert the account's record a second time nor
    overwrite the count with its own.
    """
    with Lifecycle(db_url, create_schema=True) as store, relay_for(db_url, segment) as relay:
        store.submit_many([m for n in range(3) for m in onboarding(f"acct_{n}")])
        relay.run()
        with relay.engine.connect() as conn:
            runs = outbox.prunable(conn, now())
        writer = for_writing(relay.engine)
        deleted: list[int] = []

        def second() -> None:
            with writer.begin() as conn:
                deleted.append(outbox.prune(conn, runs, now(), now()))

        with writer.begin() as conn:
            deleted.append(outbox.prune(conn, runs, now(), now()))
            other = threading.Thread(target=second)
            other.start()
            time.sleep(0.5)  # the second prune is waiting for this one
            assert other.is_alive()
        other.join(30)
        assert not other.is_alive()
    assert deleted == [12, 0]
    assert _pruned_record(db_url) == {f"acct_{n}": (4, 4) for n in range(3)}


def test_prune_reports_progress_per_batch_of_accounts(db_url: str, segment: FakeSegment) -> None:
    """Each batch of accounts is its own transaction, reported as (done, total)."""
    with Lifecycle(db_url, create_schema=True) as store:
        store.submit_many([m for n in range(3) for m in onboarding(f"acct_{n}")])
    calls: list[tuple[int, int]] = []
    with relay_for(db_url, segment) as relay:
        relay.run()
        pruned = relay.prune(older_than=NOW, batch_size=2, progress=lambda *c: calls.append(c))
    assert (pruned, calls) == (12, [(2, 3), (3, 3)])


def test_prune_command(tmp_path: Path, segment: FakeSegment) -> None:
    """`relay prune` reports what it deleted, `relay status` counts it; a bad age exits 2."""
    url = f"sqlite:///{tmp_path / 'prune.db'}"
    with Lifecycle(url) as store:
        store.submit_many(onboarding("acct_e"))
    with relay_for(url, segment) as relay:
        relay.run()
    kept = run("relay", "prune", "--db", url)
    assert (kept.returncode, kept.stdout) == (0, "pruned 0 delivered events\n"), kept.stderr
    done = run("relay", "prune", "--db", url, "--older-than", "0s")
    assert (done.returncode, done.stdout) == (0, "pruned 4 delivered events\n"), done.stderr
    status = run("relay", "status", "--db", url)
    assert "delivered  0" in status.stdout.splitlines()
    assert "pruned     4" in status.stdout.splitlines()
    for bad in ("soon", "-1d", "nand"):
        refused = run("relay", "prune", "--db", url, "--older-than", bad)
        assert refused.returncode == 2 and "--older-than" in refused.stderr, bad


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_prune_progress_bar_only_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a terminal the bar counts accounts toward the total; elsewhere there is none."""
    with _accounts_bar() as advance:
        assert advance is None
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    with _accounts_bar() as advance:
        assert advance is not None
        advance(2, 3)
        advance(3, 3)
    assert "3/3" in terminal.getvalue()


class _Deadlock(Exception):
    """What PyMySQL raises when InnoDB ends a transaction to break a deadlock."""


def _deadlocks_then(real: Any, times: int) -> Any:
    """``real``, after raising a MariaDB deadlock error ``times`` times."""
    calls = {"n": 0}

    def call(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] <= times:
            raise OperationalError("DELETE ...", {}, _Deadlock(1213, "Deadlock found"))
        return real(*args, **kwargs)

    return call


def test_a_transaction_a_deadlock_ended_runs_again(
    db_url: str, segment: FakeSegment, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Relays, prunes and backfills share rows: a deadlock (the database ends one side, which
    was rolled back whole) costs a retry, not the process; past the limit the error stands."""
    monkeypatch.setattr(relay_module.time, "sleep", lambda seconds: None)
    with Lifecycle(db_url, create_schema=True) as store:
        store.submit_many(onboarding("acct_a"))
        with relay_for(db_url, segment) as relay:
            monkeypatch.setattr(outbox, "first_pending", _deadlocks_then(outbox.first_pending, 2))
            monkeypatch.setattr(outbox, "window", _deadlocks_then(outbox.window, 2))
            assert relay.run().delivered == 4
            prune, limit = outbox.prune, relay_module.TRANSIENT_ATTEMPTS
            monkeypatch.setattr(outbox, "prune", _deadlocks_then(prune, limit))
            with pytest.raises(StoreError, match="Deadlock found"):
                relay.prune(older_than=NOW)
            monkeypatch.setattr(outbox, "prune", _deadlocks_then(prune, limit - 1))
            assert relay.prune(older_than=NOW) == 4
            monkeypatch.setattr(outbox, "unqueued", _deadlocks_then(outbox.unqueued, 2))
            assert relay.backfill() == 0


def test_prune_older_than_more_than_the_calendar_holds_keeps_everything(
    tmp_path: Path, segment: FakeSegment
) -> None:
    """An age reaching back before year 1 (`--older-than 1000000d`, about 2,700 years: "keep
    everything") prunes nothing. `now() - older_than` overflowed: a traceback and exit 70
    ("internal error, a bug") from the command, OverflowError from `Relay.prune`."""
    url = f"sqlite:///{tmp_path / 'prune.db'}"
    with Lifecycle(url) as store:
        store.submit_many(onboarding("acct_e"))
    with relay_for(url, segment) as relay:
        relay.run()
        assert relay.prune(older_than=timedelta(days=1_000_000)) == 0
        assert relay.prune(older_than=timedelta.max) == 0
    kept = run("relay", "prune", "--db", url, "--older-than", "1000000d")
    assert (kept.returncode, kept.stdout) == (0, "pruned 0 delivered events\n"), kept.stderr
    assert "Traceback" not in kept.stderr
