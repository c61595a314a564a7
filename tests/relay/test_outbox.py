"""The outbox is written with the append: accepted events only, in the same transaction."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from sqlalchemy import select

from lifecycle.service import Lifecycle
from lifecycle.store.outbox import PENDING, assigned_message_id
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
