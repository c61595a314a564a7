"""Replay, time travel, snapshots, verify, audit and quarantine retry on a real database."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, func, make_url, select, update

from lifecycle import DEFAULT_POLICY, STRING, EventSpec, Gate, Guard, PolicyError, StoreError
from lifecycle import replay as history
from lifecycle.envelope import Event
from lifecycle.policy import Change
from lifecycle.reader import InputLine
from lifecycle.service import Lifecycle
from lifecycle.state import LARGE_ACCOUNT, AccountState, TrialState
from lifecycle.store.schema import account_heads, events, snapshots
from tests.store.helpers import account_history, interleave, msg, onboarding, wipe
from tests.store.test_store_properties import streams

SETTINGS = settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture
def store(db_url: str) -> Iterator[Lifecycle]:
    """A Lifecycle snapshotting every 5 events, on a fresh database."""
    lc = Lifecycle(db_url, create_schema=True, snapshot_every=5)
    yield lc
    lc.close()


@SETTINGS
@given(stream=streams())
def test_replay_equals_live_state(store: Lifecycle, stream: list[dict[str, Any]]) -> None:
    """A replay from the events alone gives every account the state the live path keeps."""
    wipe(store)
    store.submit_many(stream)
    assert list(store.replay()) == list(store.accounts())
    assert list(store.verify()) == []


def test_a_replay_of_more_accounts_than_a_query_may_name(store: Lifecycle) -> None:
    """Every account was one parameter of one query: past 65,535 PostgreSQL refused it
    ("number of parameters must be between 0 and 65535"), past 32,766 SQLite. An account
    named twice is replayed once; one the store cannot hold is none."""
    store.submit_many(interleave([account_history(f"acct_{n}") for n in range(3)], seed=5))
    live = {s.account: s for s in store.accounts()}
    names = [f"absent_{n}" for n in range(70_000)]
    names[12_345], names[45_678], names[69_999] = "acct_0", "acct_2", "acct_0"
    names[3] = "a\x00b"  # no account has it: PostgreSQL refused the query ("NUL")
    assert {s.account: s for s in store.replay(accounts=names)} == {
        "acct_0": live["acct_0"],
        "acct_2": live["acct_2"],
    }
    as_of = datetime.now(UTC) + timedelta(days=1)
    assert [s.account for s in store.replay(accounts=names, as_of=as_of)] == ["acct_0", "acct_2"]


def test_the_last_account_of_each_query_is_replayed(store: Lifecycle) -> None:
    """The accounts named are replayed in queries of a bounded number of names each: the
    last name of one query and the first of the next are both replayed."""
    store.submit_many(onboarding("acct_0") + onboarding("acct_1"))
    names = [f"absent_{n}" for n in range(10_001)]
    names[9_999], names[10_000] = "acct_0", "acct_1"
    assert [s.account for s in store.replay(accounts=names)] == ["acct_0", "acct_1"]


def _stamp_trial(state: AccountState, event: Event) -> Change:
    """An effect that reads what the envelope derives: the parsed instant and the key."""
    stamp = f"{event.occurred.isoformat() if event.occurred else None} {event.message_id!r}"
    return state.users, TrialState(plan_name=stamp)


def test_an_effect_sees_the_same_event_live_and_in_a_replay(db_url: str) -> None:
    """A replay built its events by hand: ``occurred`` was None where the live path had the
    timestamp parsed, and a messageId that is not a string (live: no key) was kept. An
    effect reading them made replay, snapshots and verify disagree with the live state."""
    policy = DEFAULT_POLICY.extend(name="stamped", effects={"start_trial": _stamp_trial})
    with Lifecycle(db_url, create_schema=True, policy=policy, snapshot_every=1) as store:
        started = msg("Trial Started", "u1", "acct_1", mid="")
        started["timestamp"], started["messageId"] = "2024-01-01T10:00:00+02:00", 42
        untimed = msg("Trial Started", "u1", "acct_2", mid="trial-2")
        for message in (started, untimed):
            created = msg("Account Created", "u1", message["context"]["groupId"])
            assert [v.accepted for v in store.submit_many([created, message])] == [True, True]
        live = [store.state(account) for account in ("acct_1", "acct_2")]
        assert [s.trial.plan_name for s in live if s and s.trial] == [
            "2024-01-01T10:00:00+02:00 None",
            "None 'trial-2'",
        ]
        assert list(store.replay()) == live
        assert [store.load(account) for account in ("acct_1", "acct_2")] == live
        assert list(store.verify()) == []


def _stamp_sign_up(state: AccountState, event: Event) -> Change:
    """``sign_up``, noting the event's name as sent and its key in the trial's plan name."""
    users, _ = DEFAULT_POLICY.effects["sign_up"](state, event)
    return users, TrialState(plan_name=f"{event.sent_name} {event.message_id!r}")


def test_a_replay_gives_an_effect_the_name_as_sent_and_no_empty_key(db_url: str) -> None:
    """An event sent under an alias (``User Signed Up``) with an empty messageId: live, an
    effect sees the name as sent and no key; a replay must build the same event, not the
    canonical name nor an empty key."""
    policy = DEFAULT_POLICY.extend(name="sent", effects={"sign_up": _stamp_sign_up})
    with Lifecycle(db_url, create_schema=True, policy=policy) as store:
        signed_up = {**msg("Signed Up", "u1", "acct_1"), "event": "User Signed Up"}
        signed_up["messageId"] = ""
        verdicts = store.submit_many([msg("Account Created", "u1", "acct_1"), signed_up])
        assert [v.accepted for v in verdicts] == [True, True]
        live = store.state("acct_1")
        assert live is not None and live.trial is not None
        assert live.trial.plan_name == "User Signed Up None"
        assert list(store.replay()) == [live]
        assert store.load("acct_1") == live
        assert list(store.verify()) == []


@SETTINGS
@given(stream=streams(), every=st.integers(1, 12), drop=st.booleans())
def test_snapshot_plus_tail_equals_full_replay(
    db_url: str, stream: list[dict[str, Any]], every: int, drop: bool
) -> None:
    """For any history and N, snapshot + tail == full replay, with or without snapshots."""
    with Lifecycle(db_url, create_schema=True, snapshot_every=every) as store:
        wipe(store)
        for start in range(0, len(stream), 4):
            store.submit_many(stream[start : start + 4])
        if drop:
            with store.engine.begin() as connection:
                connection.execute(delete(snapshots))
        full = {s.account: s for s in store.replay()}
        assert {a: store.load(a) for a in full} == full


def test_snapshots_are_taken_every_n_events(store: Lifecycle) -> None:
    """An account's versions that pass a multiple of N get a snapshot of its state then."""
    for message in account_history("acct_1"):
        store.submit(message)
    with store.engine.connect() as connection:
        rows = connection.execute(select(snapshots.c.version, snapshots.c.policy)).all()
    assert [v for v, _ in rows] == list(range(5, store.state("acct_1").version + 1, 5))  # type: ignore[union-attr]
    assert {p for _, p in rows} == {DEFAULT_POLICY.fingerprint}


def test_a_new_account_gets_a_snapshot_at_its_first_version_when_n_is_1(db_url: str) -> None:
    """With N = 1 every version is snapshotted, the first one too: an account that had no
    version before the submission counts from 0, so its version 1 passes a multiple of N."""
    with Lifecycle(db_url, create_schema=True, snapshot_every=1) as store:
        store.submit(msg("Account Created", "u1", "acct_1"))
        store.submit_many(
            [msg("Account Created", "u1", "acct_2"), msg("Signed Up", "u1", "acct_2")]
        )
        with store.engine.connect() as connection:
            rows = connection.execute(select(snapshots.c.account, snapshots.c.version)).all()
    assert sorted(rows) == [("acct_1", 1), ("acct_2", 2)]


def test_snapshot_of_another_policy_is_ignored(db_url: str) -> None:
    """A snapshot made under another policy is never trusted, even when it lies."""
    other = DEFAULT_POLICY.extend(name="other", events=[EventSpec("Noted", {"note": STRING})],
                                  transitions=[{"trigger": "Noted", "source": ["created", "trial",
                                                "active"], "dest": None}])  # fmt: skip
    history = account_history("acct_1")
    with Lifecycle(db_url, create_schema=True, policy=other, snapshot_every=3) as writer:
        writer.submit_many(history[:12])
        with writer.engine.begin() as connection:
            connection.execute(update(snapshots).values(state=orjson.dumps(
                {"account": "acct_1", "status": "deleted", "version": 999, "users": {},
                 "trial": None}).decode()))  # fmt: skip
    with Lifecycle(db_url) as reader:
        gate = Gate()
        gate.submit_many(history[:12])
        assert reader.load("acct_1") == gate.state("acct_1")


def test_a_history_of_another_policy_is_a_policy_error(db_url: str, tmp_path: Path) -> None:
    """Reading a store under a policy other than the one that wrote it (``--policy``
    forgotten) stops with a PolicyError naming the event, the account and its version, in
    one process or several, for an event the policy does not know (it was a KeyError
    traceback) and for one it refuses in that state (a ValueError)."""
    noted = DEFAULT_POLICY.extend(name="noted", events=[EventSpec("Noted")],
                                  transitions=[{"trigger": "Noted", "source": ["created",
                                                "trial", "active"], "dest": None}])  # fmt: skip
    again = DEFAULT_POLICY.extend(name="again", transitions=[
        {"trigger": "Trial Started", "source": "active", "dest": "trial"}])  # fmt: skip
    trial = msg("Trial Started", "u1", "acct_2", trial_start_date="2024-01-01")
    for policy, account, stream, error in (
        (noted, "acct_1", [msg("Account Created", "u1", "acct_1"), msg("Noted", "u1", "acct_1")],
         "Noted is not an event of policy 'b2b-saas', yet account acct_1 stored it as event 2"),
        (again, "acct_2", [msg("Account Created", "u1", "acct_2"), trial,
                           msg("Trial Ended", "u1", "acct_2"), {**trial, "messageId": "again"}],
         "policy 'b2b-saas' refuses Trial Started in state 'active' (trial_already_started), "
         "yet account acct_2 stored it as event 4"),
    ):  # fmt: skip
        with Lifecycle(db_url, create_schema=True, policy=policy) as writer:
            assert {v.verdict for v in writer.submit_many(stream)} == {"accepted"}
            assert writer.load(account) is not None
        with Lifecycle(db_url) as reader:
            for read in (
                lambda: list(reader.replay()),
                lambda: list(reader.replay(workers=2)),
                lambda: list(reader.verify()),
                lambda: reader.load(account, as_of=datetime.now(UTC)),  # noqa: B023
            ):
                with pytest.raises(PolicyError, match="^" + re.escape(error) + ": the history"):
                    read()
            done = subprocess.run([sys.executable, "-m", "lifecycle", "replay", "--db", db_url],
                                  capture_output=True, text=True)  # fmt: skip
            assert (done.returncode, done.stderr.count("\n")) == (2, 1), done.stderr
            wipe(reader)


def test_a_large_account_replays_loads_and_verifies_like_a_small_one(store: Lifecycle) -> None:
    """An account past LARGE_ACCOUNT users (kept in a SharedUsers while folded, a plain
    object in its head and snapshots): the stored head, a replay and a load from a
    snapshot all agree, and verify finds nothing."""
    users = LARGE_ACCOUNT + 40
    history = [msg("Account Created", "u0", "big")]
    history += [msg("Signed Up", f"u{n}", "big") for n in range(users)]
    history += [msg("Signed In", f"u{n}", "big") for n in range(0, users, 3)]
    history += [msg("Account Removed User", f"u{n}", "big") for n in range(1, users, 7)]
    assert all(v.accepted for v in store.submit_many(history))
    live = store.state("big")
    assert live is not None
    assert list(store.replay()) == [live] == list(store.accounts())
    assert store.load("big") == live
    assert len(live.users) == users - len(range(1, users, 7))
    assert list(store.verify()) == []


def test_load_as_of_with_clocks_that_disagree(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Writers whose clocks disagree record an account's versions 1-4 at :00, :01, :05 and
    :03. As of :04 a replay cuts the history at version 3, the first recorded after the
    instant; `load` took the snapshot of version 4 (recorded at :03) and disagreed."""
    from lifecycle.store import writer

    start = writer.now()
    clock = iter([start + timedelta(seconds=n) for n in (0, 1, 5, 3)])
    monkeypatch.setattr(writer, "now", lambda: next(clock))
    with Lifecycle(db_url, create_schema=True, snapshot_every=2) as store:
        for message in onboarding("acct_1"):
            store.submit(message)
        monkeypatch.undo()
        instant = start + timedelta(seconds=4)
        (replayed,) = store.replay(as_of=instant)
        assert replayed.version == 2
        assert store.load("acct_1", as_of=instant) == replayed


def test_until_and_as_of_give_prefixes(store: Lifecycle) -> None:
    """--until and --as-of replay exactly the events stored up to a position or an instant."""
    first, second = account_history("acct_1")[:6], account_history("acct_1")[6:]
    store.submit_many(first)
    time.sleep(0.05)
    between = datetime.now(UTC)
    time.sleep(0.05)
    store.submit_many(second)
    with store.engine.connect() as connection:
        positions = (
            connection.execute(select(events.c.position).order_by(events.c.position))
            .scalars()
            .all()
        )
    gate = Gate()
    gate.submit_many(first)
    assert list(store.replay(as_of=between)) == [gate.state("acct_1")]
    assert list(store.replay(until=positions[5])) == [gate.state("acct_1")]
    assert store.load("acct_1", until=positions[5]) == gate.state("acct_1")
    assert store.load("acct_1", as_of=between) == gate.state("acct_1")
    assert list(store.replay(as_of=datetime(2000, 1, 1))) == []
    # Instants beyond what the store holds, even ones that overflow in UTC, still answer.
    assert list(store.replay(as_of=datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=1))))) == []
    late = datetime(9999, 12, 31, 23, tzinfo=timezone(timedelta(hours=-5)))
    assert list(store.replay(as_of=late)) == list(store.replay())
    assert store.load("acct_1", as_of=late) == store.state("acct_1")
    # An ISO string is not an instant here (the command line parses --as-of itself).
    text: Any = "2024-01-01"
    for call in (lambda: list(store.replay(as_of=text)), lambda: store.load("acct_1", as_of=text)):
        with pytest.raises(TypeError, match="as_of must be a datetime, got str: '2024-01-01'"):
            call()


def test_as_of_the_instant_an_event_was_recorded_includes_it(store: Lifecycle) -> None:
    """--as-of takes every event recorded at or before the instant: as of the very instant
    the first submission was recorded, its events are all in and the next ones are not."""
    first, second = account_history("acct_1")[:6], account_history("acct_1")[6:]
    store.submit_many(first)
    time.sleep(0.01)
    store.submit_many(second)
    recorded = next(iter(store.events())).recorded_at
    gate = Gate()
    gate.submit_many(first)
    assert list(store.replay(as_of=recorded)) == [gate.state("acct_1")]
    assert store.load("acct_1", as_of=recorded) == gate.state("acct_1")


def test_loading_an_account_with_no_event_in_bounds_gives_none(store: Lifecycle) -> None:
    """`load` of an account the store has no event of, or none of within the bounds, is
    None, as `state` is for an account never seen: not an empty state at version 0."""
    store.submit_many(account_history("acct_1"))
    assert store.load("absent") is None
    assert store.load("acct_1", as_of=datetime(2000, 1, 1, tzinfo=UTC)) is None
    assert store.load("acct_1", until=0) is None


def test_timestamps_at_the_ends_of_the_storable_years_round_trip(store: Lifecycle) -> None:
    """The earliest and latest accepted timestamps are stored as the same instants."""
    first = {**msg("Account Created", "u1", "acct_1"), "timestamp": "1000-01-01T00:00:00Z"}
    last = {**msg("Signed Up", "u1", "acct_1"), "timestamp": "9999-12-31T23:59:59.999999Z"}
    assert [v.verdict for v in store.submit_many([first, last])] == ["accepted"] * 2
    assert [e.occurred_at for e in store.events()] == [
        datetime(1000, 1, 1),
        datetime(9999, 12, 31, 23, 59, 59, 999999),
    ]


def test_verify_reads_one_snapshot_while_writers_go_on(
    store: Lifecycle, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What another writer commits while verify runs is not compared: no false differences.

    Here it commits between the replay and the reading of the heads and snapshots.
    """
    store.submit_many(account_history("acct_1"))
    replay = history.replay

    def replay_then_write(*args: Any, **kwargs: Any) -> Any:
        states = replay(*args, **kwargs)
        with Lifecycle(db_url) as writer:
            moved = writer.submit_many(account_history("acct_2"))
            assert {v.verdict for v in moved} == {"accepted"}
        return states

    monkeypatch.setattr(history, "replay", replay_then_write)
    assert list(store.verify()) == []
    monkeypatch.undo()
    assert list(store.verify()) == []
    assert store.state("acct_2") is not None


def test_verify_reports_a_corrupted_head(store: Lifecycle, db_url: str, tmp_path: Path) -> None:
    """`replay --verify` exits 1 and names the account and field when a head is wrong."""
    store.submit_many(account_history("acct_1") + account_history("acct_2"))
    ok = subprocess.run([sys.executable, "-m", "lifecycle", "replay", "--verify", "--db", db_url],
                        capture_output=True, text=True, cwd=tmp_path)  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    bad = store.state("acct_2")
    assert bad is not None
    corrupted = {**bad.to_dict(), "status": "deleted"}
    with store.engine.begin() as connection:
        connection.execute(update(account_heads).where(account_heads.c.account == "acct_2")
                           .values(state=orjson.dumps(corrupted).decode()))  # fmt: skip
    run = subprocess.run([sys.executable, "-m", "lifecycle", "replay", "--verify", "--db", db_url],
                         capture_output=True, text=True, cwd=tmp_path)  # fmt: skip
    assert run.returncode == 1
    assert "acct_2 (head): status: head='deleted' replay='active'" in run.stdout
    assert "acct_1" not in run.stdout
    # It checks every account as of now: given a scope it ignored, it printed a clean run.
    for option, value in [("--account", "acct_1"), ("--until", "3"), ("--workers", "2")]:
        command = ["replay", "--verify", option, value, "--db", db_url]
        scoped = subprocess.run([sys.executable, "-m", "lifecycle", *command],
                                capture_output=True, text=True, cwd=tmp_path)  # fmt: skip
        assert (scoped.returncode, scoped.stdout) == (2, "")
        assert f"replay --verify checks every account as of now: drop {option}" in scoped.stderr


def test_verify_reports_a_deleted_head_as_missing(store: Lifecycle) -> None:
    """A head row deleted by hand was one difference per field of the state, each
    `head=None`; it is one, and the account's next write stores the head again."""
    store.submit_many(account_history("acct_1") + account_history("acct_2"))
    with store.engine.begin() as connection:
        connection.execute(delete(account_heads).where(account_heads.c.account == "acct_2"))
    state = store.state("acct_2")
    assert state is not None  # replayed from the events
    (difference,) = store.verify()
    assert (
        str(difference) == f"acct_2 (head): state: head='missing' replay='version {state.version}'"
    )
    store.submit(msg("Signed In", "u1", "acct_2"))
    assert list(store.verify()) == []


@pytest.mark.parametrize("damage", ["{bad", "{}", "[]"])
def test_unreadable_heads_and_snapshots_are_reported_not_raised(
    damage: str, db_url: str, tmp_path: Path
) -> None:
    """A head or snapshot row that holds no state (edited by hand, damaged) is a difference
    for `replay --verify` (exit 1), and a one-line error for the commands that read it
    (exit 2). Both had ended in a traceback with exit 1, read as "a difference found"."""
    with Lifecycle(db_url, create_schema=True, snapshot_every=2) as store:
        store.submit_many(account_history("acct_1") + account_history("acct_2"))
        with store.engine.begin() as connection:
            connection.execute(update(account_heads).where(account_heads.c.account == "acct_2")
                               .values(state=damage))  # fmt: skip
            connection.execute(update(snapshots).where(snapshots.c.account == "acct_1")
                               .values(state=damage))  # fmt: skip
        found = {(d.account, d.source): d.fields for d in store.verify()}
        assert set(found) == {("acct_2", "head"), ("acct_1", "snapshot")}
        assert found["acct_2", "head"]["state"][0].startswith("unreadable (")
        with pytest.raises(StoreError, match=r"^the head of account 'acct_2' is not a readable"):
            store.state("acct_2")
        with pytest.raises(StoreError, match=r"^the head of account 'acct_2' is not a readable"):
            list(store.accounts())  # it said "an account head": which, among thousands?

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "lifecycle", *args, "--db", db_url],
                              capture_output=True, text=True, cwd=tmp_path)  # fmt: skip

    verify = cli("replay", "--verify")
    assert (verify.returncode, verify.stderr) == (1, "replay --verify: 2 differences\n")
    lines = sorted(verify.stdout.splitlines())
    assert [line.split("=")[0] for line in lines] == [
        "acct_1 (snapshot): state: snapshot",
        "acct_2 (head): state: head",
    ]
    assert all("unreadable (" in line for line in lines)
    show = cli("accounts", "show", "acct_2")
    assert show.returncode == 2 and show.stdout == ""
    assert show.stderr.startswith("lifecycle: error: the head of account 'acct_2' is not a")
    assert len(show.stderr.splitlines()) == 1


@pytest.mark.parametrize("damage", ["{bad", "[]", "null"])
def test_an_unreadable_event_payload_is_a_store_error_not_a_traceback(
    damage: str, db_url: str, tmp_path: Path
) -> None:
    """An ``events`` row whose payload holds no message (edited by hand, damaged) made
    `replay`, `replay --verify` and `audit` end in a traceback with exit 70 ("internal
    error, a bug"), and `Lifecycle.replay()`, `load()` and `audit()` raise orjson's
    ``JSONDecodeError`` or an ``AttributeError``; a damaged head or snapshot row is one
    line naming it (exit 2). A damaged event is a ``StoreError`` naming its account too."""
    with Lifecycle(db_url, create_schema=True) as store:
        store.submit_many(account_history("acct_1") + account_history("acct_2"))
        with store.engine.begin() as connection:
            connection.execute(update(events).where(events.c.account == "acct_2",
                                                    events.c.version == 3)
                               .values(payload=damage))  # fmt: skip
        for read in (lambda: list(store.replay()), lambda: store.load("acct_2"),
                     lambda: list(store.audit(DEFAULT_POLICY))):  # fmt: skip
            with pytest.raises(StoreError, match="acct_2"):
                read()

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "lifecycle", *args, "--db", db_url],
                              capture_output=True, text=True, cwd=tmp_path)  # fmt: skip

    for args in (
        ["replay"],
        ["replay", "--verify"],
        ["audit", "--policy", "lifecycle:DEFAULT_POLICY"],
    ):
        run = cli(*args)
        assert run.returncode == 2, (args, run.stderr)
        assert run.stderr.startswith("lifecycle: error: ") and "acct_2" in run.stderr
        assert len(run.stderr.splitlines()) == 1


def test_a_replay_that_loses_its_connection_raises_store_error(db_url: str, backend: str) -> None:
    """The replay reads through the driver's own cursor; a connection lost mid-replay
    raised the driver's error (``psycopg.OperationalError``), not the store's."""
    if backend == "sqlite":
        pytest.skip("a database file has no connection to lose")
    from tests.tcp_proxy import TcpProxy

    with Lifecycle(db_url, create_schema=True) as store:
        for n in range(30):
            store.submit_many(account_history(f"acct_{n}", users=6, sessions=6))
        assert store.count_events() > 2_500  # several lists of rows: progress is called early
    url = make_url(db_url)
    assert url.host is not None and url.port is not None
    with TcpProxy(url.host, url.port) as proxy:
        through = url.set(host="127.0.0.1", port=proxy.port).render_as_string(False)
        with Lifecycle(through) as store, pytest.raises(StoreError):
            list(store.replay(progress=lambda n: proxy.cut()))


def test_replay_bounds_and_arguments(store: Lifecycle) -> None:
    """A position past any a store can hold is no bound (it had overflowed the driver);
    one account id given as a string, not a list, is a TypeError that says so."""
    store.submit_many(account_history("acct_1") + account_history("acct_2"))
    everything = list(store.replay())
    assert list(store.replay(until=10**20)) == everything
    assert store.load("acct_1", until=10**20) == everything[0]
    with pytest.raises(TypeError, match="accounts must be a list of account ids, got 'acct_1'"):
        list(store.replay(accounts="acct_1"))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="until must be a position"):
        list(store.replay(until="5"))  # type: ignore[arg-type]


def test_verify_reports_a_head_whose_columns_disagree_with_its_state(store: Lifecycle) -> None:
    """The head's status and version columns (what `accounts list --status` filters on) are
    compared too: a head whose JSON was right but whose status column was not verified
    clean, and `accounts list --status deleted` listed an active account."""
    store.submit_many(account_history("acct_1") + account_history("acct_2"))
    assert list(store.verify()) == []
    truth = store.state("acct_2")
    assert truth is not None
    with store.engine.begin() as connection:
        connection.execute(update(account_heads).where(account_heads.c.account == "acct_2")
                           .values(status="deleted", version=truth.version + 1))  # fmt: skip
    (difference,) = store.verify()
    assert (difference.account, difference.source) == ("acct_2", "head")
    assert difference.fields == {
        "status (column)": ("deleted", truth.status),
        "version (column)": (truth.version + 1, truth.version),
    }


def test_replay_command_formats(store: Lifecycle, db_url: str, tmp_path: Path) -> None:
    """`replay` prints the `accounts show` shape as one JSON object, JSON lines or text."""
    store.submit_many(account_history("acct_1") + account_history("acct_2"))

    def run(*args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "lifecycle", "replay", "--db", db_url, *args],
                              capture_output=True, text=True, cwd=tmp_path)  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done.stdout

    document = orjson.loads(run("--format", "json"))
    assert document == {s.account: s.to_dict() for s in store.accounts()}
    lines = [
        orjson.loads(line) for line in run("--format", "jsonl", "--account", "acct_2").splitlines()
    ]
    assert lines == [store.state("acct_2").to_dict()]  # type: ignore[union-attr]
    assert run("--format", "text").splitlines()[0].split("\t")[:2] == ["acct_1", "active"]


def test_audit_under_a_stricter_policy(store: Lifecycle) -> None:
    """An audit lists the stored events a tightened rule would reject, with position and code."""
    store.submit_many(account_history("acct_1"))
    store.submit(msg("Signed In", "acct_1-u0", "acct_1", username="pg"))
    strict = DEFAULT_POLICY.with_guard(
        "Signed In",
        Guard("has_username", "missing_username",
              lambda state, event: None if event.properties.get("username") else "no username"),
    )  # fmt: skip
    findings = list(store.audit(strict))
    missing = [f for f in findings if f.code == "missing_username"]
    signed_in = [e for e in store.events() if e.event == "Signed In"]
    assert [f.position for f in missing] == [e.position for e in signed_in[:-1]]
    # a refused Signed In changes no state, so the Signed Out after it is refused too
    assert {f.code for f in findings} == {"missing_username", "not_signed_in"}
    assert list(store.audit(DEFAULT_POLICY)) == []


def test_audit_judges_a_stored_message_not_a_batch_inside_it(store: Lifecycle) -> None:
    """A stored message with a ``batch`` key of its own was audited as a batch object:
    under the store's own policy, `malformed_json` for an empty one and, for another,
    a finding on an event that was never stored."""
    empty = {**msg("Account Created", "u1", "acct_1"), "batch": []}
    inner = {**msg("Signed Up", "u1", "acct_1"), "batch": [msg("Account Deleted", "u1", "x")]}
    line = orjson.dumps({"batch": [empty, inner]})
    assert [v.verdict for v in store.submit_line(line)] == ["accepted", "accepted"]
    assert list(store.audit(DEFAULT_POLICY)) == []


def test_audit_reports_stored_events_its_policy_does_not_know(db_url: str) -> None:
    """A store written under a policy with more events, audited under one without them:
    the audit passed over them silently, 0 findings, and judged what followed as if they
    had not been stored. Each is a finding with the code ``ignored``."""
    from tests.policies import SUBSCRIPTIONS

    with Lifecycle(db_url, create_schema=True, policy=SUBSCRIPTIONS) as store:
        store.submit_many([msg("Account Created", "u1", "acct_1"),
                           msg("Subscription Started", "u1", "acct_1", mid="sub")])  # fmt: skip
        (finding,) = store.audit(DEFAULT_POLICY)
    assert (finding.message_id, finding.code, finding.reason) == (
        "sub",
        "ignored",
        "Subscription Started is not an event of policy 'b2b-saas'",
    )


def test_an_audit_names_the_event_as_sent_when_the_policy_does_not_know_it(
    store: Lifecycle,
) -> None:
    """A stored `User Signed Up` (an alias of RULES.md), audited under a policy whose
    `Signed Up` has no alias, is ignored by it: the finding said "Signed Up is not an event
    of policy ...", of an event the policy has. It names the name the policy does not know."""
    import dataclasses

    from lifecycle import Policy

    base = DEFAULT_POLICY
    no_aliases = Policy(name="no-aliases", states=base.states, initial=base.initial,
                        final=base.final,
                        events=[dataclasses.replace(s, aliases=()) for s in base.events],
                        transitions=base.transitions, guards=list(base.guards.values()),
                        effects=base.effects, refusals=base.refusals)  # fmt: skip
    assert "Signed Up" in no_aliases.catalog and "User Signed Up" not in no_aliases.catalog
    store.submit_many([msg("Account Created", "u1", "acct_1"),
                       msg("User Signed Up", "u1", "acct_1", mid="alias")])  # fmt: skip
    (finding,) = store.audit(no_aliases)
    assert (finding.message_id, finding.code) == ("alias", "ignored")
    assert finding.reason == "User Signed Up is not an event of policy 'no-aliases'"


def test_quarantine_retry(store: Lifecycle) -> None:
    """Quarantined messages that are legal now are appended and leave; retrying twice is a no-op."""
    early = msg("Signed In", "u1", "acct_1", mid="early")
    wrong = msg("Trial Ended", "u1", "acct_1", mid="wrong")
    assert store.submit_many([early, wrong])[0].code == "account_unknown"
    store.submit_many([msg("Account Created", "u1", "acct_1"), msg("Signed Up", "u1", "acct_1")])
    report = store.retry_rejections()
    assert (report.accepted, report.still_rejected) == (1, 1)
    assert [(r.message_id, r.code) for r in store.rejections()] == [("wrong", "trial_not_active")]
    assert store.state("acct_1").users["u1"].signed_in  # type: ignore[union-attr]
    again = store.retry_rejections()
    assert (again.accepted, again.still_rejected) == (0, 1)
    assert len(list(store.rejections())) == 1


def test_retry_goes_on_while_a_pass_stores_something(store: Lifecycle) -> None:
    """A `Signed Out` received before the `Signed In` it needs, both before the user
    signed up: one pass stored the `Signed In` only, and a second run of "idempotent"
    retry then stored the `Signed Out`."""
    received = [
        msg("Account Created", "u0", "acct_1"),
        msg("Signed Out", "u1", "acct_1", mid="out"),
        msg("Signed In", "u1", "acct_1", mid="in"),
        msg("Signed Up", "u1", "acct_1"),
        msg("Trial Ended", "u1", "acct_1", mid="never"),
    ]
    codes = [v.code for v in store.submit_many(received)]
    assert codes == [None, "user_unknown", "user_unknown", None, "trial_not_active"]
    report = store.retry_rejections(batch_size=1)
    assert (report.accepted, report.duplicate, report.still_rejected) == (2, 0, 1)
    assert report.codes == {"trial_not_active": 1}
    assert [(r.message_id, r.code) for r in store.rejections()] == [("never", "trial_not_active")]
    assert [e.message_id for e in store.events()][-2:] == ["in", "out"]
    again = store.retry_rejections()
    assert (again.accepted, again.still_rejected) == (0, 1)


@pytest.mark.parametrize("inner", [[], ["acct_a", "acct_b"]], ids=["empty", "two"])
def test_retry_judges_the_quarantined_item_not_a_batch_inside_it(
    store: Lifecycle, tmp_path: Path, inner: list[str]
) -> None:
    """A batch item with a ``batch`` key of its own, quarantined: retry read its JSON as a
    line, judged the inner batch instead (storing an event never accepted, and losing
    the message) or, with an empty one, failed with IndexError."""
    nested = msg("Signed In", "u1", "nope")
    nested["batch"] = [msg("Account Created", "u1", account) for account in inner]
    document = {"batch": [msg("Account Created", "u1", "acct_1"), nested]}
    path = tmp_path / "doc.json"
    path.write_bytes(orjson.dumps(document))
    lines = [InputLine(str(path), 1, path.read_bytes())]
    assert [v.code for _, v in store.submit_lines(lines)] == [None, "account_unknown"]
    report = store.retry_rejections()
    assert (report.accepted, report.still_rejected) == (0, 1)
    assert [e.account for e in store.events()] == ["acct_1"]
    (row,) = store.rejections()
    assert (row.message_id, row.batch_index) == (nested["messageId"], 1)


def test_retry_runs_at_once_store_each_quarantined_message_once(db_url: str) -> None:
    """Two retries of the same quarantine at once (two ``rejections retry`` runs that
    overlap): each message without a ``messageId`` is appended once, not by both runs,
    and the two reports count each message once between them."""
    with Lifecycle(db_url, create_schema=True) as store:
        early = [msg("Signed In", "u1", "acct_1", mid="", n=n) for n in range(60)]
        assert {v.code for v in store.submit_many(early)} == {"account_unknown"}
        store.submit_many(
            [msg("Account Created", "u1", "acct_1"), msg("Signed Up", "u1", "acct_1")]
        )
        started = threading.Barrier(2)
        reports: list[dict[str, Any]] = []

        def retry() -> None:
            with Lifecycle(db_url, max_attempts=60) as runner:
                started.wait(10)
                reports.append(runner.retry_rejections(batch_size=10).to_dict())

        runs = [threading.Thread(target=retry) for _ in range(2)]
        for run in runs:
            run.start()
        for run in runs:
            run.join(120)
        signed_in = [e for e in store.events("acct_1") if e.event == "Signed In"]
        assert len(signed_in) == 60
        assert sorted(orjson.loads(e.payload)["properties"]["n"] for e in signed_in) == list(
            range(60)
        )
        assert sum(r["accepted"] for r in reports) == 60 and len(reports) == 2
        assert list(store.rejections()) == []


def test_a_retry_that_read_a_row_another_released_keeps_the_rejection_that_came_after(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A retry reads its rows, another run releases the newest of them, and a new
    rejection arrives. On SQLite the new row took the released row's id, and the first
    retry's release deleted it in place of the row it had read: a rejection lost."""
    with Lifecycle(db_url, create_schema=True) as store, Lifecycle(db_url) as other:
        store.submit_many([msg("Signed In", "u1", "acct_1", mid="early_1"),
                           msg("Signed In", "u1", "acct_2", mid="early_2")])  # fmt: skip
        store.submit_many([msg("Account Created", "u1", "acct_2"),
                           msg("Signed Up", "u1", "acct_2")])  # fmt: skip
        read = list(store.rejections())
        assert other.retry_rejections(account="acct_2").accepted == 1
        assert store.submit(msg("Trial Ended", "u1", "acct_3", mid="late")).code
        (late,) = store.rejections(account="acct_3")
        assert late.id not in {row.id for row in read}
        monkeypatch.setattr(store, "rejections", lambda **_: iter(read))
        report = store.retry_rejections()
        monkeypatch.undo()
        assert (report.accepted, report.duplicate, report.still_rejected) == (0, 0, 1)
        assert [r.message_id for r in store.rejections()] == ["early_1", "late"]


def test_a_retry_whose_release_miscounts_fails_instead_of_judging_for_ever(
    store: Lifecycle, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A release that counts fewer rows than it deleted, with none released elsewhere,
    judged the same rows again and again; it is a StoreError, and nothing is changed."""
    from lifecycle.store import repository

    store.submit(msg("Signed In", "u1", "acct_1", mid="early"))
    store.submit_many([msg("Account Created", "u1", "acct_1"), msg("Signed Up", "u1", "acct_1")])
    counted = repository.release
    monkeypatch.setattr(repository, "release", lambda conn, ids: counted(conn, ids) - 1)
    with pytest.raises(StoreError, match="were all still there"):
        store.retry_rejections()
    assert [r.message_id for r in store.rejections()] == ["early"]
    assert "early" not in {e.message_id for e in store.events()}


def test_retry_gives_a_message_still_rejected_the_reason_it_gets_today(store: Lifecycle) -> None:
    """A retried message rejected again with the same code keeps that code, and its reason
    says what is true now: the account has moved on since it was first judged."""
    store.submit(msg("Account Created", "u1", "acct_1"))
    assert store.submit(msg("Trial Ended", "u1", "acct_1", mid="wrong")).reason == (
        "Trial Ended for acct_1 by u1: no trial is running (account is created)"
    )
    store.submit_many(
        [
            msg("Signed Up", "u1", "acct_1"),
            msg(
                "Trial Started",
                "u1",
                "acct_1",
                trial_plan_name="Pro",
                trial_start_date="2024-01-01",
            ),
            msg("Trial Ended", "u1", "acct_1"),
        ]
    )
    assert store.retry_rejections().still_rejected == 1
    assert [(r.code, r.reason) for r in store.rejections()] == [
        (
            "trial_not_active",
            "Trial Ended for acct_1 by u1: no trial is running (account is active)",
        )
    ]


def test_retry_filters_by_code_and_account(store: Lifecycle) -> None:
    """--code and --account retry only the matching quarantined messages."""
    for account in ("acct_1", "acct_2"):
        store.submit(msg("Signed In", "u1", account))
    for account in ("acct_1", "acct_2"):
        store.submit_many([msg("Account Created", "u1", account), msg("Signed Up", "u1", account)])
    report = store.retry_rejections(account="acct_2")
    assert report.accepted == 1
    assert [r.account for r in store.rejections()] == ["acct_1"]
    assert store.retry_rejections(code="user_unknown").accepted == 0
    assert store.retry_rejections(code="account_unknown").accepted == 1


def write(path: Path, messages: list[Any]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(m) + b"\n" for m in messages))
    return path


def test_sorted_ingest_equals_sorted_check(db_url: str, tmp_path: Path) -> None:
    """`--sort-by timestamp` puts each account's messages in time order (check and ingest)."""
    Lifecycle(db_url, create_schema=True).close()
    history = interleave([account_history(f"acct_{n}") for n in range(3)], seed=5)
    for n, message in enumerate(history):
        message["timestamp"] = f"2024-01-01T00:{n // 60:02d}:{n % 60:02d}Z"
    shuffled = list(reversed(history))
    path = write(tmp_path / "export.jsonl", shuffled)
    plain = subprocess.run([sys.executable, "-m", "lifecycle", "check", str(path)],
                           capture_output=True, cwd=tmp_path)  # fmt: skip
    assert plain.returncode == 1
    args = [str(path), "--sort-by", "timestamp", "--format", "jsonl"]
    checked = subprocess.run([sys.executable, "-m", "lifecycle", "check", *args],
                             capture_output=True, cwd=tmp_path)  # fmt: skip
    store_args = ["--db", db_url, "--batch-size", "10"]
    ingested = subprocess.run([sys.executable, "-m", "lifecycle", "ingest", *args, *store_args],
                              capture_output=True, cwd=tmp_path)  # fmt: skip
    assert checked.returncode == 0 and ingested.returncode == 0, ingested.stderr
    assert checked.stdout == ingested.stdout
    order = [orjson.loads(line)["messageId"] for line in checked.stdout.splitlines()]
    by_account: dict[str, list[str]] = {}
    for message in history:
        by_account.setdefault(message["context"]["groupId"], []).append(message["messageId"])
    for account, mids in by_account.items():
        assert [m for m in order if m in set(mids)] == mids, account


def test_partitioned_replay_equals_a_single_process(store: Lifecycle, db_url: str,
                                                    tmp_path: Path) -> None:  # fmt: skip
    """Splitting a full replay by account over processes gives exactly the same states."""
    store.submit_many(interleave([account_history(f"acct_{n}") for n in range(7)], seed=2))
    single = list(store.replay())
    assert len(single) == 7
    assert list(store.replay(workers=3)) == single
    with store.engine.connect() as connection:
        last = connection.execute(select(func.max(events.c.position))).scalar_one()
    assert list(store.replay(workers=2, until=last // 2)) == list(store.replay(until=last // 2))
    with store.engine.connect() as connection:
        middle = connection.execute(
            select(events.c.recorded_at).where(events.c.position == last // 2)
        ).scalar_one()
    assert list(store.replay(workers=2, as_of=middle)) == list(store.replay(as_of=middle))
    read: list[int] = []
    assert list(store.replay(workers=2, progress=read.append)) == single
    assert sum(read) == last


_SLOW_POLICY = """
import functools, time
from lifecycle import DEFAULT_POLICY, Policy

def _slow(effect):
    @functools.wraps(effect)
    def slowly(state, event):
        time.sleep(0.004)
        return effect(state, event)
    return slowly

base = DEFAULT_POLICY
SLOW = Policy(name=base.name, states=base.states, initial=base.initial, final=base.final,
              events=base.events, transitions=base.transitions,
              guards=list(base.guards.values()), refusals=base.refusals,
              effects={name: _slow(effect) for name, effect in base.effects.items()})
"""


def test_a_terminated_partitioned_replay_leaves_no_worker_behind(tmp_path: Path) -> None:
    """`kill PID` (a supervisor's stop, `timeout`) of `replay --workers N` ended the command
    but not its forked workers: they went on reading and folding their whole account range,
    holding the database, and each then wrote a BrokenPipeError traceback to the stderr of
    a command that had ended. The workers end with it, quietly."""
    import contextlib
    import os
    import signal

    if not Path("/proc/self/task").exists():
        pytest.skip("finds the workers in /proc (Linux)")
    url = f"sqlite:///{tmp_path / 'store.db'}"
    with Lifecycle(url, create_schema=True) as store:
        store.submit_many(interleave([account_history(f"acct_{n}") for n in range(48)], seed=6))
    (tmp_path / "slowpolicy.py").write_text(_SLOW_POLICY)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    command = [sys.executable, "-m", "lifecycle", "replay", "--db", url, "--workers", "3",
               "--policy", "slowpolicy:SLOW"]  # fmt: skip
    run = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                           cwd=tmp_path, env=env, start_new_session=True)  # fmt: skip
    try:
        children = Path(f"/proc/{run.pid}/task/{run.pid}/children")
        deadline = time.monotonic() + 20
        while not children.read_text().split():  # until the workers are forked
            assert run.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
        time.sleep(0.3)  # they are folding: the replay takes about 3 s more
        assert run.poll() is None
        os.kill(run.pid, signal.SIGTERM)
        assert run.wait(timeout=30) in (-signal.SIGTERM, 128 + signal.SIGTERM)
        deadline = time.monotonic() + 1
        while True:
            try:
                os.killpg(run.pid, 0)  # any process of the command left?
            except ProcessLookupError:
                break
            assert time.monotonic() < deadline, "replay workers still run after the command ended"
            time.sleep(0.05)
        _, stderr = run.communicate(timeout=30)
        assert "Traceback" not in stderr.decode()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(run.pid, signal.SIGKILL)
        run.communicate()


def test_an_in_memory_store_replays_in_one_process_whatever_the_workers() -> None:
    """Forked processes cannot open another's in-memory SQLite database: asking for workers
    had failed with "no such table: events"; the replay now stays in this process."""
    with Lifecycle("sqlite://", create_schema=True) as store:
        store.submit_many(interleave([account_history(f"acct_{n}") for n in range(5)], seed=3))
        single = list(store.replay())
        assert len(single) == 5
        assert list(store.replay(workers=3)) == single


def test_account_spans_cover_every_account_once(store: Lifecycle) -> None:
    """The ranges only balance the work: an account without a head still lands in exactly one."""
    store.submit_many(interleave([account_history(f"acct_{n}") for n in range(9)], seed=3))
    with store.engine.begin() as connection:
        connection.execute(delete(account_heads).where(account_heads.c.account == "acct_4"))
        spans = history.account_spans(connection, 3)
    assert len(spans) == 3
    assert spans[0][0] is None and spans[-1][1] is None
    assert all(spans[i][1] == spans[i + 1][0] for i in range(len(spans) - 1))
    for n in range(9):
        inside = [s for s in spans if (s[0] is None or s[0] <= f"acct_{n}")
                  and (s[1] is None or f"acct_{n}" < s[1])]  # fmt: skip
        assert len(inside) == 1, n
    assert [s.account for s in store.replay(workers=3)] == [f"acct_{n}" for n in range(9)]
    with store.engine.connect() as connection:
        assert history.account_spans(connection, 20)[-1][1] is None  # more parts than accounts


def test_account_spans_name_each_bound_once(store: Lifecycle) -> None:
    """Asked for more parts than there are accounts, the ranges are fewer, each bound once:
    a range from a bound to itself holds no account and would only cost a process."""
    store.submit_many([msg("Account Created", "u1", f"acct_{n}") for n in range(3)])
    with store.engine.connect() as connection:
        spans = history.account_spans(connection, 8)
    assert all(low is None or high is None or low < high for low, high in spans)
    assert spans == [(None, "acct_0"), ("acct_0", "acct_1"), ("acct_1", "acct_2"), ("acct_2", None)]


def test_partitioned_replay_without_heads_replays_in_one_process(store: Lifecycle) -> None:
    """No heads to split by (one span): the whole replay runs here, and gives every account."""
    store.submit_many(interleave([account_history(f"acct_{n}") for n in range(4)], seed=4))
    single = list(store.replay())
    with store.engine.begin() as connection:
        connection.execute(delete(account_heads))
        assert history.account_spans(connection, 2) == [(None, None)]
    read: list[int] = []
    assert list(store.replay(workers=2, progress=read.append)) == single
    assert sum(read) == sum(state.version for state in single)


def test_partitioned_replay_from_the_command_line(store: Lifecycle, db_url: str,
                                                  tmp_path: Path) -> None:  # fmt: skip
    store.submit_many(interleave([account_history(f"acct_{n}") for n in range(7)], seed=2))
    single = list(store.replay())
    run = subprocess.run([sys.executable, "-m", "lifecycle", "replay", "--workers", "2",
                          "--format", "jsonl", "--db", db_url],
                         capture_output=True, cwd=tmp_path)  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert [orjson.loads(line) for line in run.stdout.splitlines()] == [s.to_dict() for s in single]


def test_replay_uses_several_processes_only_on_a_large_history() -> None:
    from lifecycle.cli.history import AUTO_WORKERS_FROM, MAX_AUTO_WORKERS, auto_workers

    assert auto_workers(None) == 1
    assert auto_workers(AUTO_WORKERS_FROM - 1) == 1
    assert 1 <= auto_workers(AUTO_WORKERS_FROM) <= MAX_AUTO_WORKERS


def _position_of(store: Lifecycle, account: str, version: int) -> int:
    with store.engine.connect() as connection:
        query = select(events.c.position).where(
            events.c.account == account, events.c.version == version
        )
        return int(connection.execute(query).scalar_one())


@pytest.mark.parametrize("version", [None, "4", 1])
def test_a_snapshot_whose_state_disagrees_with_its_row_is_reported_not_folded(
    db_url: str, version: Any
) -> None:
    """A snapshot row whose state names another version than the row (edited by hand,
    damaged) was folded from the state's own version: a version that is not a number made
    `load` and `replay --verify` end in a TypeError (exit 70), an older one refolded events
    the state already held and ended in a PolicyError blaming the policy (exit 2, verify
    reporting nothing). It is a row that holds no usable state: a StoreError naming it,
    and one difference for verify."""
    with Lifecycle(db_url, create_schema=True, snapshot_every=4) as store:
        for message in account_history("acct_1"):
            store.submit(message)
        with store.engine.begin() as connection:
            newest = snapshots.c.account == "acct_1", snapshots.c.version == 28
            data = orjson.loads(connection.execute(select(snapshots.c.state).where(*newest))
                                .scalar_one())  # fmt: skip
            data["version"] = version
            connection.execute(update(snapshots).where(*newest)
                               .values(state=orjson.dumps(data).decode()))  # fmt: skip
        with pytest.raises(StoreError, match="snapshot of account 'acct_1'"):
            store.load("acct_1")
        found = list(store.verify())
        assert found and all(d.account == "acct_1" for d in found), found
        assert all(d.source.startswith("snapshot") for d in found), found


def test_a_snapshot_whose_events_are_gone_is_not_trusted(db_url: str) -> None:
    """An account archived with its events and head but not its snapshots (operations.md
    asks for all three), then created again: `load` returned the old account's snapshot
    (deleted, version 29) for the new account at version 4. A snapshot whose event is not
    stored at its position describes no stored history."""
    with Lifecycle(db_url, create_schema=True, snapshot_every=4, outbox=False) as store:
        store.submit_many(account_history("acct_1") + [msg("Account Deleted", "x", "acct_1")])
        with store.engine.begin() as connection:
            connection.execute(delete(events).where(events.c.account == "acct_1"))
            connection.execute(delete(account_heads).where(account_heads.c.account == "acct_1"))
        assert all(v.accepted for v in store.submit_many(onboarding("acct_1")))
        (replayed,) = store.replay()
        assert replayed.version == 4
        assert store.load("acct_1") == replayed == store.state("acct_1")
