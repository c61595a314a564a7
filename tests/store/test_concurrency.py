"""Several processes writing the same accounts at once never corrupt the store."""

from __future__ import annotations

import multiprocessing
from collections import Counter
from typing import Any

import orjson
import pytest

from lifecycle import Gate
from lifecycle.service import Lifecycle
from tests.store.helpers import account_history, interleave

PROCESSES = 4
ACCOUNTS = 6


def submit_all(url: str, messages: list[dict[str, Any]], batch: int) -> list[tuple[str, str]]:
    """Worker: submit ``messages`` in small transactions; return (messageId, verdict) pairs."""
    store = Lifecycle(url)
    results: list[tuple[str, str]] = []
    for start in range(0, len(messages), batch):
        chunk = messages[start : start + batch]
        for message, verdict in zip(chunk, store.submit_many(chunk), strict=True):
            results.append((message["messageId"], verdict.verdict))
    store.close()
    return results


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["postgres", "mariadb"], indirect=True)
def test_concurrent_processes_keep_the_store_consistent(db_url: str) -> None:
    """Overlapping, interleaved submissions from several processes: nothing lost or doubled."""
    Lifecycle(db_url, create_schema=True).close()
    histories = [account_history(f"acct_{n}", users=3, sessions=4) for n in range(ACCOUNTS)]
    streams = [interleave(histories, seed) for seed in range(PROCESSES)]
    context = multiprocessing.get_context("spawn")
    with context.Pool(PROCESSES) as pool:
        outcomes = pool.starmap(
            submit_all, [(db_url, stream, 1 + n % 3) for n, stream in enumerate(streams)]
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
