"""The relay against a Segment-compatible server: delivery, faults, parking, limits."""

from __future__ import annotations

import contextlib
import re
import shutil
import socket
import sqlite3
import ssl
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import create_engine, make_url, update

from lifecycle import RelayError, StoreError, envelope, messages
from lifecycle.relay import (
    TOO_DEEP_TO_SEND,
    Backoff,
    Relay,
    _retry_after,
)
from lifecycle.service import Lifecycle
from lifecycle.store import outbox as queue
from lifecycle.store.codec import iso_utc
from lifecycle.store.outbox import shard_of
from lifecycle.store.schema import outbox
from lifecycle.wire import MAX_MESSAGE_BYTES, MAX_MESSAGE_ID_CHARS, sent_size
from tests.relay.fake_segment import FakeSegment, free_port
from tests.relay.helpers import (
    FAST,
    assert_delivered,
    park_first,
    relay_for,
    submit_history,
    while_a_relay_sends,
)
from tests.store.helpers import msg, onboarding
from tests.tcp_proxy import TcpProxy


def test_delivers_every_accepted_event_once_in_order(db_url: str, segment: FakeSegment) -> None:
    """Normal operation: every accepted event once, none rejected, per-account order, 200s only."""
    with Lifecycle(db_url, create_schema=True) as store:
        stored = submit_history(store, accounts=5)
    with relay_for(db_url, segment, batch_size=9) as relay:
        report = relay.run()
        status = relay.status()
    assert_delivered(segment, stored, duplicates=False)
    assert report.delivered == len(stored.accepted) == status.delivered
    assert (status.pending, status.parked, status.oldest_pending) == (0, 0, None)
    assert len(segment.requests) == report.requests == -(-len(stored.accepted) // 9)
    first = segment.first_arrivals()[0]
    assert first["type"] == "track" and "sentAt" not in first


def test_faults_are_retried_until_everything_arrives(db_url: str, segment: FakeSegment) -> None:
    """500s, 503, 429 with Retry-After and a response past the timeout: all arrive, in order."""
    with Lifecycle(db_url, create_schema=True) as store:
        stored = submit_history(store, accounts=4)
    segment.fail(500, times=2)
    segment.slow(1.0)  # recorded, then answered after the client gave up
    segment.fail(429, retry_after="1")
    segment.fail(503)
    with relay_for(db_url, segment, batch_size=10, timeout=0.4) as relay:
        started = time.monotonic()
        report = relay.run()
        elapsed = time.monotonic() - started
        assert relay.status().pending == 0
    assert_delivered(segment, stored, duplicates=True)
    assert report.failures == 5
    assert elapsed >= 1.0, "Retry-After was not honoured"
    statuses = [r.status for r in segment.requests]
    assert statuses[:5] == [500, 500, 200, 429, 503]
    counts = Counter(segment.message_ids())
    duplicated = {m for m, n in counts.items() if n > 1}
    assert duplicated == {m["messageId"] for m in segment.requests[2].messages}


def test_connection_refused_until_the_server_comes_up(db_url: str) -> None:
    """Nothing listens at first; the relay keeps retrying and delivers once the server is up."""
    with Lifecycle(db_url, create_schema=True) as store:
        stored = submit_history(store, accounts=2)
    server = FakeSegment(port=free_port())
    relay = relay_for(db_url, server, backoff=Backoff(base=0.05, cap=0.1))
    done = threading.Event()
    thread = threading.Thread(target=lambda: (relay.run(), done.set()))
    thread.start()
    time.sleep(0.5)
    assert not done.is_set() and relay.status().pending == len(stored.accepted)
    with server:
        thread.join(timeout=30)
        assert done.is_set()
    relay.close()
    assert_delivered(server, stored, duplicates=False)


def test_refused_message_is_parked_and_the_rest_goes_on(db_url: str, segment: FakeSegment) -> None:
    """A 400 for one message: it alone is parked (with the answer), everything else arrives."""
    with Lifecycle(db_url, create_schema=True) as store:
        stored = submit_history(store, accounts=3)
    bad = sorted(stored.accepted)[5]
    segment.refuse(bad)
    with relay_for(db_url, segment, batch_size=16) as relay:
        report = relay.run()
        (parked,) = relay.parked()
        status = relay.status()
    assert_delivered(segment, stored, duplicates=False, parked={bad})
    assert report.parked == status.parked == 1
    assert parked.message_id == bad
    assert (parked.account, parked.version) == stored.accepted[bad]
    assert parked.reason.startswith("HTTP 400") and "refused message" in parked.reason
    assert status.delivered == len(stored.accepted) - 1


def test_parked_events_can_be_sent_again(db_url: str, segment: FakeSegment) -> None:
    """A proxy that refuses every request parks every event, one by one; once it is fixed,
    ``requeue`` (by messageId, by account, or all) makes them pending, the next run
    delivers them, each with its own messageId, and nothing is left parked."""
    with Lifecycle(db_url, create_schema=True) as store:
        stored = submit_history(store, accounts=3)
    ids = sorted(stored.accepted)
    for message_id in ids:
        segment.refuse(message_id)
    with relay_for(db_url, segment) as relay:
        assert relay.run().parked == len(ids)
        segment.refused_ids.clear()
        first = ids[0]
        account = stored.accepted[ids[1]][0]
        assert relay.requeue(message_ids=[first, "no-such-id"]) == 1
        on_account = sum(1 for a, _ in stored.accepted.values() if a == account)
        assert relay.requeue(account=account) == on_account - (stored.accepted[first][0] == account)
        assert relay.run().delivered == 1 + on_account - (stored.accepted[first][0] == account)
        left = relay.status().parked
        assert left > 0 and relay.requeue() == left
        relay.run()
        assert relay.status().parked == 0 and relay.status().pending == 0
        assert relay.requeue() == 0
    # A requeued event comes after its account's events delivered meanwhile: no order here.
    assert sorted(segment.message_ids()) == ids


def test_a_parked_event_shows_every_attempt_and_the_answer(
    db_url: str, segment: FakeSegment
) -> None:
    """`relay parked` shows each event's account, version, messageId, how many times it
    was tried (a 503, then the 400 that parked it: two) and Segment's answer."""
    first = msg("Account Created", "u1", "acct_a")
    segment.fail(503)
    segment.refuse(first["messageId"])
    with Lifecycle(db_url, create_schema=True) as store, relay_for(db_url, segment) as relay:
        store.submit(first)
        report = relay.run(max_failures=3)
        (parked,) = relay.parked()
    assert (report.parked, report.failures) == (1, 1)
    assert parked.to_dict() == {
        "groupId": "acct_a",
        "version": 1,
        "messageId": first["messageId"],
        "attempts": 2,
        "recorded_at": iso_utc(parked.created_at),
        "reason": 'HTTP 400: {"code": "invalid_request", "message": "refused message"}',
    }


def test_an_answer_with_a_nul_character_is_kept_and_the_event_parked(
    db_url: str, segment: FakeSegment
) -> None:
    """A proxy that refuses a message for good with a body holding a NUL character (a binary
    page, say): the event is parked with the answer, as any refusal. PostgreSQL's text holds
    no NUL, so recording the answer failed, was taken for a database outage, and the batch
    was sent again and again, nothing ever recorded; `--once` gave up, exit 2."""
    first = msg("Account Created", "u1", "acct_a")
    segment.fail(400, times=20, body=b"refused\x00binary")
    with Lifecycle(db_url, create_schema=True) as store, relay_for(db_url, segment) as relay:
        store.submit(first)
        report = relay.run(max_failures=3)
        (parked,) = relay.parked()
    assert (report.parked, report.requests) == (1, 1)
    assert parked.reason.startswith("HTTP 400: refused")
    assert "binary" in parked.reason


def test_a_transient_answer_with_a_nul_character_is_recorded_and_retried(
    db_url: str, segment: FakeSegment
) -> None:
    """A 503 whose body holds a NUL is a Segment failure, retried with backoff; recording it
    must not fail (on PostgreSQL it did, and the relay said the database was unavailable)."""
    segment.fail(503, times=2, body=b"busy\x00")
    with Lifecycle(db_url, create_schema=True) as store, relay_for(db_url, segment) as relay:
        store.submit(msg("Account Created", "u1", "acct_a"))
        with pytest.raises(RelayError, match="HTTP 503") as raised:
            relay.run(max_failures=1)
        assert "database" not in str(raised.value)
        with relay.engine.connect() as conn:
            error = conn.execute(outbox.select().with_only_columns(outbox.c.last_error)).scalar()
    assert error is not None and error.startswith("HTTP 503: busy")


def test_a_requeued_event_goes_behind_the_events_pending_before_it(
    db_url: str, segment: FakeSegment
) -> None:
    """A requeued event is queued as a new row, behind every event pending when it was
    requeued: made pending where it stood, it would jump ahead of them (and on a server
    database become its account's head while its later rows were in flight)."""
    first = msg("Account Created", "u1", "acct_a")
    segment.refuse(first["messageId"])
    others = onboarding("acct_b")
    with Lifecycle(db_url, create_schema=True) as store, relay_for(db_url, segment) as relay:
        store.submit(first)
        assert relay.run().parked == 1
        segment.refused_ids.clear()
        store.submit_many(others)
        assert relay.requeue(account="acct_a") == 1
        assert relay.run().delivered == 5
    assert [m["messageId"] for m in segment.first_arrivals()] == [
        *(m["messageId"] for m in others),
        first["messageId"],
    ]


def test_two_requeues_at_once_make_each_parked_event_pending_once(
    db_url: str, segment: FakeSegment
) -> None:
    """Two ``relay requeue`` runs at once: both re-inserted the rows they had read, and one
    failed on the outbox's unique (account, version). Now each takes rows the other does
    not hold; between them every parked event is pending again, once."""
    with Lifecycle(db_url, create_schema=True) as store:
        for start in range(0, 3000, 500):
            store.submit_many(
                [msg("Account Created", "u1", f"acct_{n}") for n in range(start, start + 500)]
            )
    with relay_for(db_url, segment) as relay, relay.engine.begin() as connection:
        connection.execute(update(outbox).values(status="parked", last_error="HTTP 400"))
    started = threading.Barrier(2)
    counts: list[int] = []
    errors: list[BaseException] = []

    def requeue() -> None:
        with relay_for(db_url, segment) as runner:
            started.wait(10)
            try:
                counts.append(runner.requeue())
            except BaseException as exc:
                errors.append(exc)

    threads = [threading.Thread(target=requeue) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == [] and sum(counts) == 3000
    with relay_for(db_url, segment) as relay:
        status = relay.status()
    assert (status.pending, status.parked) == (3000, 0)


def test_requeuing_while_a_relay_sends_the_account_sends_nothing_twice(
    db_url: str, backend: str, segment: FakeSegment
) -> None:
    """An account's first event parked, its later ones in a relay's batch in flight: the
    parked one requeued, a second relay took it as the account's head, with the rows the
    first relay was sending, and sent those again. A requeued row goes to the back of the
    queue, behind rows in flight."""
    if backend == "sqlite":
        pytest.skip("SQLite takes one relay at a time (documented)")
    history = onboarding("acct_1")
    with Lifecycle(db_url, create_schema=True) as store:
        park_first(store, db_url, segment, history)
        store.submit_many(history[1:])
    before = len(segment.requests)

    def requeue_behind_the_batch(second: Relay) -> None:
        assert [m["messageId"] for m in segment.requests[before].messages] == [
            m["messageId"] for m in history[1:]
        ]
        assert second.requeue() == 1
        second.run()

    while_a_relay_sends(db_url, segment, requeue_behind_the_batch)
    with relay_for(db_url, segment) as relay:
        assert relay.status().pending == 0
    assert Counter(segment.message_ids()) == {m["messageId"]: 1 for m in history}


def test_rows_whose_event_was_deleted_are_parked(db_url: str, segment: FakeSegment) -> None:
    """Pending outbox rows whose events were deleted outside lifecycle (an archive of old
    accounts): the relay read events with an inner join, never saw them, and `--once`
    ran for ever; read first on a server database, they stalled every other account.
    They are parked, saying why, and the rest is delivered."""
    from sqlalchemy import delete

    from lifecycle.store.schema import account_heads, events

    archived, kept = onboarding("acct_old"), onboarding("acct_new")
    with Lifecycle(db_url, create_schema=True) as store:
        store.submit_many(archived + kept)
        with store.engine.begin() as connection:
            for table in (events, account_heads):
                connection.execute(delete(table).where(table.c.account == "acct_old"))
    with relay_for(db_url, segment, batch_size=2) as relay:
        reports: list[Any] = []
        running = threading.Thread(target=lambda: reports.append(relay.run(max_failures=3)))
        running.start()
        running.join(timeout=30)
        if running.is_alive():
            relay.stop()
            running.join()
            pytest.fail("the relay did not finish: rows it cannot see keep it waiting")
        parked = relay.parked()
    assert (reports[0].delivered, reports[0].parked) == (4, 4)
    assert [m["messageId"] for m in segment.first_arrivals()] == [m["messageId"] for m in kept]
    assert {p.message_id for p in parked} == {m["messageId"] for m in archived}
    assert {p.reason for p in parked} == {
        "its event is no longer stored (deleted outside lifecycle)"
    }


def test_stored_payloads_that_are_not_a_json_object_are_parked(
    db_url: str, segment: FakeSegment
) -> None:
    """A payload changed outside lifecycle into something that is not a JSON object cannot
    be sent as a message: it is parked, saying why, and the account's next events go on."""
    from lifecycle.store.schema import events

    history = onboarding("acct_p")
    with Lifecycle(db_url, create_schema=True) as store:
        store.submit_many(history)
        with store.engine.begin() as connection:
            for version, payload in ((2, "[1, 2]"), (3, "{not json")):
                connection.execute(
                    update(events)
                    .where(events.c.account == "acct_p", events.c.version == version)
                    .values(payload=payload)
                )
    with relay_for(db_url, segment) as relay:
        report = relay.run(max_failures=3)
        parked = relay.parked()
    assert (report.delivered, report.parked) == (2, 2)
    assert [(p.version, p.reason) for p in parked] == [
        (2, "the stored payload is not a JSON object"),
        (3, "the stored payload is not JSON"),
    ]
    sent = [history[0]["messageId"], history[3]["messageId"]]
    assert [m["messageId"] for m in segment.first_arrivals()] == sent


def test_oldest_pending_is_the_earliest_stored_not_the_first_queued(
    db_url: str, segment: FakeSegment
) -> None:
    """`relay backfill` queues old events behind newer ones: the oldest pending age was the
    first row's, minutes or days younger than what actually waited longest."""
    with Lifecycle(db_url, create_schema=True, outbox=False) as store:
        store.submit_many(onboarding("acct_old"))
    time.sleep(0.05)
    with Lifecycle(db_url) as store:
        store.submit_many(onboarding("acct_new"))
        earliest = min(e.recorded_at for e in store.events())
    with relay_for(db_url, segment) as relay:
        assert relay.backfill() == 4
        oldest = relay.status().oldest_pending
    assert oldest is not None and oldest.replace(tzinfo=None) == earliest.replace(tzinfo=None)


def test_relay_takes_its_host_and_key_from_the_environment(
    db_url: str, segment: FakeSegment, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`Relay()` read the write key from the environment but not the host: an EU
    application that set both sent its events to the US endpoint, which answers 200 and
    keeps nothing of them. Arguments still win over the environment."""
    monkeypatch.setenv("LIFECYCLE_SEGMENT_WRITE_KEY", segment.write_key)
    monkeypatch.setenv("LIFECYCLE_SEGMENT_HOST", segment.url)
    with Lifecycle(db_url, create_schema=True) as store:
        store.submit_many(onboarding("acct_1"))
    with Relay(db_url, backoff=FAST) as relay:
        assert relay.host == segment.url
        assert relay.run().delivered == 4
    with Relay(db_url, host="https://events.eu1.segmentapis.com") as relay:
        assert relay.host == "https://events.eu1.segmentapis.com"
    monkeypatch.setenv("LIFECYCLE_SEGMENT_HOST", "https://example.com/v1?x=1")
    with Relay(db_url) as relay:
        assert relay.status().delivered == 4  # what sends nothing does not need the host
        with pytest.raises(RelayError, match="a query or fragment cannot take the /v1/batch"):
            relay.run()


def test_oversized_message_is_parked_unsent(
    db_url: str, segment: FakeSegment, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stored message over 32 KB (the gate refuses those now; a store may hold them from
    before) is parked without a request; the account's next events go on."""
    monkeypatch.setattr(envelope, "oversize", lambda message: None)  # the gate before
    with Lifecycle(db_url, create_schema=True) as store:
        messages = onboarding("acct_big")
        messages[2]["properties"]["blob"] = "x" * MAX_MESSAGE_BYTES
        messages[1]["properties"]["note"] = "é" * 5000  # 5,000 chars, 30,000 bytes as JSON
        assert {v.verdict for v in store.submit_many(messages)} == {"accepted"}
    with relay_for(db_url, segment) as relay:
        relay.run()
        (parked,) = relay.parked()
    assert parked.message_id == messages[2]["messageId"]
    assert "over Segment's 32768-byte limit" in parked.reason
    arrived = [m["messageId"] for m in segment.first_arrivals()]
    assert arrived == [m["messageId"] for i, m in enumerate(messages) if i != 2]


def sized(message: dict[str, Any], size: int) -> dict[str, Any]:
    """``message`` padded to exactly ``size`` bytes as the client library writes it, with a
    timestamp of its own so that the relay adds nothing."""
    message["timestamp"] = "2024-03-01T10:00:00Z"
    message["properties"]["pad"] = ""
    message["properties"]["pad"] = "p" * (size - sent_size(message))
    assert sent_size(message) == size
    return message


def test_a_message_of_exactly_32_kb_is_sent(db_url: str, segment: FakeSegment) -> None:
    """Segment's limit is 32 KB inclusive: a message of exactly that size, as the client
    library writes it, is sent, not parked."""
    with Lifecycle(db_url, create_schema=True) as store:
        messages = onboarding("acct_edge")
        edge = sized(msg("Signed In", "u1", "acct_edge"), MAX_MESSAGE_BYTES)
        messages.append(edge)
        assert {v.verdict for v in store.submit_many(messages)} == {"accepted"}
    with relay_for(db_url, segment) as relay:
        report = relay.run()
    assert (report.delivered, report.parked) == (5, 0)
    assert segment.first_arrivals()[-1] == edge


def test_overlong_message_id_is_parked_unsent(
    db_url: str, segment: FakeSegment, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Segment keeps 100 characters of a messageId: a longer one stored before the gate
    refused it is parked, not mangled."""
    monkeypatch.setattr(envelope, "MAX_MESSAGE_ID_CHARS", 255)  # the gate before
    with Lifecycle(db_url, create_schema=True) as store:
        messages = onboarding("acct_ids")
        messages[1]["messageId"] = "m" * (MAX_MESSAGE_ID_CHARS + 1)
        messages[2]["messageId"] = "n" * MAX_MESSAGE_ID_CHARS
        assert {v.verdict for v in store.submit_many(messages)} == {"accepted"}
    with relay_for(db_url, segment) as relay:
        report = relay.run()
        (parked,) = relay.parked()
    assert report.parked == 1
    assert parked.message_id == messages[1]["messageId"]
    assert "101 characters, over Segment's 100-character limit" in parked.reason
    arrived = [m["messageId"] for m in segment.first_arrivals()]
    assert arrived == [m["messageId"] for i, m in enumerate(messages) if i != 1]


def test_message_too_deep_to_write_is_parked_unsent(
    db_url: str, segment: FakeSegment, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stored message nested deeper than the client library can write as JSON (the gate
    refuses those now; a store may hold them from before) is parked, whether it is measured
    or only estimated, and the rest is delivered in order. It had stopped the relay with a
    RecursionError on every run, holding back everything behind it."""
    monkeypatch.setattr(messages, "MAX_DEPTH", 10_000)  # what the gate accepted before

    def deep(message: dict[str, Any]) -> bytes:
        message["properties"]["x"] = "DEEP"
        return orjson.dumps(message).replace(b'"DEEP"', b"[" * 1000 + b"]" * 1000)

    history = onboarding("acct_deep")
    lines = [orjson.dumps(m) for m in history]
    deep_ones = [msg("Signed In", "u1", "acct_deep"), msg("Signed In", "u1", "acct_deep", n="é")]
    lines[2:2] = [deep(m) for m in deep_ones]
    with Lifecycle(db_url, create_schema=True) as store:
        assert [v.verdict for line in lines for v in store.submit_line(line)] == ["accepted"] * 6
    with relay_for(db_url, segment) as relay:
        report = relay.run()
        parked = relay.parked()
    assert (report.delivered, report.parked, report.requests) == (4, 2, len(segment.requests))
    assert {p.message_id for p in parked} == {m["messageId"] for m in deep_ones}
    assert {p.reason for p in parked} == {TOO_DEEP_TO_SEND}
    assert [m["messageId"] for m in segment.first_arrivals()] == [m["messageId"] for m in history]


def test_requests_stay_within_segment_limits(db_url: str, segment: FakeSegment) -> None:
    """Large messages are cut into requests of at most 500 KB each; all arrive in order."""
    with Lifecycle(db_url, create_schema=True) as store:
        messages = [msg("Account Created", "u0", "acct_l"), msg("Signed Up", "u0", "acct_l")]
        messages += [msg("Signed In", "u0", "acct_l", pad="p" * 20_000) for _ in range(60)]
        store.submit_many(messages)
    with relay_for(db_url, segment, batch_size=100) as relay:
        report = relay.run()
    assert report.delivered == 62
    assert all(r.body_bytes <= 500 << 10 for r in segment.requests)
    assert len(segment.requests) == 3
    assert [m["messageId"] for m in segment.first_arrivals()] == [m["messageId"] for m in messages]


def test_a_request_holds_as_many_messages_as_fit_in_475_kb_and_no_more(
    db_url: str, segment: FakeSegment
) -> None:
    """Messages of exactly 25,000 bytes: 19 make 475,000, the most a request holds, so each
    request takes 19. A check made before adding the next message let a 20th in."""
    with Lifecycle(db_url, create_schema=True) as store, relay_for(db_url, segment) as relay:
        store.submit_many(onboarding("acct_q", user="u0")[:2])
        assert relay.run().delivered == 2
        big = [sized(msg("Signed In", "u0", "acct_q"), 25_000) for _ in range(38)]
        assert {v.verdict for v in store.submit_many(big)} == {"accepted"}
        relay.batch_size = 100
        assert relay.run().delivered == 38
    assert [len(r.messages) for r in segment.requests[1:]] == [19, 19]


def test_requests_of_small_messages_dense_in_separators_stay_within_segment_limits(
    db_url: str, segment: FakeSegment
) -> None:
    """Small messages are estimated, not measured: the estimate counts the space the client
    library writes after every ``,`` and ``:``. At the stored size plus an eighth, requests
    of messages like these came out at 600 KB, over Segment's 500 KB, and were refused."""
    with Lifecycle(db_url, create_schema=True) as store:
        messages = [msg("Account Created", "u0", "acct_d"), msg("Signed Up", "u0", "acct_d")]
        messages += [msg("Signed In", "u0", "acct_d", pad=[0] * 1_900) for _ in range(300)]
        assert {v.verdict for v in store.submit_many(messages)} == {"accepted"}
    with relay_for(db_url, segment, batch_size=500) as relay:
        report = relay.run()
    assert report.delivered == 302
    assert max(r.body_bytes for r in segment.requests) <= 475_000 + 1_000  # the envelope
    assert len(segment.requests) == 4  # none refused and split
    assert [m["messageId"] for m in segment.first_arrivals()] == [m["messageId"] for m in messages]


def test_small_messages_dense_in_del_characters_are_estimated_at_their_sent_size(
    db_url: str, segment: FakeSegment
) -> None:
    """A DEL (U+007F) is stored as one byte and written by the client library as six
    (``\\u007f``): an estimate that counted it once put requests of such messages over
    500 KB, and each was refused and split before it went through."""
    with Lifecycle(db_url, create_schema=True) as store:
        messages = [msg("Account Created", "u0", "acct_del"), msg("Signed Up", "u0", "acct_del")]
        messages += [msg("Signed In", "u0", "acct_del", pad="\x7f" * 600) for _ in range(300)]
        assert {v.verdict for v in store.submit_many(messages)} == {"accepted"}
    with relay_for(db_url, segment, batch_size=500) as relay:
        report = relay.run()
    assert report.delivered == 302
    assert report.requests == len(segment.requests), "a request was refused and split"
    assert max(r.body_bytes for r in segment.requests) <= 475_000 + 1_000  # the envelope
    assert [m["messageId"] for m in segment.first_arrivals()] == [m["messageId"] for m in messages]


def test_giving_up_counts_every_event_the_cycle_left_pending(
    db_url: str, segment: FakeSegment
) -> None:
    """A cycle cut into two requests whose first fails sends neither: the error counts
    both requests' events as left pending, not only the first's."""
    with Lifecycle(db_url, create_schema=True) as store:
        history = onboarding("acct_g")
        history += [sized(msg("Signed In", "u1", "acct_g"), 25_000) for _ in range(26)]
        store.submit_many(history)
    segment.fail(503, times=10)
    with relay_for(db_url, segment, batch_size=100) as relay:
        with pytest.raises(RelayError, match=r"\(30 events left pending\): HTTP 503"):
            relay.run(max_failures=1)
        assert relay.status().pending == 30
    assert len(segment.requests) == 1


@pytest.mark.parametrize("status", [403, 404, 405, 407, 300, 410, 421, 451])
def test_an_answer_about_the_key_or_the_host_stops_the_relay(
    status: int, tmp_path: Path, segment: FakeSegment
) -> None:
    """403 (a key without access), 404 and 405 (not the batch endpoint), 407 (a proxy that
    wants credentials), a 3xx the HTTP client did not follow, and 410, 421 and 451 (the
    address is gone, misdirected or barred) say nothing about a message: taken as
    refusals, they parked every event, one request at a time. The relay stops instead."""
    url = f"sqlite:///{tmp_path / 's.db'}"
    with Lifecycle(url) as store:
        store.submit_many(onboarding("acct_k"))
    segment.fail(status, times=100)
    with relay_for(url, segment) as relay:
        with pytest.raises(RelayError, match=f"HTTP {status}"):
            relay.run(max_failures=3)
        status_now = relay.status()
    assert (status_now.pending, status_now.parked) == (4, 0)
    assert len(segment.requests) == 1, "a stop needs no second request"


def test_a_request_timeout_is_retried_not_refused(db_url: str, segment: FakeSegment) -> None:
    """408 is the server giving up on a slow upload: a passing failure, retried, and no
    event parked for it (another 4xx would be a refusal). Each retry says which it is."""
    with Lifecycle(db_url, create_schema=True) as store:
        store.submit_many(onboarding("acct_t"))
    segment.fail(408, times=2)
    with relay_for(db_url, segment) as relay:
        report = relay.run(max_failures=3)
    assert (report.delivered, report.parked, report.failures) == (4, 0, 2)
    assert [r.status for r in segment.requests] == [408, 408, 200]
    # Each retry tells Segment how many attempts failed before it.
    assert [r.retry_count for r in segment.requests] == [0, 1, 2]


def test_wrong_write_key_stops_the_relay(db_url: str, segment: FakeSegment) -> None:
    """401 means the key is wrong: RelayError, nothing parked, everything still pending."""
    with Lifecycle(db_url, create_schema=True) as store:
        store.submit_many(onboarding("acct_k"))
    relay = relay_for(db_url, segment)
    relay.write_key = "wrong"
    with relay, pytest.raises(RelayError, match="401"):
        relay.run()
    assert segment.unauthorized == 1 and segment.arrivals == []
    with relay_for(db_url, segment) as relay:
        status = relay.status()
    assert (status.pending, status.parked) == (4, 0)


@pytest.mark.parametrize(("status", "page"), [(301, 200), (302, 200), (303, 200), (307, 200),
                                              (308, 200), (301, 400), (302, 503)])  # fmt: skip
def test_a_redirect_stops_the_relay_with_nothing_delivered(
    db_url: str, segment: FakeSegment, status: int, page: int
) -> None:
    """A host that redirects is the wrong host: the HTTP client followed it (after 301-303
    with a bodiless GET, so nothing was uploaded) and the page it reached answered 200,
    which had marked every event delivered; a page answering 400 had parked them one by
    one, and one answering 503 was retried for ever. Now RelayError, and all stays pending."""
    with Lifecycle(db_url, create_schema=True) as store:
        store.submit_many(onboarding("acct_r"))
    segment.redirect(status, page=page)
    with relay_for(db_url, segment) as relay, pytest.raises(RelayError) as raised:
        relay.run()
    assert f"the host redirected the request (HTTP {status}) to {segment.url}/moved" in str(
        raised.value
    )
    assert segment.moved == 1 and segment.arrivals == []
    with relay_for(db_url, segment) as relay:
        status_now = relay.status()
        assert (status_now.pending, status_now.delivered, status_now.parked) == (4, 0, 0)
        assert relay.run().delivered == 4  # the same host, now answering: all go


def test_a_2xx_other_than_200_is_not_taken_as_delivered(db_url: str, segment: FakeSegment) -> None:
    """Segment's API answers 200; a 202 comes from something else, and proves nothing."""
    with Lifecycle(db_url, create_schema=True) as store:
        store.submit_many(onboarding("acct_a"))
    segment.fail(202)
    with relay_for(db_url, segment) as relay, pytest.raises(RelayError, match="HTTP 202"):
        relay.run()
    with relay_for(db_url, segment) as relay:
        assert relay.status().pending == 4


def test_https_to_a_plain_http_server_stops_at_once(db_url: str, segment: FakeSegment) -> None:
    """A TLS failure means the host is wrong: it was retried as an outage, for ever with
    --follow. Now RelayError on the first attempt."""
    with Lifecycle(db_url, create_schema=True) as store:
        store.submit_many(onboarding("acct_t"))
    https = segment.url.replace("http:", "https:")
    relay = Relay(db_url, write_key=segment.write_key, host=https, backoff=FAST)
    with relay, pytest.raises(RelayError, match="SSLError") as raised:
        relay.run(max_failures=50)
    assert not str(raised.value).startswith("gave up")
    assert segment.arrivals == []


def test_a_tls_handshake_cut_short_is_retried(db_url: str) -> None:
    """A handshake a busy load balancer closes is a passing failure, retried with backoff:
    only a certificate that does not verify, or https to plain http, stops the relay."""
    with Lifecycle(db_url, create_schema=True) as store:
        store.submit_many(onboarding("acct_h"))
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        threading.Thread(target=_close_each, args=(server,), daemon=True).start()
        host = f"https://127.0.0.1:{server.getsockname()[1]}"
        relay = Relay(db_url, write_key="k", host=host, backoff=FAST)
        with relay, pytest.raises(RelayError, match="gave up after 3 failed attempts"):
            relay.run(max_failures=3)


def _close_each(server: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while True:
            connection, _ = server.accept()
            connection.close()


def test_a_certificate_that_does_not_verify_stops_at_once(db_url: str, tmp_path: Path) -> None:
    """A self-signed certificate is the wrong host (or a proxy in the way): RelayError on the
    first attempt, nothing retried."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-keyout", key, "-out", cert],
                   check=True, capture_output=True)  # fmt: skip
    with Lifecycle(db_url, create_schema=True) as store:
        store.submit_many(onboarding("acct_c"))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    with socket.socket() as plain:
        plain.bind(("127.0.0.1", 0))
        plain.listen(8)
        threading.Thread(target=_handshake_each, args=(plain, context), daemon=True).start()
        host = f"https://127.0.0.1:{plain.getsockname()[1]}"
        relay = Relay(db_url, write_key="k", host=host, backoff=FAST)
        with relay, pytest.raises(RelayError) as raised:
            relay.run(max_failures=50)
    assert "CERTIFICATE_VERIFY_FAILED" in str(raised.value)
    assert not str(raised.value).startswith("gave up")


def _handshake_each(server: socket.socket, context: ssl.SSLContext) -> None:
    with contextlib.suppress(OSError):
        while True:
            connection, _ = server.accept()
            with contextlib.suppress(OSError, ssl.SSLError):
                context.wrap_socket(connection, server_side=True).close()
            connection.close()


@pytest.mark.parametrize(
    ("host", "why"),
    [
        ("http://someone:secret@127.0.0.1:9", "a user or password in the host would replace"),
        ("http://someone@127.0.0.1:9", "a user or password in the host would replace"),
        ("http://127.0.0.1:0", "port 0 is no port to send to"),
        ("http://127.0.0.1:9/seg\n", "expected an http(s) URL"),
    ],
)
def test_a_host_that_would_send_elsewhere_is_refused_up_front(
    host: str, why: str, tmp_path: Path
) -> None:
    """A user in the host replaced the write key in the request's Basic auth (401 on
    every request); a trailing newline passed and failed at the first request; port 0
    went to port 80."""
    with pytest.raises(RelayError, match=re.escape(why)):
        Relay(f"sqlite:///{tmp_path / 'never.db'}", write_key="k", host=host)


@pytest.mark.parametrize("host", ["https://api.segment.io?x=1", "https://api.segment.io/#f"])
def test_a_host_with_a_query_or_fragment_is_refused_up_front(host: str, tmp_path: Path) -> None:
    """The library appends /v1/batch to the host's text, into the query or the fragment."""
    with pytest.raises(RelayError, match="a query or fragment cannot take the /v1/batch"):
        Relay(f"sqlite:///{tmp_path / 'never.db'}", write_key="k", host=host)


@pytest.mark.parametrize(
    "host",
    [
        "api.segment.io",
        "ftp://api.segment.io",
        "http://",
        "a b",
        "http://[::1",  # ValueError from urlsplit: a traceback, exit 1
        "http://127.0.0.1:99999",  # the port: refused only once a batch was read
        "http://127.0.0.1:abc",
    ],
)
def test_a_host_the_client_cannot_send_to_is_refused_up_front(host: str, tmp_path: Path) -> None:
    """Not an http(s) URL: RelayError before any database is opened, naming the form."""
    with pytest.raises(RelayError) as raised:
        Relay(f"sqlite:///{tmp_path / 'never.db'}", write_key="k", host=host)
    assert str(raised.value).startswith(f"host {host!r}: expected an http(s) URL such as ")
    assert not (tmp_path / "never.db").exists()


@pytest.mark.parametrize("host", ["https://api..segment.io", f"http://{'a' * 64}.example"])
def test_a_host_with_an_empty_or_overlong_label_is_a_relay_error(host: str, tmp_path: Path) -> None:
    """A typo such as a doubled dot, or a DNS label over 63 characters: the HTTP client's
    urllib3 raises LocationParseError, which escaped the relay's handling of the client's
    errors: a traceback and exit 70 from `lifecycle relay`, instead of a RelayError
    (exit 2) naming the host, as for `http://.`."""
    url = f"sqlite:///{tmp_path / 'r.db'}"
    with Lifecycle(url, create_schema=True) as store:
        store.submit(msg("Account Created", "u1", "acct_a"))
    with (
        pytest.raises(RelayError),
        Relay(url, write_key="k", host=host, timeout=2.0, backoff=FAST) as relay,
    ):
        relay.run(max_failures=1)


def test_messages_are_sent_as_stored(db_url: str, segment: FakeSegment) -> None:
    """messageId kept (or derived), timestamp kept (or the stored time), sentAt dropped."""
    with Lifecycle(db_url, create_schema=True) as store:
        first = msg("Account Created", "u1", "acct_s")
        first["timestamp"] = "2024-03-01T10:00:00Z"
        first["sentAt"] = "2024-03-01T10:00:01Z"
        first["context"]["library"] = {"name": "analytics.js", "version": "5.0.0"}
        second = msg("Signed Up", "u1", "acct_s", mid="")
        del second["type"]
        store.submit_many([first, second])
        (_, event) = list(store.events())
    with relay_for(db_url, segment) as relay:
        relay.run()
    got = segment.first_arrivals()
    sent_first = dict(first)
    del sent_first["sentAt"]
    assert got[0] == sent_first
    assert got[1]["messageId"] != "" and got[1]["type"] == "track"
    stamped = datetime.fromisoformat(got[1]["timestamp"].replace("Z", "+00:00"))
    assert stamped.replace(tzinfo=None) == event.recorded_at
    assert segment.unauthorized == 0  # the server checked the write key on every request


def test_in_process_relay_follows_new_events(db_url: str, segment: FakeSegment) -> None:
    """`start()` follows the outbox in a thread; `wake()` and `close()` behave."""
    with Lifecycle(db_url, create_schema=True) as store, relay_for(db_url, segment) as relay:
        relay.poll_interval = 5.0
        relay.start()
        store.submit_many(onboarding("acct_t"))
        relay.wake()
        segment.wait_for(4, timeout=10)
        store.submit_many(onboarding("acct_t2"))
        relay.wake()
        segment.wait_for(8, timeout=10)
        relay.close()
        assert relay.error is None
        assert relay.status().delivered == 8


def test_a_stopped_relay_runs_again(db_url: str, segment: FakeSegment) -> None:
    """`stop()` ends the run in flight, not the relay: the next `run()` delivers the rest.
    A stop that outlived its run made every later run return at once, sending nothing."""
    with Lifecycle(db_url, create_schema=True) as store:
        store.submit_many(onboarding("acct_a") + onboarding("acct_b"))
    segment.slow(0.5)
    with relay_for(db_url, segment, batch_size=4) as relay:
        running = threading.Thread(target=relay.run)
        running.start()
        assert segment.received.wait(10)
        relay.stop()
        running.join(10)
        assert not running.is_alive() and relay.status().pending == 4
        assert relay.run().delivered == 4
        assert relay.status().pending == 0


def test_a_wake_cuts_one_idle_wait_short_not_every_one_after_it(
    db_url: str, segment: FakeSegment, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A following relay woken once reads the outbox, delivers, then waits its poll interval
    again: a wake that was never used up left it reading the database without pause."""
    reads: list[int] = []

    def counted(read: Any) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            reads.append(1)
            return read(*args, **kwargs)

        return call

    monkeypatch.setattr(queue, "first_pending", counted(queue.first_pending))
    monkeypatch.setattr(queue, "window", counted(queue.window))
    store = Lifecycle(db_url, create_schema=True)
    with store, relay_for(db_url, segment, poll_interval=5.0) as relay:
        relay.start()
        store.submit_many(onboarding("acct_w"))
        relay.wake()
        segment.wait_for(4, timeout=10)
        deadline = time.monotonic() + 10
        while relay.status().pending and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)  # the cycle after the delivery finds nothing, and waits
        before = len(reads)
        time.sleep(1.0)
        idle = len(reads) - before
        relay.close()
        assert relay.error is None
    # One read at most, for a machine slow enough to start that last cycle late; a wake
    # never used up reads without pause, hundreds of times a second.
    assert idle <= 1, f"{idle} reads of the outbox while idle"


def test_a_following_relay_waits_out_a_database_outage(
    db_url: str, backend: str, segment: FakeSegment, caplog: pytest.LogCaptureFixture
) -> None:
    """A server restart or failover (every connection cut, new ones refused for a while)
    does not end a following relay: it waits with backoff, then delivers what was written
    meanwhile, in order. It had stopped at the first cut with a StoreError."""
    if backend == "sqlite":
        pytest.skip("a database file has no connection to lose")
    url = make_url(db_url)
    assert url.host is not None and url.port is not None
    with TcpProxy(url.host, url.port) as proxy, Lifecycle(db_url, create_schema=True) as store:
        through = url.set(host="127.0.0.1", port=proxy.port).render_as_string(False)
        first, second = onboarding("acct_1"), onboarding("acct_2")
        store.submit_many(first)
        with relay_for(through, segment) as relay:
            thread = relay.start()
            assert _arrived(segment, 4)
            proxy.cut()
            store.submit_many(second)
            relay.wake()
            time.sleep(1.0)
            proxy.restore()
            assert _arrived(segment, 8), f"the relay did not come back: {relay.error!r}"
            assert thread.is_alive() and relay.error is None
    assert [m["messageId"] for m in segment.first_arrivals()] == [
        m["messageId"] for m in first + second
    ]
    assert "the database is unavailable" in caplog.text


def test_a_relay_gives_up_on_a_database_outage_after_max_failures(
    db_url: str, backend: str, segment: FakeSegment
) -> None:
    """``max_failures`` bounds how long a relay waits for the database, as for Segment."""
    if backend == "sqlite":
        pytest.skip("a database file has no connection to lose")
    url = make_url(db_url)
    assert url.host is not None and url.port is not None
    with TcpProxy(url.host, url.port) as proxy, Lifecycle(db_url, create_schema=True) as store:
        store.submit_many(onboarding("acct_1"))
        with relay_for(url.set(host="127.0.0.1", port=proxy.port).render_as_string(False),
                       segment) as relay:  # fmt: skip
            proxy.cut()
            with pytest.raises(RelayError, match="after 3 failed attempts in a row: the database"):
                relay.run(max_failures=3)
    assert segment.arrivals == []


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
@pytest.mark.parametrize("when", ["before the run", "while a request is in flight"])
def test_a_missing_outbox_ends_the_run_with_a_store_error(
    db_url: str, segment: FakeSegment, when: str
) -> None:
    """A missing table is no outage: the relay stops with a StoreError, having sent once.
    It was waited out as one, and the batch's read then escaped as a bare sqlite3 error
    (a traceback and exit 1 from the command line)."""
    with Lifecycle(db_url, create_schema=True) as store:
        store.submit_many(onboarding("acct_1"))
    path = make_url(db_url).database
    assert path is not None

    def rename() -> None:
        with contextlib.closing(sqlite3.connect(path, timeout=30)) as connection:
            connection.execute("ALTER TABLE outbox RENAME TO gone")
            connection.commit()

    errors: list[BaseException] = []

    def run(relay: Relay) -> None:
        try:
            relay.run(max_failures=3)
        except BaseException as exc:
            errors.append(exc)

    with relay_for(db_url, segment) as relay:
        if when == "before the run":
            rename()
            run(relay)
        else:
            segment.delay = 0.5
            thread = threading.Thread(target=run, args=(relay,))
            thread.start()
            assert segment.received.wait(10)
            rename()
            thread.join(30)
    (error,) = errors
    assert type(error) is StoreError and "no such table: outbox" in str(error)
    assert len(segment.requests) == (when != "before the run")


@pytest.mark.parametrize("backend", ["mariadb"], indirect=True)
def test_a_permission_denied_ends_the_run_instead_of_sending_again(
    db_url: str, segment: FakeSegment
) -> None:
    """MariaDB's "UPDATE command denied" comes as an OperationalError, as an outage does:
    it was waited out, and every retry sent the same batch again (for ever with
    ``--follow``). It now stops the relay after the one request."""
    with Lifecycle(db_url, create_schema=True) as store:
        store.submit_many(onboarding("acct_1"))
    url = make_url(db_url)
    user = f"ro_{url.database}"[:32]
    admin = create_engine(
        url.set(drivername="mariadb+pymysql").render_as_string(False), isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as connection:
        connection.exec_driver_sql(f"CREATE USER '{user}'@'%%'")
        connection.exec_driver_sql(f"GRANT SELECT ON {url.database}.* TO '{user}'@'%%'")
    try:
        reader = url.set(username=user, password=None).render_as_string(False)
        with relay_for(reader, segment) as relay, pytest.raises(StoreError) as raised:
            relay.run(max_failures=3)
    finally:
        with admin.connect() as connection:
            connection.exec_driver_sql(f"DROP USER '{user}'@'%%'")
        admin.dispose()
    assert "UPDATE command denied" in str(raised.value)
    assert len(segment.requests) == 1


def test_requests_are_counted_as_sent_when_their_outcome_was_not_recorded(
    db_url: str, backend: str, segment: FakeSegment
) -> None:
    """The run's ``requests`` came from recorded outcomes: a batch sent again after the
    database dropped the connection counted once, though Segment got it twice."""
    if backend == "sqlite":
        pytest.skip("a database file has no connection to lose")
    url = make_url(db_url)
    assert url.host is not None and url.port is not None
    with TcpProxy(url.host, url.port) as proxy, Lifecycle(db_url, create_schema=True) as store:
        store.submit_many(onboarding("acct_1"))
        segment.delay = 0.5
        through = url.set(host="127.0.0.1", port=proxy.port).render_as_string(False)
        with relay_for(through, segment) as relay:
            cutter = threading.Thread(target=lambda: segment.received.wait(10) and proxy.cut())
            cutter.start()
            restorer = threading.Timer(1.5, proxy.restore)
            restorer.start()
            report = relay.run()
            cutter.join()
            restorer.join()
    assert len(segment.requests) == 2, "the batch should have been sent again"
    assert (report.requests, report.delivered, report.failures >= 1) == (2, 4, True)


def _arrived(segment: FakeSegment, count: int, within: float = 20.0) -> bool:
    deadline = time.monotonic() + within
    while len(segment.first_arrivals()) < count:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_backoff_is_exponential_with_jitter_and_honours_retry_after() -> None:
    """Delays grow by doubling up to the cap, vary, and Retry-After wins when given."""
    backoff = Backoff(base=1.0, cap=8.0)
    for failures, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (9, 8.0)]:
        delays = {backoff.delay(failures) for _ in range(50)}
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(delays) > 1
    assert 30.0 <= backoff.delay(1, retry_after=30.0) <= 31.0
    assert backoff.delay(1, retry_after=10_000) <= 301.0
    # Several relays told the same Retry-After must not all come back at the same instant.
    assert len({backoff.delay(1, retry_after=30.0) for _ in range(50)}) > 1


def test_backoff_stays_at_its_cap_however_long_the_outage() -> None:
    """The 1,025th failure in a row (13 hours of outage at the default cap) raised
    OverflowError computing 2.0 ** 1024, which ended a following relay."""
    backoff = Backoff(base=0.5, cap=60.0)
    assert all(30.0 <= backoff.delay(failures) <= 60.0 for failures in (1025, 10**6, 10**12))


def test_waking_a_relay_does_not_cut_its_waits_after_a_failure(
    db_url: str, segment: FakeSegment
) -> None:
    """`wake()` after every submit, as the docs show, ends idle waits only: a relay told to
    wait by ``Retry-After`` waits, and one backing off backs off. It had retried a 429
    with ``Retry-After: 30`` a thousand times in 20 seconds."""
    with Lifecycle(db_url, create_schema=True) as store:
        store.submit_many(onboarding("acct_1"))
    segment.fail(429, times=1, retry_after="1")
    segment.fail(503, times=1)
    backoff = Backoff(base=0.4, cap=0.4)
    with relay_for(db_url, segment, backoff=backoff) as relay:
        relay.start()
        started = time.monotonic()
        while len(segment.first_arrivals()) < 4 and time.monotonic() - started < 10:
            relay.wake()
            time.sleep(0.005)
        took = time.monotonic() - started
        assert relay.error is None
    assert len(segment.first_arrivals()) == 4
    assert took >= 1.0 + 0.2  # Retry-After, then at least half the backoff
    assert len(segment.requests) == 3  # two failed attempts and one delivery, no more


#: An error body no JSON decoder in Python can read: it recurses past its limit.
TOO_DEEP_BODY = b"[" * 100_000


def test_an_error_body_too_deep_to_read_is_still_an_answer(
    db_url: str, segment: FakeSegment
) -> None:
    """The client library decodes an error answer's body to quote it; one nested past
    Python's recursion limit raised the error of a message too deep to write, and healthy
    events behind a 503 were parked as "too deep" (behind a 401, hundreds of them)."""
    with Lifecycle(db_url, create_schema=True) as store:
        stored = submit_history(store, accounts=2)
    segment.fail(503, times=3, body=TOO_DEEP_BODY)
    with relay_for(db_url, segment, batch_size=4) as relay:
        report = relay.run()
    assert (report.parked, report.failures) == (0, 3)
    assert report.requests == len(segment.requests)
    assert_delivered(segment, stored)
    with Lifecycle(db_url) as store:
        store.submit(msg("Account Created", "u1", "acct_late"))
    segment.fail(401, times=1, body=TOO_DEEP_BODY)
    with relay_for(db_url, segment) as relay:
        with pytest.raises(RelayError, match="HTTP 401"):
            relay.run()
        assert (relay.status().parked, relay.status().pending) == (0, 1)


def test_a_cycle_that_delivered_starts_the_failure_count_again(
    db_url: str, segment: FakeSegment
) -> None:
    """`--max-failures` counts failed attempts in a row: a cycle whose first request was
    delivered and second failed made progress. Such cycles, one after another, ended the
    relay ("gave up after 3 failed attempts in a row"), the backoff growing all along."""
    big = "x" * 25_000  # two requests a cycle: 20 of these are over 500 KB
    with Lifecycle(db_url, create_schema=True) as store:
        history = onboarding("acct_big")
        history += [msg("Signed In", "u1", "acct_big", padding=big) for _ in range(60)]
        store.submit_many(history)
    segment.alternate(503, times=12)
    with relay_for(db_url, segment, batch_size=20) as relay:
        report = relay.run(max_failures=3)
    assert report.failures >= 3
    assert report.delivered == len(history)
    assert segment.message_ids() == [m["messageId"] for m in history]


def test_a_cycle_that_parked_starts_the_failure_count_again(
    db_url: str, segment: FakeSegment, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Parking an event is progress too: cycles that each park an oversized event before
    their request fails are not failed attempts in a row, and `--max-failures` lets the
    relay go on to deliver the rest."""
    monkeypatch.setattr(envelope, "oversize", lambda message: None)  # the gate before
    history = onboarding("acct_p")
    big = [msg("Signed In", "u1", "acct_p", blob="x" * MAX_MESSAGE_BYTES) for _ in range(3)]
    with Lifecycle(db_url, create_schema=True) as store, relay_for(db_url, segment) as relay:
        store.submit_many(history[:2])
        assert relay.run().delivered == 2
        # Cycles of two: an event whose request fails, and an oversized one, parked unsent.
        later = [history[2], *big, history[3]]
        assert {v.verdict for v in store.submit_many(later)} == {"accepted"}
        segment.fail(503, times=3)
        relay.batch_size = 2
        report = relay.run(max_failures=3)
    assert (report.delivered, report.parked, report.failures) == (2, 3, 3)
    assert [m["messageId"] for m in segment.first_arrivals()] == [m["messageId"] for m in history]


def test_a_stop_ends_the_cycle_after_the_request_in_flight(
    db_url: str, segment: FakeSegment
) -> None:
    """A stop was looked at between cycles only: refused by a proxy that answers 400 to
    every request, slowly, a cycle bisected its 500 events in up to 999 requests before
    the relay stopped. The rest of the cycle now stays pending, in order."""
    with Lifecycle(db_url, create_schema=True) as store:
        stored = submit_history(store, accounts=3)
    segment.fail(400, times=1_000, delay=0.1)
    relay = relay_for(db_url, segment, batch_size=500)
    running = threading.Thread(target=relay.run)
    running.start()
    deadline = time.monotonic() + 10
    while not segment.requests and time.monotonic() < deadline:
        time.sleep(0.01)
    relay.stop()
    running.join(timeout=10)
    assert not running.is_alive()
    assert len(segment.requests) <= 2
    status = relay.status()
    assert status.pending + status.parked == len(stored.accepted)
    assert status.parked <= 1
    relay.close()


def test_retry_after_parses_seconds_and_dates() -> None:
    """Retry-After as delta-seconds or as an HTTP date."""

    class Answer:
        def __init__(self, value: str | None) -> None:
            self.headers = {"Retry-After": value} if value is not None else {}

    assert _retry_after(Answer("7")) == 7.0
    assert _retry_after(Answer(None)) is None
    assert _retry_after(Answer("soon")) is None
    past = format_datetime(datetime.now(UTC) - timedelta(hours=1), usegmt=True)
    for meaningless in ("nan", "inf", "-5", "0", past):  # no advice: the backoff stands
        assert _retry_after(Answer(meaningless)) is None  # (it was 0 s: "retry now")
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=20), usegmt=True)
    delay = _retry_after(Answer(when))
    assert delay is not None and 15 <= delay <= 21
    # A date in "-0000" (UTC, the zone unstated) reads as naive: still UTC, not an error.
    unzoned = format_datetime(datetime.now(UTC).replace(tzinfo=None) + timedelta(seconds=20))
    assert unzoned.endswith("-0000")
    delay = _retry_after(Answer(unzoned))
    assert delay is not None and 15 <= delay <= 21


def test_shards_split_the_accounts(db_url: str, segment: FakeSegment) -> None:
    """Relays for shard 0 and 1 of 2, side by side, deliver disjoint accounts and all events."""
    with Lifecycle(db_url, create_schema=True) as store:
        stored = submit_history(store, accounts=8)
    relays = [relay_for(db_url, segment, batch_size=5, shard=(i, 2)) for i in range(2)]
    per_shard = Counter(shard_of(a) % 2 for a, _ in stored.accepted.values())
    assert [relay.pending() for relay in relays] == [per_shard[0], per_shard[1]]
    threads = [threading.Thread(target=relay.run) for relay in relays]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    for relay in relays:
        relay.close()
    assert_delivered(segment, stored, duplicates=False)
    by_shard = [{a for a, _ in stored.accepted.values() if shard_of(a) % 2 == i} for i in range(2)]
    assert all(by_shard), "the history should cover both shards"
    for request in segment.requests:
        shards = {shard_of(m["context"]["groupId"]) % 2 for m in request.messages}
        assert len(shards) == 1, "a request mixed the shards"
    with pytest.raises(ValueError, match="shard 2 of 2"):
        relay_for(db_url, segment, shard=(2, 2))


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda r, s: r.backfill(batch_size=0), "batch_size must be at least 1, got 0"),
        (lambda r, s: r.prune(batch_size=0), "batch_size must be at least 1, got 0"),
        (lambda r, s: r.prune(older_than=timedelta(hours=-1)), "older_than cannot be negative"),
        (lambda r, s: s.retry_rejections(batch_size=-1), "batch_size must be at least 1, got -1"),
        (lambda r, s: r.run(max_failures=0), "max_failures must be at least 1"),
    ],
)
def test_maintenance_sizes_that_cannot_work_are_refused(
    tmp_path: Path, call: Any, error: str
) -> None:
    """backfill(batch_size=0) looped for ever, prune(batch_size=0) failed inside range(),
    and a negative older_than pruned what had just been delivered."""
    url = f"sqlite:///{tmp_path / 'm.db'}"
    with Lifecycle(url) as store, Relay(url, write_key="k") as relay:
        store.submit_many(onboarding("acct_1"))
        with pytest.raises(ValueError, match=f"^{error}"):
            call(relay, store)
        assert relay.status().pending == 4


@pytest.mark.parametrize(
    ("options", "error"),
    [
        (
            {"timeout": 0.0},
            r"timeout must be a number of seconds above 0 and at most 604800 \(a week\), got 0.0",
        ),
        ({"timeout": 1e300}, "timeout must be .* got 1e\\+300"),
        ({"poll_interval": float("nan")}, "poll_interval must be .* got nan"),
        ({"backoff": None, "cap": -1.0}, "Backoff.cap must be .* got -1.0"),
        ({"backoff": None, "base": float("inf")}, "Backoff.base must be .* got inf"),
        ({"backoff": None, "max_retry_after": 0.0}, "Backoff.max_retry_after must be .* got 0.0"),
    ],
)
def test_waits_that_are_not_positive_seconds_are_refused_up_front(
    tmp_path: Path, options: dict[str, Any], error: str
) -> None:
    """A zero or negative, infinite or NaN wait is refused when the relay is made: a negative
    backoff retried without pause, an infinite one never, and the HTTP client refused a zero
    timeout only at the first request, with a traceback."""
    with pytest.raises(ValueError, match=f"^{error}$"):
        if "backoff" in options:
            options.pop("backoff")
            Backoff(**options)
        else:
            Relay(f"sqlite:///{tmp_path / 'r.db'}", write_key="k", **options)


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"batch_size": 0}, "batch_size must be between 1 and 2500"),
        ({"batch_size": 2501}, "batch_size must be between 1 and 2500"),
        ({"shard": (-1, 2)}, "shard -1 of 2: expected 0 <= index < count"),
        ({"shard": (0, 0)}, "shard 0 of 0: expected 0 <= index < count"),
    ],
)
def test_batch_sizes_and_shards_out_of_range_are_refused_up_front(
    tmp_path: Path, options: dict[str, Any], error: str
) -> None:
    """Segment answers 200 to a batch of more than 2,500 events and drops the excess; a
    shard index below 0 matches no account, and its relay waited for ever."""
    with pytest.raises(ValueError, match=f"^{re.escape(error)}$"):
        Relay(f"sqlite:///{tmp_path / 'r.db'}", write_key="k", **options)
    with Relay(f"sqlite:///{tmp_path / 'r.db'}", write_key="k", batch_size=2500) as relay:
        assert relay.batch_size == 2500


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_a_shard_count_past_the_databases_integers_is_refused_up_front(db_url: str) -> None:
    """A shard count no database integer holds is refused when the relay is made, like a
    count of 0: SQLite's driver raised OverflowError at the first read instead, and
    `relay --shard 0/99999999999999999999` ended in a traceback, exit 70."""
    with Lifecycle(db_url, create_schema=True) as store:
        store.submit(msg("Account Created", "u1", "acct_a"))
    with pytest.raises(ValueError, match="shard"):
        Relay(db_url, write_key="k", host="http://127.0.0.1:9", shard=(0, 2**64)).close()
    done = subprocess.run(
        [sys.executable, "-m", "lifecycle", "relay", "--db", db_url, "--write-key", "k",
         "--host", "http://127.0.0.1:9", "--shard", f"0/{2**64}", "--max-failures", "1"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_missing_client_library_is_one_line(
    db_url: str, segment: FakeSegment, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without segment-analytics-python, running a relay says which extra to install."""
    monkeypatch.setitem(sys.modules, "segment.analytics", None)
    with relay_for(db_url, segment) as relay, pytest.raises(RelayError) as raised:
        relay.run()
    assert "pip install 'lifecycle[segment]'" in str(raised.value)
    assert "\n" not in str(raised.value)
