"""Lifecycle on a real database: append, de-duplicate, quarantine, transactions, concurrency."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import create_engine, delete, event, make_url, text
from sqlalchemy.exc import DBAPIError

from lifecycle import (
    DEFAULT_POLICY,
    ConcurrencyError,
    EventSpec,
    Gate,
    Guard,
    PolicyError,
    Refusal,
    StoreError,
)
from lifecycle.envelope import Event
from lifecycle.policy import Change
from lifecycle.reader import InputLine
from lifecycle.service import Lifecycle
from lifecycle.state import AccountState
from lifecycle.store.engine import create_engine as lifecycle_engine
from lifecycle.store.engine import unreachable
from lifecycle.store.schema import account_heads
from tests.policies import PAUSING
from tests.store.conftest import server_url
from tests.store.helpers import msg, onboarding
from tests.tcp_proxy import TcpProxy


@pytest.fixture
def store(db_url: str) -> Iterator[Lifecycle]:
    """A Lifecycle on a fresh, migrated database of the backend under test."""
    lc = Lifecycle(db_url, create_schema=True)
    yield lc
    lc.close()


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("foo://u:secret@host/db", "'foo://u:***@host/db': Can't load plugin"),
        ("postgresql+nodriver://u:secret@host/db", "'postgresql+nodriver://u:***@host/db'"),
        ("u:secret at host", "the database URL must look like sqlite:///FILE"),
    ],
)
def test_a_url_that_names_no_usable_database_is_a_store_error(url: str, shown: str) -> None:
    """A bad URL raises StoreError naming the forms that work, and never shows a password."""
    with pytest.raises(StoreError) as caught:
        Lifecycle(url)
    message = str(caught.value)
    assert message.startswith("cannot open the event store: ") and shown in message
    assert "postgresql://USER@HOST/DB" in message and "secret" not in message


def test_accepted_events_are_appended_in_order(store: Lifecycle) -> None:
    """Accepted events get contiguous versions per account and keep their payload."""
    history = onboarding("acct_1") + onboarding("acct_2")
    verdicts = store.submit_many(history)
    assert [v.verdict for v in verdicts] == ["accepted"] * 8
    stored = list(store.events())
    assert [(e.account, e.version) for e in stored] == [
        ("acct_1", 1), ("acct_1", 2), ("acct_1", 3), ("acct_1", 4),
        ("acct_2", 1), ("acct_2", 2), ("acct_2", 3), ("acct_2", 4),
    ]  # fmt: skip
    assert [orjson.loads(e.payload) for e in stored] == history
    assert [e.position for e in stored] == sorted(e.position for e in stored)


def test_occurred_at_is_the_event_timestamp_in_utc(store: Lifecycle) -> None:
    """``occurred_at`` holds the message's own timestamp as naive UTC, offsets and
    microseconds included; None when the message had no timestamp."""
    stamps = ["2024-03-01T10:00:00Z", "2024-03-01T12:30:15.123456+02:30", None, "2024-03-02T08:00"]
    history = onboarding("acct_1")
    for message, stamp in zip(history, stamps, strict=True):
        if stamp is not None:
            message["timestamp"] = stamp
    assert [v.verdict for v in store.submit_many(history)] == ["accepted"] * 4
    assert [e.occurred_at for e in store.events()] == [
        datetime(2024, 3, 1, 10, 0, 0),
        datetime(2024, 3, 1, 10, 0, 15, 123456),
        None,
        datetime(2024, 3, 2, 8, 0, 0),
    ]


def test_state_matches_the_in_memory_gate(store: Lifecycle) -> None:
    """The state read back from the store equals the gate's for the same input."""
    history = onboarding("acct_1") + [
        msg("Trial Ended", "u1", "acct_1"),
        msg("Signed Out", "u1", "acct_1"),
    ]
    gate = Gate()
    assert store.submit_many(history) == gate.submit_many(history)
    assert store.state("acct_1") == gate.state("acct_1")
    assert store.state("nope") is None
    assert [s.account for s in store.accounts(status="active")] == ["acct_1"]
    assert list(store.accounts(status="trial")) == []


def test_the_first_event_is_read_alone(db_url: str) -> None:
    """`first_event()`: None for an empty store, then the event at the lowest position,
    as `events()` gives it first (read as one row: a streamed read of the whole table made
    MariaDB's driver read every remaining row to close it)."""
    with Lifecycle(db_url, create_schema=True) as store:
        assert store.first_event() is None
        store.submit_many(onboarding("acct_2") + onboarding("acct_1"))
        first = store.first_event()
        assert first == next(iter(store.events()))
        assert first is not None and (first.account, first.version) == ("acct_2", 1)


def test_duplicates_are_recognised_across_instances(db_url: str) -> None:
    """A messageId stored by one Lifecycle is a duplicate for another one on the same database."""
    first = Lifecycle(db_url, create_schema=True)
    second = Lifecycle(db_url)
    created = msg("Account Created", "u1", "acct_1", mid="same")
    assert first.submit(created).verdict == "accepted"
    assert second.submit(created).verdict == "duplicate"
    assert len(list(second.events())) == 1
    first.close()
    second.close()


def test_a_state_another_instance_moved_on_is_read_again(db_url: str) -> None:
    """Each Lifecycle keeps the heads it wrote, but trusts one only while the stored head
    has its version: an account another instance has moved on since is read again, so a
    user it signed up may sign in here."""
    with Lifecycle(db_url, create_schema=True) as first, Lifecycle(db_url) as second:
        assert first.submit(msg("Account Created", "u1", "acct_1")).accepted
        assert second.submit(msg("Signed Up", "u1", "acct_1")).accepted
        signed_in = first.submit(msg("Signed In", "u1", "acct_1"))
        assert (signed_in.verdict, signed_in.code) == ("accepted", None)
        assert [e.version for e in first.events("acct_1")] == [1, 2, 3]
        assert first.state("acct_1") == second.state("acct_1")


def test_rejections_are_quarantined_with_their_raw_bytes(store: Lifecycle) -> None:
    """Rejected and malformed input is kept, raw bytes included; nothing is appended for it."""
    bad_utf8 = b'{"event": "Signed In", "userId": "\xff"}'
    verdicts = store.submit_line(bad_utf8)
    assert verdicts[0].code == "malformed_json"
    orphan = msg("Signed In", "u1", "acct_9", mid="orphan")
    assert store.submit(orphan).code == "account_unknown"
    rows = list(store.rejections())
    assert [r.code for r in rows] == ["malformed_json", "account_unknown"]
    assert rows[0].raw == bad_utf8
    assert orjson.loads(rows[1].raw) == orphan
    assert rows[1].account == "acct_9" and rows[1].message_id == "orphan"
    assert rows[1].event == "Signed In" and rows[1].source == "api"
    assert next(iter(store.rejections(code="account_unknown"))).message_id == "orphan"
    assert list(store.events()) == []


def test_keys_the_store_cannot_hold_are_quarantined_not_a_database_error(
    store: Lifecycle,
) -> None:
    """A user, account or messageId over 255 characters or with a NUL is rejected as
    invalid_key, in a batch whose other messages are stored; its quarantine row keeps it
    in ``raw`` only (PostgreSQL and MariaDB would refuse it in the 255-character key
    columns, PostgreSQL any NUL), a reason quoting a NUL writes it out, and a source path
    too long for its column keeps its end."""
    account = "acct_" + "x" * 300
    batch = [
        msg("Account Created", "u1", account, mid="m" * 300),
        *onboarding("acct_1"),
        msg("Signed In", "u" * 256, "acct_1"),
        msg("Signed In", "u1", "acct_1", mid="n" * 256),
        msg("Signed In", "u1", "acct_1", mid="n\0"),
        msg("Signed In", "u\0", "acct\x001", mid="o"),
        msg("Signed In", "", "acct\x001", mid="p"),  # missing_user, quoting the account
    ]
    source = "/imports/" + "deep/" * 300 + "history.jsonl"
    lines = [InputLine(source, n, orjson.dumps(m) + b"\n") for n, m in enumerate(batch, 1)]
    verdicts = [v for _, v in store.submit_lines(lines)]
    assert [(v.code, v.field) for v in verdicts] == [
        ("invalid_key", "context.groupId"),
        *[(None, None)] * 4,
        ("invalid_key", "userId"),
        ("invalid_key", "messageId"),
        ("invalid_key", "messageId"),
        ("invalid_key", "userId"),
        ("missing_user", "userId"),
    ]
    assert [e.account for e in store.events()] == ["acct_1"] * 4
    rows = list(store.rejections())
    assert [(r.line, r.code, r.account, r.message_id) for r in rows] == [
        (1, "invalid_key", None, None),
        (6, "invalid_key", "acct_1", batch[5]["messageId"]),
        (7, "invalid_key", "acct_1", None),
        (8, "invalid_key", "acct_1", None),
        (9, "invalid_key", None, "o"),
        (10, "missing_user", None, "p"),
    ]
    assert rows[5].reason == (
        "Signed In for acct\\u00001: neither userId nor anonymousId is a non-empty string"
    )
    assert [orjson.loads(r.raw) for r in rows] == batch[:1] + batch[5:]
    assert {len(r.source) for r in rows} == {1024}
    assert all(r.source.startswith("…") and r.source.endswith("/deep/history.jsonl") for r in rows)
    # The same lines again quarantine nothing twice: the digest is of the whole source.
    store.submit_lines(lines)
    assert len(list(store.rejections())) == 6
    # Reading such a key answers "none" (PostgreSQL would refuse a NUL in the query).
    for key in ("acct\x001", account):
        assert store.state(key) is None and store.load(key) is None
        assert list(store.events(account=key)) == list(store.rejections(account=key)) == []


def test_a_source_name_that_just_fits_its_column_is_kept_whole(store: Lifecycle) -> None:
    """A path of exactly as many characters as the quarantine's source column holds is
    kept as given; one character more keeps its end behind an ellipsis."""
    orphan = orjson.dumps(msg("Signed In", "u1", "acct_9")) + b"\n"
    fits = "/imports/" + "d" * (1024 - len("/imports/") - len("/h.jsonl")) + "/h.jsonl"
    longer = "/" + fits
    assert len(fits) == 1024
    store.submit_lines([InputLine(fits, 1, orphan), InputLine(longer, 1, orphan)])
    assert [r.source for r in store.rejections()] == [fits, "…" + longer[-1023:]]


def test_identical_items_of_one_batch_line_are_each_quarantined(store: Lifecycle) -> None:
    """Two items of a batch line with the same bytes are two messages, each at its own place
    in the line: each is quarantined, and judging the file again adds neither a second time."""
    orphan = msg("Signed In", "u1", "acct_9", mid="")
    line = InputLine("in.jsonl", 1, orjson.dumps({"batch": [orphan, orphan]}) + b"\n")
    for _ in range(2):
        assert [v.code for _, v in store.submit_lines([line])] == ["account_unknown"] * 2
        assert [(r.line, r.batch_index) for r in store.rejections()] == [(1, 0), (1, 1)]


def test_a_file_given_twice_in_one_submission_keeps_its_rejections(store: Lifecycle) -> None:
    """The lines of one file twice in one submission, before the quarantine holds any of
    them: the second copy of a rejected line gets the first copy's rejection, not a verdict
    against the state the first reading went on to build (its user signed up by then)."""
    history = [
        msg("Account Created", "u1", "acct_1"),
        msg("Signed In", "u1", "acct_1", mid="early"),
        msg("Signed Up", "u1", "acct_1"),
    ]
    lines = [InputLine("f.jsonl", n, orjson.dumps(m) + b"\n") for n, m in enumerate(history, 1)]
    verdicts = [v for _, v in store.submit_lines(lines + lines)]
    assert [(v.verdict, v.code) for v in verdicts[3:]] == [
        ("duplicate", None),
        ("rejected", "user_unknown"),
        ("duplicate", None),
    ]
    assert [e.event for e in store.events()] == ["Account Created", "Signed Up"]
    assert [r.message_id for r in store.rejections()] == ["early"]


def test_a_file_judged_again_gets_the_verdicts_it_got_the_first_time(store: Lifecycle) -> None:
    """A rejected line of a file judged again comes back as the same rejection: the same
    code, reason and field at fault, and the same messageId, event and account named."""
    lines = [
        InputLine("f.jsonl", 1, b'{"event": "Signed In"\n'),
        InputLine("f.jsonl", 2, orjson.dumps(msg("Signed In", "u1", "acct_9")) + b"\n"),
    ]

    def shown(verdicts: list[Any]) -> list[tuple[Any, ...]]:
        return [
            (v.verdict, v.code, v.reason, v.field, v.message_id, v.event_name, v.account)
            for _, v in verdicts
        ]

    first = shown(store.submit_lines(lines))
    assert [(code, field) for _, code, _, field, *_ in first] == [
        ("malformed_json", "line"),
        ("account_unknown", None),
    ]
    store.submit(msg("Account Created", "u1", "acct_9"))
    assert shown(store.submit_lines(lines)) == first
    assert len(list(store.rejections())) == 2


def test_a_line_judged_again_names_the_field_at_fault_again(store: Lifecycle) -> None:
    """An envelope error names the field at fault; the same line of the same file judged
    again is given the rejection it got the first time, which names that field too (it
    came back without one: the quarantine keeps no field)."""
    dated = {**msg("Account Created", "u1", "acct_1"), "timestamp": "yesterday"}
    lines = [InputLine("f.jsonl", 1, orjson.dumps(dated) + b"\n")]
    first = [(v.code, v.field) for _, v in store.submit_lines(lines)]
    assert first == [("invalid_timestamp", "timestamp")]
    assert [(v.code, v.field) for _, v in store.submit_lines(lines)] == first
    # A file given twice in one submission: its second copy repeats the first verdict.
    twice = [InputLine("g.jsonl", 1, lines[0].raw)] * 2
    assert [(v.code, v.field) for _, v in store.submit_lines(twice)] == first * 2


def test_a_rejected_line_is_quarantined_without_its_line_ending(store: Lifecycle) -> None:
    """The quarantine keeps a line's bytes without its ending, a Windows one (CRLF)
    included, whether the line is a message or not JSON at all."""
    orphan = orjson.dumps(msg("Signed In", "u1", "acct_9"))
    broken = b'{"event": "Signed In"'
    lines = [InputLine("in.jsonl", 1, orphan + b"\r\n"), InputLine("in.jsonl", 2, broken + b"\r\n")]
    assert [v.code for _, v in store.submit_lines(lines)] == ["account_unknown", "malformed_json"]
    assert [r.raw for r in store.rejections()] == [orphan, broken]


def test_a_message_that_cannot_be_json_is_quarantined_not_raised(store: Lifecycle) -> None:
    """From Python, a message orjson cannot write (a set, a lone surrogate) is
    malformed_json, quarantined as its repr, and the rest of the batch is stored; a
    line holding a lone surrogate is malformed_json too, kept as the bytes it stands for."""
    bad_set = {**msg("Account Created", "u1", "acct_2"), "properties": {"tags": {"a"}}}
    surrogate = msg("Account Created", "\ud800", "acct_3")
    verdicts = store.submit_many([bad_set, *onboarding("acct_1"), surrogate])
    assert [(v.code, v.reason) for v in verdicts] == [
        ("malformed_json", "cannot be written as JSON (Type is not JSON serializable: set)"),
        *[(None, None)] * 4,
        (
            "malformed_json",
            "cannot be written as JSON (str is not valid UTF-8: surrogates not allowed)",
        ),
    ]
    (line_verdict,) = store.submit_line(orjson.dumps(msg("Signed In", "u1", "acct_1"))
                                        .decode().replace("u1", "\ud800"))  # fmt: skip
    assert line_verdict.code == "malformed_json"
    assert [e.account for e in store.events()] == ["acct_1"] * 4
    rows = list(store.rejections())
    assert [r.raw for r in rows[:2]] == [
        repr(bad_set).encode(),
        repr(surrogate).encode("utf-8", "backslashreplace"),
    ]
    assert b"\xed\xa0\x80" in rows[2].raw


def test_a_message_that_is_not_an_object_is_a_verdict_not_a_crash(store: Lifecycle) -> None:
    """A request body passed on as it came (null, an array, a number) is malformed_json and
    quarantined as its JSON, in the store as in the gate (it was an AttributeError); a
    string or a dict given as the list of a submit_many is a TypeError (its characters or
    keys had been judged)."""
    wrong: list[Any] = [None, [1, 2], 5]
    expected = [
        ("malformed_json", f"not a JSON object (got {kind})")
        for kind in ("null", "an array", "a number")
    ]
    assert [(v.code, v.reason) for v in store.submit_many(wrong)] == expected
    assert [(v.code, v.reason) for v in map(Gate().submit, wrong)] == expected
    assert store.submit(None).code == "malformed_json"
    # Not JSON at all: named by its type, the same in both, and kept as its repr.
    odd: list[Any] = [Onboarded(), {"a"}]
    assert [v.reason for v in store.submit_many(odd)] == [v.reason for v in map(Gate().submit, odd)]
    assert [v.reason for v in Gate().submit_many(odd)] == [
        "not a JSON object (got a Onboarded)",
        "not a JSON object (got a set)",
    ]
    assert [r.raw for r in store.rejections()] == [
        b"null",
        b"[1,2]",
        b"5",
        b"null",
        b"Onboarded(event='Account Created')",
        b"{'a'}",
    ]
    # An empty batch holds nothing: the gate's verdict, and nothing to quarantine.
    assert store.submit('{"batch": []}').reason == Gate().submit('{"batch": []}').reason
    for target in (store, Gate()):
        for given in ("abc", b"abc", bytearray(b"ab"), msg("Account Created", "u1", "acct_1")):
            with pytest.raises(TypeError, match="submit_many takes an iterable of messages"):
                target.submit_many(given)  # type: ignore[arg-type]
    assert list(store.events()) == [] and len(list(store.rejections())) == 6


def test_a_batch_object_given_as_a_dict_is_a_batch(store: Lifecycle) -> None:
    """`submit({"batch": [...]})` was judged as one message, with no event: `ignored`, and
    nothing stored, where the same object as JSON text stored every item. Both are
    batches now, in the store and in the gate; an empty one says what is wrong."""
    items = onboarding("acct_1")[:2]
    batch = {"batch": items, "context": {"ip": "10.0.0.1"}}
    gate = Gate()
    assert gate.submit(batch).verdict == "accepted"
    assert store.submit(batch).verdict == "accepted"
    assert [e.message_id for e in store.events()] == [m["messageId"] for m in items]
    assert store.state("acct_1") == gate.state("acct_1")
    assert [orjson.loads(e.payload)["context"]["ip"] for e in store.events()] == ["10.0.0.1"] * 2
    # Its items are judged as given, as the gate judges them: a datetime is no timestamp
    # (turned into JSON text first, it had become one, and been accepted).
    dated = {"batch": [{**msg("Signed In", "acct_1-u0", "acct_1"), "timestamp": datetime.now(UTC)}]}
    assert store.submit(dated).code == gate.submit(dated).code == "invalid_timestamp"
    for empty in ({"batch": []}, '{"batch": []}'):
        for target in (store, Gate()):
            verdict = target.submit(empty)
            assert (verdict.code, verdict.reason) == (
                "malformed_json",
                "batch is an empty array: it holds no message to judge",
            )


def test_integers_past_64_bits_are_stored_as_sent(store: Lifecycle) -> None:
    """JSON allows any integer; the gate accepts a message with one past 64 bits, and the
    store refused it as `malformed_json` ("Integer exceeds 64-bit range"), the encoder's
    limit. It is stored as sent."""
    message = {**msg("Account Created", "u1", "acct_1"), "properties": {"big": 2**64 + 1}}
    assert store.submit(message).verdict == Gate().submit(message).verdict == "accepted"
    (event,) = store.events()
    assert orjson.loads(event.payload.replace("18446744073709551617", "0"))["properties"] == {
        "big": 0
    }
    assert '"big":18446744073709551617' in event.payload


@dataclass
class Onboarded:
    """Not a mapping: orjson would write it as an object, but it is no message."""

    event: str = "Account Created"


def test_messages_nested_too_deep_are_quarantined_not_raised(store: Lifecycle) -> None:
    """A message nested past 128 levels is malformed_json on every path into the store: a
    dict (below and beyond the encoder's own limit, and one that contains itself), a line,
    and a batch item, which the store could not write back as JSON and had stopped the
    whole submission with a TypeError; the other messages are stored."""
    too_deep = "nested more than 128 levels of objects and arrays deep"

    def nested(depth: int) -> Any:
        value: Any = 1
        for _ in range(depth):
            value = [value]
        return value

    cyclic = msg("Signed In", "u1", "acct_1")
    cyclic["properties"]["self"] = cyclic
    dicts = [msg("Signed In", "u1", "acct_1", x=nested(d)) for d in (127, 300, 5000)]
    verdicts = store.submit_many([*onboarding("acct_1"), *dicts, cyclic])
    assert [(v.code, v.reason) for v in verdicts[4:]] == [("malformed_json", too_deep)] * 4
    deep_item = json.dumps(msg("Signed In", "u1", "acct_1", x=nested(300))).encode()
    line = (
        b'{"batch": [' + deep_item + b", " + orjson.dumps(msg("Signed Out", "u1", "acct_1")) + b"]}"
    )
    assert [v.code for v in store.submit_line(line)] == ["malformed_json", None]
    assert [e.event for e in store.events()] == [m["event"] for m in onboarding("acct_1")] + [
        "Signed Out"
    ]
    rows = list(store.rejections())
    assert [r.reason for r in rows] == [too_deep] * 5
    assert rows[0].raw == orjson.dumps(dicts[0])
    assert b"'messageId': 'm-" in rows[2].raw and rows[2].raw.count(b"[") >= 127


def test_a_policy_whose_guard_raises_stores_nothing_of_the_submission(db_url: str) -> None:
    """A guard that raises fails the whole submission with a PolicyError: nothing of it is
    appended, queued or quarantined, and the store takes the next submission."""

    def buggy(state: AccountState, event: Event) -> str | None:
        return None if event.properties["username"] else "a username"

    policy = DEFAULT_POLICY.with_guard("Signed In", Guard("has_username", "no_username", buggy))
    with Lifecycle(db_url, create_schema=True, policy=policy) as store:
        history = onboarding("acct_1")
        with pytest.raises(PolicyError, match="guard 'has_username' raised KeyError"):
            store.submit_many([*history[:2], msg("Account Created", "u1", "acct_2"), history[2]])
        assert list(store.events()) == list(store.rejections()) == []
        with store.engine.connect() as connection:
            assert connection.execute(text("SELECT COUNT(*) FROM outbox")).scalar() == 0
        assert [v.verdict for v in store.submit_many(history[:2])] == ["accepted"] * 2


def test_a_store_in_a_state_the_policy_lacks_is_a_policy_error(db_url: str) -> None:
    """Judging against an account whose stored status the policy does not have (the store
    was written under another policy) is a PolicyError naming the account and the state,
    and stores nothing; it was a KeyError traceback, exit 1 from the command line."""
    with Lifecycle(db_url, create_schema=True, policy=PAUSING) as writer:
        paused = [msg("Account Created", "u1", "acct_1"), msg("Account Paused", "u1", "acct_1")]
        writer.submit_many(paused)
    error = "account acct_1 is in state 'paused', which policy 'b2b-saas' does not have: the"
    with Lifecycle(db_url) as store:
        with pytest.raises(PolicyError, match=f"^{re.escape(error)} store was written under"):
            store.submit_many([*onboarding("acct_2"), msg("Signed Up", "u1", "acct_1")])
        assert [e.account for e in store.events()] == ["acct_1"] * 2
        assert list(store.rejections()) == []


def test_the_first_submission_after_a_server_restart_succeeds(db_url: str, backend: str) -> None:
    """Connections pooled before a server restart are dead; the next submission gets a new
    one instead of failing with "the connection is lost" (one failure per pooled connection
    before the engine pinged them)."""
    if backend == "sqlite":
        pytest.skip("a database file has no connection to lose")
    url = make_url(db_url)
    assert url.host is not None and url.port is not None
    with TcpProxy(url.host, url.port) as proxy:
        through = url.set(host="127.0.0.1", port=proxy.port).render_as_string(False)
        with Lifecycle(through, create_schema=True) as store:
            history = onboarding("acct_1")
            assert store.submit(history[0]).accepted
            proxy.cut()
            proxy.restore()
            assert [v.verdict for v in store.submit_many(history[1:])] == ["accepted"] * 3
            assert store.state("acct_1") is not None


def test_messages_over_4_mib_are_quarantined_with_their_first_4_mib(store: Lifecycle) -> None:
    """A message over 4 MiB, or a line over 4 MiB that is not JSON (lines joined by a lost
    newline), is malformed_json; the quarantine keeps its first 4 MiB and the rest of the
    input is stored. On MariaDB a 20 MiB line had failed the whole ingest ("packet bigger
    than max_allowed_packet"), on every run, at the same line."""
    limit = 4 << 20
    history = onboarding("acct_1")
    big = msg("Signed In", "u1", "acct_1", blob="x" * (5 << 20))
    garbage = b"\x00garbage" * (2 << 20)  # 20 MiB
    raws = [orjson.dumps(history[0]), garbage, orjson.dumps(big), orjson.dumps(history[1])]
    lines = [InputLine("big.jsonl", n, raw + b"\n") for n, raw in enumerate(raws, 1)]
    verdicts = [v for _, v in store.submit_lines(lines)]
    assert [v.code for v in verdicts] == [None, "malformed_json", "malformed_json", None]
    assert verdicts[2].reason == (
        f"the message is {len(raws[2]):,} bytes, more than the {limit:,} (4 MiB) a message"
        f" may have; the quarantine keeps its first {limit:,} of {len(raws[2]):,} bytes"
    )
    from_python = {**big, "messageId": "from-python"}
    (verdict,) = store.submit_many([from_python])
    assert verdict.code == "malformed_json" and verdict.reason is not None
    assert verdict.reason.startswith(f"the message is {len(orjson.dumps(from_python)):,} bytes")
    assert [e.event for e in store.events()] == ["Account Created", "Signed Up"]
    rows = list(store.rejections())
    assert [(r.line, len(r.raw)) for r in rows] == [(2, limit), (3, limit), (None, limit)]
    assert rows[0].raw == garbage[:limit] and rows[1].raw == raws[2][:limit]


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"max_attempts": 0}, "max_attempts must be at least 1, got 0"),
        (
            {"snapshot_every": 0},
            r"snapshot_every must be at least 1 \(or None: no snapshots\), got 0",
        ),
        ({"snapshot_every": -5}, r"snapshot_every must be at least 1 .*, got -5"),
    ],
)
def test_settings_that_cannot_work_are_refused_up_front(
    tmp_path: Path, options: dict[str, Any], error: str
) -> None:
    """max_attempts=0 made every submission a ConcurrencyError; snapshot_every of 0 or less
    took no snapshot, silently. Both are refused when the store is made."""
    with pytest.raises(ValueError, match=f"^{error}$"):
        Lifecycle(f"sqlite:///{tmp_path / 's.db'}", **options)
    assert not (tmp_path / "s.db").exists()


def test_arguments_of_the_wrong_kind_are_type_errors_that_name_them(tmp_path: Path) -> None:
    """``policy=None`` was taken and failed at the first message with an AttributeError
    about None; ``state(None)`` failed inside a length check, ``audit(None)`` inside the
    audit. Each is now a TypeError naming the argument, before anything is opened."""
    path = tmp_path / "s.db"
    for make in (lambda: Gate(None), lambda: Lifecycle(f"sqlite:///{path}", policy=None)):  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=r"^policy must be a lifecycle Policy, got None$"):
            make()
    assert not path.exists()
    with Lifecycle(f"sqlite:///{path}") as store:
        with pytest.raises(TypeError, match=r"^account must be a string .*, got None$"):
            store.state(None)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=r"^policy must be a lifecycle Policy, got None$"):
            list(store.audit(None))  # type: ignore[arg-type]


def test_an_sqlite_store_commits_to_disk_before_it_answers(tmp_path: Path) -> None:
    """``synchronous=NORMAL`` left a commit in the WAL unsynced: a power loss could take
    back events the relay had already sent to Segment, and the store would then accept a
    second ``Account Created``. Every connection of the store's, reading or writing, syncs
    each commit (FULL), in WAL mode, with foreign keys on."""
    with Lifecycle(f"sqlite:///{tmp_path / 's.db'}") as store:
        for begin in (store.engine.connect, store.engine.begin):
            with begin() as connection:
                settings = [
                    connection.exec_driver_sql(f"PRAGMA {name}").scalar()
                    for name in ("synchronous", "journal_mode", "foreign_keys")
                ]
                assert settings == [2, "wal", 1]


def test_an_sqlite_file_that_cannot_be_opened_is_named(tmp_path: Path) -> None:
    """The error said "unable to open database file" without saying which."""
    url = f"sqlite:///{tmp_path / 'no such directory' / 's.db'}"
    with pytest.raises(StoreError) as caught:
        Lifecycle(url)
    assert str(caught.value) == (
        f"cannot open the event store: {url!r}: unable to open database file"
    )


@pytest.mark.slow
def test_an_sqlite_store_another_process_holds_fails_after_the_busy_timeout(
    tmp_path: Path,
) -> None:
    """docs/operations.md: SQLite writers wait, with a 30 s busy timeout. Opening a store
    whose file another connection holds exclusively (``locking_mode=EXCLUSIVE``, a
    rollback-journal writer, a VACUUM) waited far longer: ``PRAGMA journal_mode=WAL`` is
    retried 100 times, each time through Python's own 5 s busy handler, about 8 minutes
    before "database is locked" (every command, `accounts list` included, hung that long).
    """
    import sqlite3

    path = tmp_path / "s.db"
    Lifecycle(f"sqlite:///{path}").close()
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("PRAGMA locking_mode=EXCLUSIVE")
    holder.execute("BEGIN EXCLUSIVE")
    holder.execute("SELECT count(*) FROM events").fetchone()
    released = threading.Lock()

    def release() -> None:  # once: by the timer, should opening hang, or when it failed
        if released.acquire(blocking=False):
            holder.execute("COMMIT")
            holder.close()

    timer = threading.Timer(55, release)
    timer.start()
    started = time.monotonic()
    try:
        with pytest.raises(StoreError, match="database is locked"):
            Lifecycle(f"sqlite:///{path}").close()
        assert time.monotonic() - started < 45
    finally:
        timer.cancel()
        timer.join()
        release()


def test_an_in_memory_store_used_from_another_thread_says_why_it_cannot_be() -> None:
    """An in-memory SQLite database lives in its thread's connection: another thread
    found an empty database (or, creating the schema, a store apart) and its events were
    lost to the first; now it is refused with the reason, and the first thread goes on."""
    with Lifecycle("sqlite://", create_schema=True) as store:
        assert store.submit(msg("Account Created", "u1", "acct_1")).accepted
        errors: list[BaseException] = []

        def other_thread() -> None:
            try:
                store.submit(msg("Signed Up", "u1", "acct_1"))
            except StoreError as exc:
                errors.append(exc)

        thread = threading.Thread(target=other_thread)
        thread.start()
        thread.join()
        assert [str(e) for e in errors] == [
            "an in-memory SQLite database (sqlite://) belongs to the thread that opened it; "
            "to use the store from several threads, give it a file (sqlite:///FILE)"
        ]
        assert store.submit(msg("Signed Up", "u1", "acct_1")).accepted
        assert len(list(store.events())) == 2


@pytest.mark.parametrize("memory", [True, False], ids=["in memory", "file"])
def test_a_store_takes_submissions_while_its_reads_are_iterated(
    memory: bool, tmp_path: Path
) -> None:
    """An in-memory database is one connection: submitting while iterating its accounts,
    events, rejections, audit or verify began a transaction on the connection the read
    still held, and SQLite refused it ("cannot start a transaction within a transaction")."""
    url = "sqlite://" if memory else f"sqlite:///{tmp_path / 'store.db'}"
    with Lifecycle(url, create_schema=True) as store:
        for n in range(3):
            store.submit(msg("Account Created", "u1", f"acct_{n}"))
        store.submit(msg("Signed Out", "u1", "acct_0"))  # quarantined: not_signed_in
        with store.engine.begin() as connection:  # a head to tell apart from the replay
            connection.execute(delete(account_heads).where(account_heads.c.account == "acct_1"))
        refusing = Guard("refused", "refused", lambda state, event: "nothing")
        strict = DEFAULT_POLICY.with_guard("Account Created", refusing)
        readers = {
            "accounts": lambda: (s.account for s in store.accounts()),
            "events": lambda: (e.account for e in store.events()),
            "rejections": lambda: (r.account for r in store.rejections()),
            "audit": lambda: (f.account for f in store.audit(strict)),
            "verify": lambda: (d.account for d in store.verify()),
        }
        seen: dict[str, list[object]] = {}
        for name, read in readers.items():
            seen[name] = []
            for account in read():
                seen[name].append(account)
                assert store.submit(msg("Account Created", "u1", f"{name}_{len(seen[name])}"))
        # Each read saw what was stored when it began, and every submission was stored.
        created = ["acct_0", "acct_1", "acct_2", "accounts_1", "accounts_2"]
        assert seen == {
            "accounts": ["acct_0", "acct_2"],  # acct_1 has no head
            "events": created,
            "rejections": ["acct_0"],
            "audit": [*created, *(f"events_{n}" for n in range(1, 6)), "rejections_1"],
            "verify": ["acct_1"],
        }
        assert store.count_events() == 3 + 2 + 5 + 1 + 11 + 1


def _connection_id(store: Lifecycle) -> object:
    """Which connection the store's pool hands out: the server's session id, or the object."""
    with store.engine.connect() as connection:
        name = connection.dialect.name
        if name == "sqlite":
            return id(connection.connection.driver_connection)
        query = "SELECT pg_backend_pid()" if name == "postgresql" else "SELECT CONNECTION_ID()"
        return connection.execute(text(query)).scalar_one()


def _forked_child(store: Lifecycle, prefix: str, results: Any) -> None:
    failed = 0
    for n in range(50):
        try:
            store.submit(msg("Account Created", "u1", f"{prefix}-{n}", mid=f"{prefix}-{n}"))
        except Exception:
            failed += 1
    results.put((_connection_id(store), failed))


def test_processes_forked_after_the_store_was_made_open_their_own_connections(
    db_url: str,
) -> None:
    """A store made before a fork (a preloaded web server, a task queue's pool) hands each
    child a connection of its own. The children had used the parent's pooled connection,
    all at once: on PostgreSQL, submissions failed with "unexpected result EMPTY_QUERY from
    command 'BEGIN'", and one process's statements could land in another's transaction."""
    with Lifecycle(db_url, create_schema=True) as store:
        assert store.submit(msg("Account Created", "u1", "parent")).accepted
        parent = _connection_id(store)
        context = multiprocessing.get_context("fork")
        results = context.Queue()
        children = [
            context.Process(target=_forked_child, args=(store, f"child{n}", results))
            for n in range(3)
        ]
        for child in children:
            child.start()
        outcomes = [results.get(timeout=60) for _ in children]
        for child in children:
            child.join()
        assert [failed for _, failed in outcomes] == [0, 0, 0]
        assert parent not in {connection for connection, _ in outcomes}
        assert store.submit(msg("Signed Up", "u1", "parent", mid="parent-2")).accepted
        assert _connection_id(store) == parent
        assert len(list(store.accounts())) == 151


def test_keys_differing_in_case_accents_or_trailing_spaces_are_distinct(
    store: Lifecycle,
) -> None:
    """Every backend tells keys apart byte for byte, as the in-memory gate does (MariaDB's
    default collation took ``Acme``, ``acme``, ``acme `` and ``acmé`` for one account)."""
    names = ["Acme", "acme", "acme ", "acmé", "ACME"]
    history = [
        m
        for n, name in enumerate(names)
        for m in (
            msg("Account Created", "u1", name, mid=f"M{n}" if n % 2 else f"m{n}"),
            msg("Signed Up", "U1" if n % 2 else "u1", name, mid=f"m{n}-" + "x " * (n % 2)),
        )
    ]
    history.append(msg("Signed In", "u1", "acme", mid="M1"))  # a duplicate of acme's, in case
    verdicts = store.submit_many(history)
    assert verdicts == Gate().submit_many(history)
    assert [v.verdict for v in verdicts] == ["accepted"] * 10 + ["duplicate"]
    assert sorted(s.account for s in store.accounts()) == sorted(names)
    assert {n: sorted(store.state(n).users) for n in names} == {  # type: ignore[union-attr]
        n: ["U1" if i % 2 else "u1"] for i, n in enumerate(names)
    }
    assert [e.account for e in store.events(account="acme")] == ["acme", "acme"]


def test_a_rejected_message_id_may_be_sent_again(store: Lifecycle) -> None:
    """A messageId that was only rejected is judged afresh when it comes back."""
    early = msg("Signed In", "u1", "acct_1", mid="early")
    assert store.submit(early).code == "account_unknown"
    store.submit_many([msg("Account Created", "u1", "acct_1"), msg("Signed Up", "u1", "acct_1")])
    assert store.submit(early).verdict == "accepted"


def test_caller_transaction_rollback_stores_nothing(store: Lifecycle) -> None:
    """Inside the application's transaction, a rollback undoes the append and the quarantine."""
    with store.engine.connect() as connection:
        transaction = connection.begin()
        verdicts = store.submit_many(onboarding("acct_1") + [msg("Signed Out", "u2", "acct_1")],
                                     connection=connection)  # fmt: skip
        assert [v.verdict for v in verdicts][-1] == "rejected"
        assert store.state("acct_1", connection=connection).version == 4  # type: ignore[union-attr]
        transaction.rollback()
    assert list(store.events()) == []
    assert list(store.rejections()) == []
    assert store.state("acct_1") is None


def test_caller_transaction_commit_stores_everything(store: Lifecycle) -> None:
    """Inside the application's transaction, the append lands when the application commits."""
    with store.engine.begin() as connection:
        store.submit_many(onboarding("acct_1"), connection=connection)
    assert store.state("acct_1").version == 4  # type: ignore[union-attr]


def test_store_transaction_commits_several_submissions_together(store: Lifecycle) -> None:
    """`Lifecycle.transaction()`: later submissions see earlier ones; all land at the end."""
    with store.transaction() as connection:
        store.submit_many(onboarding("acct_1"), connection=connection)
        assert store.submit(msg("Signed Out", "u1", "acct_1"), connection=connection).accepted
        with store.engine.connect() as other:  # not committed yet: invisible elsewhere
            assert store.state("acct_1", connection=other) is None
    assert store.state("acct_1").version == 5  # type: ignore[union-attr]
    assert store.submit(msg("Signed In", "u1", "acct_1")).accepted  # the committed state


def test_store_transaction_writes_each_head_once_at_the_end(store: Lifecycle) -> None:
    """Heads are written when the block ends, as the gate's states; inside it, the
    states in memory are served on its connection."""
    history = (
        onboarding("acct_1") + onboarding("acct_2", "u2") + [msg("Signed Out", "u1", "acct_1")]
    )
    with store.transaction() as connection:
        for message in history:
            store.submit(message, connection=connection)
        heads = connection.execute(text("SELECT count(*) FROM account_heads")).scalar_one()
        assert heads == 0
        assert store.state("acct_1", connection=connection).version == 5  # type: ignore[union-attr]
    gate = Gate()
    gate.submit_many(history)
    assert [store.state(a) for a in ("acct_1", "acct_2")] == [
        gate.state("acct_1"),
        gate.state("acct_2"),
    ]
    with store.engine.connect() as connection:
        stamps = dict(
            connection.execute(text("SELECT account, updated_at FROM account_heads")).all()
        )
    last = {e.account: e.recorded_at for e in store.events()}
    assert {a: _naive(t) for a, t in stamps.items()} == {a: _naive(t) for a, t in last.items()}


def test_a_writer_racing_a_store_transaction_waits_for_it(db_url: str) -> None:
    """A writer appending to an account that an open store transaction moved waits for
    it, then is judged on the state it committed (heads included), with no version lost."""
    store = Lifecycle(db_url, create_schema=True)
    other = Lifecycle(db_url)
    store.submit_many(onboarding("acct_1"))
    verdicts: list[str | None] = []
    racer = threading.Thread(
        target=lambda: verdicts.append(other.submit(msg("Signed Out", "u1", "acct_1")).code)
    )
    with store.transaction() as connection:
        assert store.submit(msg("Signed Out", "u1", "acct_1"), connection=connection).accepted
        racer.start()
        racer.join(0.5)
        assert racer.is_alive(), "the racing writer did not wait for the transaction"
    racer.join(60)
    assert verdicts == ["not_signed_in"]
    assert [e.version for e in store.events("acct_1")] == [1, 2, 3, 4, 5]
    assert store.state("acct_1") == other.state("acct_1")
    assert store.submit(msg("Signed In", "u1", "acct_1")).accepted
    store.close()
    other.close()


@pytest.mark.parametrize("backend", ["postgres", "mariadb"], indirect=True)
def test_crossing_store_transactions_end_one_with_a_deadlock_error(db_url: str) -> None:
    """Two store transactions that each wait for an account the other moved: one gets
    ``ConcurrencyError(deadlock=True)`` at once and stores nothing; the other commits."""
    store = Lifecycle(db_url, create_schema=True)
    store.submit_many(onboarding("acct_x") + onboarding("acct_y", "u2"))
    both_moved = threading.Barrier(2)
    errors: list[ConcurrencyError] = []

    def writer(first: str, user_1: str, then: str, user_2: str) -> None:
        try:
            with store.transaction() as connection:
                store.submit(msg("Signed Out", user_1, first), connection=connection)
                both_moved.wait(10)
                store.submit(msg("Signed Out", user_2, then), connection=connection)
        except ConcurrencyError as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=writer, args=("acct_x", "u1", "acct_y", "u2")),
        threading.Thread(target=writer, args=("acct_y", "u2", "acct_x", "u1")),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert [e.deadlock for e in errors] == [True]
    assert "deadlock" in str(errors[0])
    # The loser's submission was its second, on the account the winner had moved first.
    assert errors[0].accounts in {("acct_x",), ("acct_y",)}
    assert str(errors[0]).startswith(f"account {errors[0].account!r}: ")
    # The winner's two events are stored, the loser's none: one Signed Out per account.
    stored = [(e.account, e.event) for e in store.events() if e.version == 5]
    assert sorted(stored) == [("acct_x", "Signed Out"), ("acct_y", "Signed Out")]
    assert [store.state(a).version for a in ("acct_x", "acct_y")] == [5, 5]  # type: ignore[union-attr]
    store.close()


@pytest.mark.parametrize("backend", ["mariadb"], indirect=True)
def test_a_block_that_goes_on_after_a_deadlock_rolled_it_back_stores_nothing(db_url: str) -> None:
    """MariaDB rolls back the whole transaction of a deadlock's loser. A block that caught
    the error and went on had its next submission stored, and at its end the heads of
    the rolled-back events: ``Trial Ended`` was then accepted for a trial never stored.
    Now whatever follows in the block, and the block's end, raise the deadlock again."""
    store = Lifecycle(db_url, create_schema=True)
    store.submit_many(onboarding("acct_x")[:3] + onboarding("acct_y", "u2")[:3])
    store.submit_many(onboarding("acct_z", "u3")[:3])
    both_moved = threading.Barrier(2)
    after: list[type[BaseException]] = []
    ended: list[type[BaseException]] = []

    def writer(first: str, user_1: str, then: str, user_2: str) -> None:
        trial = onboarding(first, user_1)[3]
        try:
            with store.transaction() as connection:
                store.submit(trial, connection=connection)
                both_moved.wait(10)
                try:
                    store.submit(msg("Signed Out", user_2, then), connection=connection)
                except ConcurrencyError:
                    try:
                        store.submit(msg("Signed Out", "u3", "acct_z"), connection=connection)
                    except ConcurrencyError as exc:
                        after.append(type(exc))
        except ConcurrencyError as exc:
            ended.append(type(exc))

    threads = [
        threading.Thread(target=writer, args=("acct_x", "u1", "acct_y", "u2")),
        threading.Thread(target=writer, args=("acct_y", "u2", "acct_x", "u1")),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert after == [ConcurrencyError] and ended == [ConcurrencyError]
    assert list(store.verify()) == []
    trials = {e.account for e in store.events() if e.event == "Trial Started"}
    assert len(trials) == 1 and store.state("acct_z").version == 3  # type: ignore[union-attr]
    for account, user in (("acct_x", "u1"), ("acct_y", "u2")):
        ended_trial = store.submit(msg("Trial Ended", user, account))
        assert ended_trial.accepted == (account in trials)
    store.close()


@pytest.mark.parametrize("recipe", [False, True], ids=["as made", "with the recipe"])
def test_an_sqlite_engine_of_the_application_rolls_back_with_it(
    tmp_path: Path, recipe: bool
) -> None:
    """Python's sqlite3 sends no BEGIN of its own before a SAVEPOINT: on an engine the
    application made, a submission into its transaction was stored though it rolled
    back, and a store transaction that raised kept its events (with a stale head). An
    engine that already sends BEGIN itself (SQLAlchemy's recipe) is left to do so."""
    engine = create_engine(f"sqlite:///{tmp_path / 'app.db'}")
    if recipe:

        @event.listens_for(engine, "connect")
        def _connect(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None

        @event.listens_for(engine, "begin")
        def _begin(connection: Any) -> None:
            connection.exec_driver_sql("BEGIN")

    with engine.begin() as connection:  # the application's own table, before the store
        connection.execute(text("CREATE TABLE orders (id INTEGER PRIMARY KEY)"))
    store = Lifecycle(engine)
    with engine.connect() as connection:
        transaction = connection.begin()
        connection.execute(text("INSERT INTO orders VALUES (1)"))
        store.submit_many(onboarding("acct_1"), connection=connection)
        transaction.rollback()
    with pytest.raises(RuntimeError), store.transaction() as connection:
        store.submit_many(onboarding("acct_1"), connection=connection)
        raise RuntimeError("the import failed")
    assert list(store.events()) == [] and store.state("acct_1") is None
    with engine.begin() as connection:
        assert connection.execute(text("SELECT count(*) FROM orders")).scalar_one() == 0
        store.submit_many(onboarding("acct_1"), connection=connection)
    assert store.state("acct_1").version == 4  # type: ignore[union-attr]
    assert list(store.verify()) == []
    store.close()
    engine.dispose()


def test_an_autocommit_engine_of_the_application_still_gets_transactions(db_url: str) -> None:
    """On an engine made AUTOCOMMIT each statement committed on its own: a store
    transaction that raised kept its events, and PostgreSQL refused a submission's
    SAVEPOINT. The store's own connections now run at the dialect's default level."""
    engine = lifecycle_engine(db_url, isolation_level="AUTOCOMMIT")
    store = Lifecycle(engine, create_schema=True)
    with pytest.raises(RuntimeError), store.transaction() as connection:
        store.submit_many(onboarding("acct_1"), connection=connection)
        raise RuntimeError("the import failed")
    assert list(store.events()) == [] and store.state("acct_1") is None
    assert all(v.accepted for v in store.submit_many(onboarding("acct_1")))
    assert [e.version for e in store.events("acct_1")] == [1, 2, 3, 4]
    assert list(store.verify()) == []
    with engine.connect() as connection:  # the application's connections keep their mode
        connection.execute(text("CREATE TABLE orders (id INTEGER)"))
        connection.execute(text("INSERT INTO orders VALUES (1)"))  # not committed by hand
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM orders")).scalar_one() == 1
        assert connection.execute(text("SELECT count(*) FROM outbox")).scalar_one() == 4
    store.close()
    engine.dispose()


@pytest.mark.parametrize("backend", ["mariadb"], indirect=True)
@pytest.mark.parametrize("mode", ["autocommit", "server default"])
def test_an_application_mariadb_engine_sees_the_winner_of_a_race(db_url: str, mode: str) -> None:
    """On an engine of the application's at REPEATABLE READ (the server's default, and
    what an AUTOCOMMIT engine had been given), a submission in a store transaction that
    lost a race re-read the same stale head on every retry: a ConcurrencyError."""
    url = make_url(db_url).set(drivername="mariadb+pymysql")
    if mode == "autocommit":
        engine = create_engine(url, isolation_level="AUTOCOMMIT")
    else:
        engine = create_engine(url)
    other = Lifecycle(db_url, create_schema=True)
    other.submit_many(onboarding("acct_1") + onboarding("acct_2"))
    store = Lifecycle(engine)
    with store.transaction() as connection:
        assert store.submit(msg("Signed Out", "u1", "acct_2"), connection=connection).accepted
        assert other.submit(msg("Signed Out", "u1", "acct_1")).accepted  # commits meanwhile
        added = msg("Account Added User", "u1", "acct_1", role="Owner")
        assert store.submit(added, connection=connection).accepted
    assert [e.event for e in store.events("acct_1")][-2:] == ["Signed Out", "Account Added User"]
    store.close()
    other.close()
    engine.dispose()


def _naive(moment: datetime | str) -> datetime:
    """A stored instant as a naive datetime (SQLite returns text for raw queries)."""
    return moment if isinstance(moment, datetime) else datetime.fromisoformat(moment)


def test_store_transaction_rolls_back_whole_and_forgets_its_states(store: Lifecycle) -> None:
    """An exception in the block stores nothing, and no state of it is served afterwards."""
    with pytest.raises(RuntimeError), store.transaction() as connection:
        store.submit_many(onboarding("acct_1"), connection=connection)
        raise RuntimeError("the import failed")
    assert list(store.events()) == []
    assert store.state("acct_1") is None
    # The same version numbers are written again by other events: the rolled-back
    # states must not be taken for the new ones.
    store.submit_many([msg("Account Created", "u9", "acct_1"), msg("Signed Up", "u9", "acct_1")])
    state = store.state("acct_1")
    assert state is not None and set(state.users) == {"u9"}
    assert store.submit(msg("Signed In", "u9", "acct_1")).accepted
    assert store.submit(msg("Signed In", "u1", "acct_1")).code == "user_unknown"


def test_store_transaction_retries_a_refused_submission_in_its_savepoint(store: Lifecycle) -> None:
    """A stored messageId met inside a store transaction is a duplicate; the rest still lands."""
    first = onboarding("acct_1")
    store.submit_many(first)
    with store.transaction() as connection:
        again = store.submit_many(first + onboarding("acct_2"), connection=connection)
    assert [v.verdict for v in again] == ["duplicate"] * 4 + ["accepted"] * 4
    assert store.state("acct_2").version == 4  # type: ignore[union-attr]


def test_committing_the_connection_of_a_store_transaction_never_parts_events_from_heads(
    store: Lifecycle,
) -> None:
    """A store transaction writes its head rows when its block ends. An application that
    committed the block's connection itself (SQLAlchemy's "commit as you go") committed
    the events without their heads: the head stayed behind the events, and every later
    submission to the account, from any writer, ended in ConcurrencyError (the next
    version taken) until the head row was deleted by hand."""
    store.submit_many(onboarding("acct_1"))
    ended = pytest.raises(StoreError, match="was ended on its connection")
    with ended, store.transaction() as connection:
        assert store.submit(msg("Signed Out", "u1", "acct_1"), connection=connection).accepted
        connection.commit()
    assert [e.version for e in store.events("acct_1")] == [1, 2, 3, 4, 5]  # committed
    assert list(store.verify()) == []
    assert store.submit(msg("Trial Ended", "u1", "acct_1", trial_plan_name="Pro")).accepted
    with Lifecycle(store.engine) as other:
        assert other.submit(msg("Account Added User", "u1", "acct_1", role="Owner")).accepted


def test_rolling_back_the_connection_of_a_store_transaction_keeps_nothing_of_it(
    store: Lifecycle,
) -> None:
    """An application that rolled back the block's connection itself: the block's end went
    on as though it had committed. On SQLite it wrote the heads of the rolled-back events
    (the head ahead of the events: the account's next event was stored as version 6, with
    no 5); on PostgreSQL and MariaDB the shared cache took the rolled-back states, and once
    another writer stored a version 5 of its own, submissions were judged on a state the
    events never gave (a legal Signed Out rejected as not_signed_in)."""
    store.submit_many(onboarding("acct_1"))
    ended = pytest.raises(StoreError, match="was ended on its connection")
    with ended, store.transaction() as connection:
        assert store.submit(msg("Signed Out", "u1", "acct_1"), connection=connection).accepted
        connection.rollback()
    assert [e.version for e in store.events("acct_1")] == [1, 2, 3, 4]  # nothing kept
    with Lifecycle(store.engine) as other:  # another writer stores a version 5 of its own
        assert other.submit(msg("Account Added User", "u1", "acct_1", role="Owner")).accepted
    assert list(store.verify()) == []
    assert store.submit(msg("Signed Out", "u1", "acct_1")).accepted  # u1 is signed in
    assert [e.version for e in store.events("acct_1")] == [1, 2, 3, 4, 5, 6]


def test_failed_write_rolls_back_the_whole_batch(store: Lifecycle) -> None:
    """When the database fails mid-batch, no event of the batch is stored."""
    with store.engine.begin() as connection:
        connection.execute(text("DROP TABLE quarantine"))
    batch = onboarding("acct_1") + [msg("Signed In", "nobody", "acct_1")]
    with pytest.raises(StoreError):
        store.submit_many(batch)
    assert list(store.events()) == []
    assert store.state("acct_1") is None


def test_failed_bulk_write_raises_store_error(store: Lifecycle) -> None:
    """A failing driver-level bulk write (COPY on PostgreSQL) is a StoreError, rolled back."""
    with store.engine.begin() as connection:
        connection.execute(text("DROP TABLE outbox"))
    with pytest.raises(StoreError, match="outbox"):
        store.submit_many(onboarding("acct_1"))
    assert list(store.events()) == []


class _PolicyBug(Exception):
    """Raised by a policy effect: stands for any failure while a submission is judged."""


def _explode(state: AccountState, event: Event) -> Change:
    raise _PolicyBug(f"cannot apply {event.name}")


#: A policy whose "Audit Failed" event raises inside its effect, after other events of the
#: same submission were judged (and, on PostgreSQL, already streamed into the COPY).
_BUGGY = DEFAULT_POLICY.extend(
    name="buggy",
    events=[EventSpec("Audit Failed", {})],
    transitions=[
        {"trigger": "Audit Failed", "source": "trial", "dest": "trial", "after": ["explode"]}
    ],
    effects={"explode": _explode},
    refusals={"Audit Failed": Refusal("no_audit", "audits run during a trial")},
)


def test_a_failure_while_judging_propagates_and_stores_nothing(db_url: str) -> None:
    """An exception raised mid-batch is the caller's to see (a PolicyError naming the effect,
    with the exception as its cause); the batch is not half-written."""
    with Lifecycle(db_url, policy=_BUGGY, create_schema=True) as store:
        batch = onboarding("acct_1") + [msg("Audit Failed", "u1", "acct_1")] + onboarding("acct_2")
        with pytest.raises(PolicyError, match=r"^effect _explode raised _PolicyBug: ") as raised:
            store.submit_many(batch)
        assert isinstance(raised.value.__cause__, _PolicyBug)
        assert list(store.events()) == []
        assert list(store.rejections()) == []
        # The connection is usable again: the same accounts start cleanly.
        verdicts = store.submit_many(onboarding("acct_1") + onboarding("acct_2"))
        assert [v.verdict for v in verdicts] == ["accepted"] * 8
        assert [e.version for e in store.events()] == [1, 2, 3, 4] * 2


def test_unreachable_database_raises_store_error() -> None:
    """A database that cannot be reached raises StoreError, a LifecycleError."""
    with pytest.raises(StoreError, match="cannot open"):
        Lifecycle("postgresql://nobody@127.0.0.1:1/none", create_schema=True)


def test_a_pool_with_no_connection_to_spare_is_a_store_error(db_url: str) -> None:
    """Every connection of the pool in use (threads sharing one store, a read being
    iterated) and none freed within the pool's timeout: SQLAlchemy's own TimeoutError came
    out of submit, state and transaction, not a StoreError (a LifecycleError)."""
    Lifecycle(db_url, create_schema=True).close()
    engine = lifecycle_engine(db_url, pool_size=1, max_overflow=0, pool_timeout=0.2)
    store = Lifecycle(engine)
    store.submit_many(onboarding("acct_1"))
    reading = store.events()
    try:
        assert next(reading).version == 1  # holds the pool's one connection
        with pytest.raises(StoreError):
            store.submit(msg("Signed Out", "u1", "acct_1"))
        with pytest.raises(StoreError):
            store.state("acct_1")
        with pytest.raises(StoreError), store.transaction():
            pass
    finally:
        reading.close()
    assert store.submit(msg("Signed Out", "u1", "acct_1")).accepted
    store.close()
    engine.dispose()


@pytest.mark.parametrize("backend", ["postgres", "mariadb"], indirect=True)
def test_a_store_transaction_that_lost_its_connection_goes_on_raising_store_errors(
    db_url: str,
) -> None:
    """The connection of a store transaction lost (a server restart) and the StoreError
    caught: the block's later submissions and its end raised SQLAlchemy's
    PendingRollbackError ("Can't reconnect until invalid transaction is rolled back"),
    which is no LifecycleError. They are StoreErrors, and nothing of the block is stored."""
    Lifecycle(db_url, create_schema=True).close()
    url = make_url(db_url)
    assert url.host is not None and url.port is not None
    with TcpProxy(url.host, url.port) as proxy:
        through = url.set(host="127.0.0.1", port=proxy.port).render_as_string(False)
        with Lifecycle(through) as store:
            store.submit_many(onboarding("acct_1"))
            with pytest.raises(StoreError), store.transaction() as connection:
                assert store.submit(msg("Signed Out", "u1", "acct_1"), connection=connection)
                proxy.cut()
                proxy.restore()
                with pytest.raises(StoreError, match="connection to the database was lost"):
                    store.submit(msg("Signed In", "u1", "acct_1"), connection=connection)
                with pytest.raises(StoreError):
                    store.submit(msg("Trial Ended", "u1", "acct_1"), connection=connection)
                with pytest.raises(StoreError):
                    store.state("acct_1", connection=connection)
            assert [e.version for e in store.events("acct_1")] == [1, 2, 3, 4]
            assert list(store.verify()) == []


def test_lost_heads_are_rebuilt_from_events(store: Lifecycle) -> None:
    """Deleting the account heads changes nothing: the state is replayed from the events."""
    store.submit_many(onboarding("acct_1"))
    before = store.state("acct_1")
    with store.engine.begin() as connection:
        connection.execute(text("DELETE FROM account_heads"))
    assert store.state("acct_1") == before
    assert store.submit(msg("Trial Ended", "u1", "acct_1")).verdict == "accepted"
    assert store.state("acct_1").version == 5  # type: ignore[union-attr]


@pytest.mark.parametrize("resent", [True, False], ids=["a resent event", "a rejected one"])
def test_a_lost_head_is_written_again_by_a_submission_that_moves_nothing(
    store: Lifecycle, resent: bool
) -> None:
    """An account rebuilt from its events gets its head row back even when the submission
    that found it missing adds no event to it: the listing of accounts, which reads the
    heads, shows it again, and verify finds nothing missing."""
    history = onboarding("acct_1")
    store.submit_many(history)
    with store.engine.begin() as connection:
        connection.execute(text("DELETE FROM account_heads"))
    again = history[-1] if resent else msg("Signed In", "stranger", "acct_1")
    assert store.submit(again).verdict == ("duplicate" if resent else "rejected")
    assert [(s.account, s.version) for s in store.accounts()] == [("acct_1", 4)]
    assert list(store.verify()) == []


@pytest.mark.parametrize("resent", [True, False], ids=["a resent event", "a rejected one"])
def test_lost_heads_of_accounts_with_a_snapshot_at_their_version(db_url: str, resent: bool) -> None:
    """An account whose head row is lost and whose latest snapshot is at its version: a
    submission that adds no event to it rebuilt the head and wrote that snapshot again,
    which its primary key refused; taken for a lost race, every such submission ended in
    ConcurrencyError, though no one else was writing."""
    history = onboarding("acct_1")
    with Lifecycle(db_url, create_schema=True, snapshot_every=2) as store:
        store.submit_many(history)
        with store.engine.begin() as connection:
            connection.execute(text("DELETE FROM account_heads"))
    with Lifecycle(db_url, snapshot_every=2) as store:  # no cached heads either
        again = history[-1] if resent else msg("Signed In", "stranger", "acct_1")
        assert store.submit(again).verdict == ("duplicate" if resent else "rejected")
        assert store.state("acct_1") is not None
        assert store.state("acct_1").version == 4  # type: ignore[union-attr]
        assert store.submit(msg("Trial Ended", "u1", "acct_1")).verdict == "accepted"


def test_concurrent_writer_forces_a_re_decision(db_url: str) -> None:
    """A writer that loses the race re-reads the account and decides again."""
    setup = Lifecycle(db_url, create_schema=True)
    setup.submit_many([msg("Account Created", "u1", "acct_1")])
    winner, loser = Lifecycle(db_url), Lifecycle(db_url)
    results: list[str | None] = []
    with winner.engine.connect() as connection:
        transaction = connection.begin()
        assert winner.submit(msg("Signed Up", "u1", "acct_1"), connection=connection).accepted

        def race() -> None:
            results.append(loser.submit(msg("Signed Up", "u1", "acct_1")).code)

        thread = threading.Thread(target=race)
        thread.start()
        time.sleep(0.5)
        transaction.commit()
    thread.join(30)
    assert results == ["user_already_signed_up"]
    assert [e.version for e in setup.events("acct_1")] == [1, 2]
    for lc in (setup, winner, loser):
        lc.close()


@pytest.mark.parametrize("backend", ["postgres", "mariadb"], indirect=True)
def test_retries_are_bounded(db_url: str) -> None:
    """When every attempt loses the race, ConcurrencyError names the account."""
    setup = Lifecycle(db_url, create_schema=True)
    setup.submit(msg("Account Created", "u1", "acct_1"))
    winner, loser = Lifecycle(db_url), Lifecycle(db_url, max_attempts=1)
    errors: list[BaseException] = []
    with winner.engine.connect() as connection:
        transaction = connection.begin()
        winner.submit(msg("Signed Up", "u1", "acct_1"), connection=connection)

        def race() -> None:
            try:
                loser.submit(msg("Signed Up", "u2", "acct_1"))
            except ConcurrencyError as exc:
                errors.append(exc)

        thread = threading.Thread(target=race)
        thread.start()
        time.sleep(0.5)
        transaction.commit()
    thread.join(30)
    assert len(errors) == 1 and "acct_1" in str(errors[0])
    for lc in (setup, winner, loser):
        lc.close()


def test_a_resent_message_is_a_duplicate_whatever_max_attempts_says(db_url: str) -> None:
    """Judging a submission again carefully (a stored messageId met on the unique index, or
    a rejection that a stored messageId explains) is how duplicates are found, not a lost
    race. It was counted as one of ``max_attempts``: with ``max_attempts=1`` every resent
    message (Segment's retries, an at-least-once queue) raised ConcurrencyError, "another
    writer appended concurrently", with no other writer about."""
    history = onboarding("acct_1")
    with Lifecycle(db_url, create_schema=True) as store:
        store.submit_many(history)
    with Lifecycle(db_url, max_attempts=1) as store:
        # Rejected as a rule (u1 is signed up already), which the stored messageId explains.
        assert store.submit(history[1]).verdict == "duplicate"
    with Lifecycle(db_url, max_attempts=1) as store:
        # Accepted again (signing in twice is legal): the messageId index refuses it.
        assert store.submit(history[2]).verdict == "duplicate"


def test_submissions_from_async_code_on_threads(store: Lifecycle) -> None:
    """The documented way from asyncio: many concurrent ``asyncio.to_thread`` submissions
    store every account's history exactly."""

    async def main() -> list[list[str]]:
        async def account(n: int) -> list[str]:
            history = onboarding(f"acct_{n}")
            return [(await asyncio.to_thread(store.submit, m)).verdict for m in history]

        return await asyncio.gather(*(account(n) for n in range(12)))

    assert asyncio.run(main()) == [["accepted"] * 4] * 12
    assert sorted(s.account for s in store.accounts() if s.version == 4) == sorted(
        f"acct_{n}" for n in range(12)
    )


def test_shared_between_threads(store: Lifecycle) -> None:
    """One Lifecycle used from several threads stores every account's history exactly."""

    def work(n: int) -> None:
        for i in range(n, 40, 4):
            store.submit_many(onboarding(f"acct_{i}"))

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    states = list(store.accounts())
    assert len(states) == 40
    assert all(s.status == "trial" and s.version == 4 for s in states)


def test_a_closed_store_refuses_to_be_used(db_url: str) -> None:
    """After ``close()`` every use raises StoreError, saying so. A closed store had opened a
    new pool on its next use: it went on working, holding connections its owner believed
    released."""
    store = Lifecycle(db_url, create_schema=True)
    assert store.submit(msg("Account Created", "u1", "acct_1")).accepted
    store.close()
    for use in (
        lambda: store.submit(msg("Signed Up", "u1", "acct_1")),
        lambda: store.state("acct_1"),
        lambda: list(store.events()),
        lambda: store.transaction().__enter__(),
    ):
        with pytest.raises(StoreError, match="was closed"):
            use()
    with Lifecycle(db_url) as again:
        assert [e.event for e in again.events()] == ["Account Created"]


@pytest.mark.postgres
def test_a_value_the_driver_refuses_is_no_outage() -> None:
    """psycopg refuses a NUL in text before the server answers (no SQLSTATE): that is
    a bad value, which every retry would meet again, not a database to wait for; a
    refused connection, also without SQLSTATE, is one."""
    engine = lifecycle_engine(server_url("postgres"))
    try:
        with engine.connect() as connection, pytest.raises(DBAPIError) as bad_value:
            connection.execute(text("SELECT CAST(:t AS text)"), {"t": "a\0b"})
        assert bad_value.value.orig.sqlstate is None  # type: ignore[union-attr]
        assert not unreachable(bad_value.value)
    finally:
        engine.dispose()
    refused = lifecycle_engine("postgresql://nobody@127.0.0.1:1/none")
    with pytest.raises(DBAPIError) as no_server:
        refused.connect()
    assert unreachable(no_server.value)


def test_a_key_with_a_lone_surrogate_names_nothing_stored(store: Lifecycle) -> None:
    """No stored row holds a lone surrogate (a message with one is `malformed_json`), so
    a look-up by one finds nothing, as one by a key with a NUL does (``is_storable_key``:
    a key the store cannot hold "must not reach a query"). A surrogate reached the
    driver, which cannot encode it: every read raised UnicodeEncodeError, not even a
    StoreError (an id from ``sys.argv`` or a file name keeps undecodable bytes so)."""
    store.submit_many(
        [msg("Account Created", "u1", "caf\u00e9"), msg("Signed Out", "u1", "caf\u00e9")]
    )
    key = "caf\udce9"
    assert store.state(key) is None
    assert store.load(key) is None
    assert list(store.events(account=key)) == []
    assert list(store.rejections(account=key)) == []
    assert list(store.rejections(code=key)) == []
    assert list(store.accounts(status=key)) == []
    assert list(store.replay(accounts=[key])) == []
    assert store.retry_rejections(account=key).accepted == 0
