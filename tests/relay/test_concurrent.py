"""Concurrent writers and several relays on one server database: nothing skipped or doubled."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from lifecycle.relay import Relay
from lifecycle.service import Lifecycle
from lifecycle.store.schema import outbox
from tests.relay.fake_segment import FakeSegment
from tests.relay.helpers import Stored, assert_delivered, illegal, relay_for
from tests.store.helpers import account_history, interleave, onboarding

WRITERS = 3
RELAYS = 2
PRUNERS = 2
ACCOUNTS = 6


def write_all(url: str, messages: list[dict[str, Any]], batch: int) -> None:
    """Writer process: submit ``messages`` in small transactions."""
    store = Lifecycle(url)
    for start in range(0, len(messages), batch):
        store.submit_many(messages[start : start + batch])
        time.sleep(0.002)
    store.close()


def prune_until(url: str, stop: Any, pruned: Any) -> None:
    """Pruner process: delete every delivered row, again and again, until ``stop`` is set."""
    with Relay(url) as relay:
        while not stop.is_set():
            count = relay.prune(older_than=timedelta(0), batch_size=2)
            with pruned.get_lock():
                pruned.value += count


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["postgres", "mariadb"], indirect=True)
def test_concurrent_writers_and_relays(db_url: str, segment: FakeSegment) -> None:
    """Writers racing on the same accounts while two relays deliver: each event once, in order.

    Writers commit out of id order (a lower id may commit after a higher one),
    relays lock disjoint accounts, and two pruners delete delivered rows all the
    while; afterwards every accepted event arrived exactly once, no rejected one
    did, each account's events arrived in version order, every pruned row was
    counted once, and backfill finds nothing to queue again.
    """
    Lifecycle(db_url, create_schema=True).close()
    histories = [account_history(f"acct_{n}", users=3, sessions=3) for n in range(ACCOUNTS)]
    streams = []
    for seed in range(WRITERS):
        stream = interleave(histories, seed)
        for n in range(ACCOUNTS):
            stream[len(stream) * (n + 1) // (ACCOUNTS + 1) : 0] = illegal(f"acct_{n}")
        streams.append(stream)
    env = {**os.environ, "LIFECYCLE_SEGMENT_WRITE_KEY": segment.write_key}
    command = [
        sys.executable, "-m", "lifecycle", "relay", "--db", db_url, "--host", segment.url,
        "--follow", "--batch-size", "7", "--poll-interval", "0.01", "--backoff", "0.02",
    ]  # fmt: skip
    relays = [
        subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(RELAYS)
    ]
    context = multiprocessing.get_context("spawn")
    stop, pruned = context.Event(), context.Value("q", 0)
    pruners = [
        context.Process(target=prune_until, args=(db_url, stop, pruned)) for _ in range(PRUNERS)
    ]
    for pruner in pruners:
        pruner.start()
    try:
        with context.Pool(WRITERS) as pool:
            pool.starmap(write_all, [(db_url, s, 1 + n % 3) for n, s in enumerate(streams)])
        with relay_for(db_url, segment) as reader:
            deadline = time.monotonic() + 60
            while reader.status().pending and time.monotonic() < deadline:
                time.sleep(0.05)
            stop.set()
            for pruner in pruners:
                pruner.join(30)
            status = reader.status()
            assert reader.backfill() == 0, "pruned events were queued again"
    finally:
        stop.set()
        outputs = []
        for relay in relays:
            relay.send_signal(signal.SIGTERM)
            outputs.append(relay.communicate(timeout=30))
    assert [p.exitcode for p in pruners] == [0] * PRUNERS
    assert [r.returncode for r in relays] == [0] * RELAYS, [err for _, err in outputs]

    stored = Stored()
    with Lifecycle(db_url) as store:
        for event in store.events():
            assert event.message_id is not None
            stored.accepted[event.message_id] = (event.account, event.version)
    submitted = {m["messageId"] for s in streams for m in s}
    stored.rejected = submitted - set(stored.accepted)
    assert stored.rejected, "the streams should hold rejected messages"
    assert status.pending == 0 and status.delivered + status.pruned == len(stored.accepted)
    assert status.pruned == pruned.value > 0, "the pruners should have pruned, each row once"
    assert_delivered(segment, stored, duplicates=False)
    delivered = [int(out.split(",")[0].split()[1]) for out, _ in outputs]
    assert sum(delivered) == len(stored.accepted)


@pytest.mark.parametrize("backend", ["postgres", "mariadb"], indirect=True)
def test_a_late_commit_of_a_lower_id_is_not_skipped(db_url: str, segment: FakeSegment) -> None:
    """T1 draws the lower outbox id but commits after T2, after a relay ran: it is still sent.

    A relay that remembered "delivered up to id N" after sending T2's event would
    never look below N again, and lose T1's.
    """
    with Lifecycle(db_url, create_schema=True) as store, relay_for(db_url, segment) as relay:
        with store.engine.connect() as slow:
            trans = slow.begin()
            store.submit_many(onboarding("acct_slow"), connection=slow)
            store.submit_many(onboarding("acct_fast"))
            relay.run()
            assert {m["context"]["groupId"] for m in segment.first_arrivals()} == {"acct_fast"}
            trans.commit()
        relay.run()
        ids = {}
        with store.engine.connect() as conn:
            for account, row_id in conn.execute(select(outbox.c.account, outbox.c.id)):
                ids.setdefault(account, []).append(row_id)
    assert max(ids["acct_slow"]) < min(ids["acct_fast"]), "T1 should hold the lower ids"
    arrived = [m["context"]["groupId"] for m in segment.first_arrivals()]
    assert arrived == ["acct_fast"] * 4 + ["acct_slow"] * 4


def backfill_at_once(url: str, batch_size: int, barrier: Any, results: Any) -> None:
    """Backfill process: start with the others, report how many events it queued."""
    with Relay(url) as relay:
        barrier.wait(30)
        try:
            results.put(relay.backfill(batch_size=batch_size))
        except Exception as exc:  # reported to the test, which shows it
            results.put(f"{type(exc).__name__}: {exc}")


@pytest.mark.parametrize("backend", ["postgres", "mariadb"], indirect=True)
@pytest.mark.parametrize("batch_size", [5000, 7])
def test_backfills_at_once_queue_each_event_once_in_order(db_url: str, batch_size: int) -> None:
    """Three backfills started together: each event queued once, in version order per account.

    A backfill whose batch another one committed first looks again instead of failing.
    """
    Lifecycle(db_url, create_schema=True).close()
    with Lifecycle(db_url, outbox=False) as quiet:
        quiet.submit_many([m for n in range(40) for m in onboarding(f"acct_{n}")])
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(3), context.SimpleQueue()
    workers = [
        context.Process(target=backfill_at_once, args=(db_url, batch_size, barrier, results))
        for _ in range(3)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    counts = [results.get() for _ in workers]
    assert all(isinstance(c, int) for c in counts), counts
    assert sum(counts) == 160
    with Lifecycle(db_url) as store, store.engine.connect() as conn:
        rows = conn.execute(select(outbox.c.account, outbox.c.version).order_by(outbox.c.id))
        queued: dict[str, list[int]] = {}
        for account, version in rows:
            queued.setdefault(account, []).append(version)
    assert queued == {f"acct_{n}": [1, 2, 3, 4] for n in range(40)}
