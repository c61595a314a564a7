"""The outbox is written with the append: accepted events only, in the same transaction."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import orjson
import pytest
from sqlalchemy import select

from lifecycle.service import Lifecycle
from lifecycle.store import outbox as queue
from lifecycle.store.codec import now
from lifecycle.store.outbox import PENDING, OutboxStatus, assigned_message_id
from lifecycle.store.schema import outbox
from tests.relay.fake_segment import FakeSegment
from tests.relay.helpers import relay_for, submit_history
from tests.store.helpers import msg, onboarding


def outbox_rows(store: Lifecycle) -> list[tuple[str, int, str, str]]:
    query = select(outbox.c.account, outbox.c.version, outbox.c.message_id, outbox.c.status)
    with store.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(query.order_by(outbox.c.id))]  # type: ignore[misc]


def test_one_pending_row_per_accepted_event(db_url: str) -> None:
    """Accepted events get a pending row each; rejected, duplicate and malformed input none."""
    with Lifecycle(db_url, create_schema=True) as store:
        stored = submit_history(store, accounts=2)
        store.submit_many(onboarding("acct_0"))  # duplicates of nothing: fresh ids, rejected
        store.submit(msg("Signed In", "acct_0-u0", "acct_0", mid=next(iter(stored.accepted))))
        store.submit_line(b"{not json")
        rows = outbox_rows(store)
        events = [(e.account, e.version, e.message_id) for e in store.events()]
    assert [(a, v, m) for a, v, m, _ in rows] == events
    assert {status for *_, status in rows} == {PENDING}
    assert not {m for _, _, m, _ in rows} & stored.rejected


def test_rolled_back_submission_leaves_no_row(db_url: str) -> None:
    """An application transaction that rolls back takes its outbox rows with it."""
    with Lifecycle(db_url, create_schema=True) as store:
        with store.engine.connect() as conn:
            trans = conn.begin()
            verdicts = store.submit_many(onboarding("acct_rb"), connection=conn)
            assert {v.verdict for v in verdicts} == {"accepted"}
            trans.rollback()
        assert outbox_rows(store) == []
        with store.engine.connect() as conn, conn.begin():
            store.submit_many(onboarding("acct_ok"), connection=conn)
        assert [r[0] for r in outbox_rows(store)] == ["acct_ok"] * 4


def test_event_without_message_id_gets_a_stable_one(db_url: str) -> None:
    """An accepted message without messageId is queued with one derived from the event."""
    with Lifecycle(db_url, create_schema=True) as store:
        store.submit(msg("Account Created", "u1", "acct_x", mid=""))
        ((account, version, message_id, _),) = outbox_rows(store)
        (event,) = store.events()
    assert (account, version) == ("acct_x", 1)
    assert message_id == assigned_message_id("acct_x", 1, event.payload)
    assert len(message_id) <= 100


def test_outbox_off_and_backfill(db_url: str, segment: FakeSegment) -> None:
    """`outbox=False` writes no rows; backfill queues the stored events in append order."""
    with Lifecycle(db_url, create_schema=True, outbox=False) as store:
        stored = submit_history(store, accounts=2)
        assert outbox_rows(store) == []
    with relay_for(db_url, segment) as relay:
        assert relay.status().pending == 0
        assert relay.backfill(batch_size=7) == len(stored.accepted)
        assert relay.backfill() == 0
        assert relay.status().pending == len(stored.accepted)
        relay.run()
    assert {m["messageId"] for m in segment.first_arrivals()} == set(stored.accepted)


def test_ingest_no_forward_stores_without_queueing(db_url: str, tmp_path: Path) -> None:
    """`ingest --no-forward` (history Segment already has) queues nothing; plain ingest does."""
    Lifecycle(db_url, create_schema=True).close()
    history = tmp_path / "history.jsonl"
    history.write_bytes(b"".join(orjson.dumps(m) + b"\n" for m in onboarding("acct_old")))
    live = tmp_path / "live.jsonl"
    live.write_bytes(orjson.dumps(msg("Signed Out", "u1", "acct_old")) + b"\n")
    for path, extra in ((history, ["--no-forward"]), (live, [])):
        run = subprocess.run(
            [sys.executable, "-m", "lifecycle", "ingest", str(path), "--db", db_url, *extra],
            capture_output=True, cwd=tmp_path,
        )  # fmt: skip
        assert run.returncode == 0, run.stderr
    with Lifecycle(db_url) as store:
        assert [e.version for e in store.events()] == [1, 2, 3, 4, 5]
        assert [(a, v) for a, v, *_ in outbox_rows(store)] == [("acct_old", 5)]


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_schema_upgrade_from_0002_keeps_events(db_url: str) -> None:
    """Upgrading a store from 0002 adds an empty outbox; its events can be backfilled."""
    from lifecycle.store import migrate
    from lifecycle.store.engine import create_engine

    engine = create_engine(db_url)
    migrate.upgrade(engine, "0002")
    migrate.upgrade(engine)
    with Lifecycle(engine) as store:
        store.submit_many(onboarding("acct_u"))
        assert len(outbox_rows(store)) == 4
    migrate.downgrade(engine, "0002")
    migrate.upgrade(engine)
    with Lifecycle(engine) as store:
        assert outbox_rows(store) == []
    engine.dispose()


def test_a_late_outcome_changes_only_rows_still_pending(db_url: str) -> None:
    """Two relays may record the same row (one of them late, after a timeout): a delivered
    row stays delivered, a parked one parked, and neither gains an attempt or an error
    from the other's record. A late 400 had parked an event Segment already took."""
    with Lifecycle(db_url, create_schema=True) as store:
        store.submit_many(onboarding("acct_s"))
        with store.engine.connect() as conn:
            ids = list(conn.execute(select(outbox.c.id).order_by(outbox.c.id)).scalars())
        delivered, parked, failed, pending = ids
        with store.engine.begin() as conn:
            queue.settle(conn, delivered=[delivered], parked=[(parked, "HTTP 400: no")], at=now())
            queue.settle(conn, failed=[failed], error="HTTP 503: busy", at=now())
        with store.engine.begin() as conn:  # the other relay's late answers
            queue.settle(conn, parked=[(delivered, "HTTP 400: late")], at=now())
            queue.settle(conn, delivered=[parked], at=now())
            queue.settle(conn, failed=[delivered, parked], error="HTTP 503: late", at=now())
        columns = (outbox.c.status, outbox.c.attempts, outbox.c.last_error)
        with store.engine.connect() as conn:
            rows = [tuple(r) for r in conn.execute(select(*columns).order_by(outbox.c.id))]
    assert rows == [
        ("delivered", 1, None),
        ("parked", 1, "HTTP 400: no"),
        ("pending", 1, "HTTP 503: busy"),
        ("pending", 0, None),
    ]
    assert pending == ids[-1]


def test_a_batch_takes_each_accounts_first_pending_rows_and_no_more(db_url: str) -> None:
    """A server relay's batch is the window's rows of the accounts whose first pending row
    (the head) it locked, taking heads in id order, at most ``size`` rows. Taking an
    account by a later row, or past ``size``, would let two relays share an account."""
    order = ["acct_a", "acct_b", "acct_c", "acct_a", "acct_d", "acct_a"]
    histories = {account: iter(onboarding(account)) for account in order}
    with Lifecycle(db_url, create_schema=True) as store:
        for account in order:
            store.submit(next(histories[account]))
        with store.engine.begin() as conn:
            slots = queue.window(conn, 10)
            two = queue.lock_heads(conn, slots, 2)
            three = queue.lock_heads(conn, slots, 3)
    assert [(s.account, s.version) for s in slots] == [
        ("acct_a", 1), ("acct_b", 1), ("acct_c", 1), ("acct_a", 2), ("acct_d", 1), ("acct_a", 3),
    ]  # fmt: skip
    assert [(s.account, s.version) for s in two] == [("acct_a", 1), ("acct_b", 1)]
    assert [(s.account, s.version) for s in three] == [("acct_a", 1), ("acct_b", 1), ("acct_c", 1)]


def test_status_as_json_names_every_count_and_never_a_negative_age() -> None:
    """`relay status --format json` shows the pruned count too; a pending row stored a
    moment "after" now (another host's clock, a little ahead) is 0 seconds old, not less."""
    at = datetime(2024, 5, 1, 12, 0, 0)
    ahead = OutboxStatus(3, 4, 5, at + timedelta(seconds=2), pruned=6)
    assert ahead.oldest_pending_age(at) == 0.0
    assert ahead.to_dict(at) == {
        "pending": 3,
        "delivered": 4,
        "parked": 5,
        "pruned": 6,
        "oldest_pending": "2024-05-01T12:00:02Z",
        "oldest_pending_age": 0.0,
    }
    behind = OutboxStatus(1, 0, 0, at - timedelta(seconds=1.5))
    assert behind.to_dict(at)["oldest_pending_age"] == 1.5
    assert OutboxStatus(0, 0, 0, None).to_dict(at)["oldest_pending_age"] is None
