"""Pruning delivered outbox rows: what goes, what stays, and what backfill makes of it."""

from __future__ import annotations

import io
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from lifecycle.cli.relay import _accounts_bar
from lifecycle.service import Lifecycle
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
