"""Several processes writing the same accounts at once never corrupt the store."""

from __future__ import annotations

import io
import multiprocessing
import random
import subprocess
import sys
import threading
import time
from collections import Counter
from itertools import islice
from pathlib import Path
from typing import Any

import orjson
import pytest

from lifecycle import ConcurrencyError, Gate, Verdict
from lifecycle.cli.report import JsonlReport
from lifecycle.cli.store import _in_transactions
from lifecycle.generate import generate
from lifecycle.reader import InputLine, read_lines
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


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["postgres", "mariadb"], indirect=True)
def test_ingests_of_the_same_accounts_at_once_take_turns(db_url: str, tmp_path: Path) -> None:
    """Two `lifecycle ingest` runs storing the same accounts at once both finish.

    Each holds the other's next versions until it commits, so one keeps losing its
    races; it runs that transaction again alone, and takes turns from then on. Every
    line gets one verdict, the accepted ones are stored once, and the store agrees
    with a replay.
    """
    Lifecycle(db_url, create_schema=True).close()
    lines = [orjson.dumps(m.message) for m in generate(accounts=200, events=50000, seed=3)]
    files = [tmp_path / "even.jsonl", tmp_path / "odd.jsonl"]
    for n, path in enumerate(files):
        path.write_bytes(b"\n".join(lines[n::2]) + b"\n")
    command = [sys.executable, "-m", "lifecycle", "ingest", "--db", db_url, "--batch-size", "2000"]
    runs = [
        subprocess.Popen(
            [*command, "--format", "jsonl", str(path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for path in files
    ]
    outputs = [run.communicate(timeout=300) for run in runs]
    assert [run.returncode for run in runs] == [1, 1], [err for _, err in outputs]

    verdicts = [orjson.loads(line) for out, _ in outputs for line in out.splitlines()]
    verdicts = [v for v in verdicts if "verdict" in v]
    assert len(verdicts) == len(lines)
    accepted = Counter(v["messageId"] for v in verdicts if v["verdict"] == "accepted")
    with Lifecycle(db_url) as store:
        assert Counter(e.message_id for e in store.events()) == accepted
        assert list(store.verify()) == []


@pytest.mark.parametrize("backend", ["postgres", "mariadb"], indirect=True)
def test_a_store_transaction_alone_waits_for_the_others_and_they_for_it(db_url: str) -> None:
    """`transaction(alone=True)` starts once no store transaction runs, and blocks new ones."""
    with Lifecycle(db_url, create_schema=True) as store:
        order: list[str] = []

        def other(alone: bool, name: str) -> threading.Thread:
            def run() -> None:
                with store.transaction(alone=alone):
                    order.append(name)

            thread = threading.Thread(target=run)
            thread.start()
            return thread

        with store.transaction():
            lone = other(True, "alone")
            time.sleep(0.5)
            assert order == [], "ran alone while another store transaction was open"
            order.append("shared")
        lone.join(30)
        with store.transaction(alone=True):
            shared = other(False, "after")
            time.sleep(0.5)
            assert order == ["shared", "alone"], "a store transaction ran beside a lone one"
        shared.join(30)
        assert order == ["shared", "alone", "after"]


@pytest.mark.parametrize("backend", ["postgres", "mariadb"], indirect=True)
def test_an_ingest_transaction_that_lost_runs_again_alone(
    db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The batches of a lost transaction are judged again, alone, and reported once."""
    Lifecycle(db_url, create_schema=True).close()
    messages = [m.message for m in generate(accounts=5, events=60, seed=2)]
    path = tmp_path / "history.jsonl"
    path.write_bytes(b"".join(orjson.dumps(m) + b"\n" for m in messages))
    lost: list[bool] = []
    with Lifecycle(db_url) as store:
        transaction = store.transaction

        def spy(*, alone: bool = False) -> Any:
            lost.append(alone)
            return transaction(alone=alone)

        def judge(batch: list[InputLine], conn: Any) -> Any:
            if len(lost) == 2 and batch[0].number == 11:  # the second transaction, second batch
                raise ConcurrencyError("acct", 8)
            return store.submit_lines(batch, connection=conn)

        store.transaction = spy  # type: ignore[method-assign]
        batches = iter(lambda: list(islice(lines, 5)), [])
        lines = read_lines([str(path)])
        report = JsonlReport(io.BytesIO())
        _in_transactions(store, batches, judge, 10, report)
        assert lost == [False, False, True, True, True, True, True, True]
        assert report.out.getvalue().count(b'"verdict"') == 60  # type: ignore[attr-defined]
        assert [e.message_id for e in store.events()] == [m["messageId"] for m in messages]
    assert "takes turns" in capsys.readouterr().err
