"""Several processes writing the same accounts at once never corrupt the store."""

from __future__ import annotations

import multiprocessing
import random
import time
from collections import Counter
from typing import Any

import orjson
import pytest

from lifecycle import ConcurrencyError, Gate, Verdict
from lifecycle.service import Lifecycle
from tests.store.helpers import account_history, interleave

PROCESSES = 4
ACCOUNTS = 6


def submit_all(
    url: str, messages: list[dict[str, Any]], batch: int, grouped: int = 0
) -> list[tuple[str, str]]:
    """Worker: submit ``messages`` in small transactions; return (messageId, verdict) pairs.

    With ``grouped``, that many batches at a time share one ``Lifecycle.transaction()``
    (each in a savepoint, heads written at its end), as ``lifecycle ingest`` does. Two
    such transactions can deadlock on each other's accounts for good; the one that
    gives up (``ConcurrencyError``) is rolled back whole and run again, as a killed
    ingest is.
    """
    store = Lifecycle(url)
    results: list[tuple[str, str]] = []
    chunks = [messages[start : start + batch] for start in range(0, len(messages), batch)]
    for first in range(0, len(chunks), grouped or 1):
        group = chunks[first : first + (grouped or 1)]
        verdicts = _submit_group(store, group) if grouped else [store.submit_many(group[0])]
        for chunk, chunk_verdicts in zip(group, verdicts, strict=True):
            for message, verdict in zip(chunk, chunk_verdicts, strict=True):
                results.append((message["messageId"], verdict.verdict))
    store.close()
    return results


def _submit_group(store: Lifecycle, group: list[list[dict[str, Any]]]) -> list[list[Verdict]]:
    for attempt in range(20):
        try:
            with store.transaction() as connection:
                return [store.submit_many(chunk, connection=connection) for chunk in group]
        except ConcurrencyError:
            time.sleep(random.uniform(0, 0.05 * (attempt + 1)))
    raise AssertionError("a store transaction lost 20 times in a row")


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["postgres", "mariadb"], indirect=True)
@pytest.mark.parametrize("grouped", [0, 4], ids=["submissions", "store-transactions"])
def test_concurrent_processes_keep_the_store_consistent(db_url: str, grouped: int) -> None:
    """Overlapping, interleaved submissions from several processes: nothing lost or doubled.

    ``store-transactions``: half the processes group their batches in store
    transactions, whose head rows are written only when they end.
    """
    Lifecycle(db_url, create_schema=True).close()
    histories = [account_history(f"acct_{n}", users=3, sessions=4) for n in range(ACCOUNTS)]
    streams = [interleave(histories, seed) for seed in range(PROCESSES)]
    context = multiprocessing.get_context("spawn")
    with context.Pool(PROCESSES) as pool:
        outcomes = pool.starmap(
            submit_all,
            [(db_url, s, 1 + n % 3, grouped * (n % 2)) for n, s in enumerate(streams)],
        )

    store = Lifecycle(db_url)
    stored = list(store.events())
    stored_ids = [e.message_id for e in stored]
    accepted_ids = [
        mid for results in outcomes for mid, verdict in results if verdict == "accepted"
    ]
    all_ids = {m["messageId"] for h in histories for m in h}

    assert len(stored_ids) == len(set(stored_ids)), "an event was stored twice"
    assert Counter(accepted_ids) == Counter(stored_ids), "an accepted event was lost or doubled"
    assert set(stored_ids) <= all_ids
    by_account: dict[str, list[Any]] = {}
    for event in stored:
        by_account.setdefault(event.account, []).append(event)
    for account, events in by_account.items():
        assert [e.version for e in events] == list(range(1, len(events) + 1)), account
        assert sum(e.event == "Account Created" for e in events) <= 1, account
        gate = Gate()
        verdicts = [gate.submit(orjson.loads(e.payload)).verdict for e in events]
        assert verdicts == ["accepted"] * len(events), account
        assert store.state(account) == gate.state(account)
    store.close()
