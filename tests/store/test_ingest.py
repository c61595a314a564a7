"""`lifecycle ingest` and the store commands, through a real subprocess."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import func, make_url, select

from lifecycle.reader import InputLine
from lifecycle.service import Lifecycle
from lifecycle.store.schema import events
from tests.store.helpers import account_history, interleave, msg, onboarding
from tests.tcp_proxy import TcpProxy


def cli(*args: str, cwd: Path, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "lifecycle", *args], cwd=cwd, capture_output=True, input=stdin
    )


def write_jsonl(path: Path, messages: list[Any]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(m) + b"\n" for m in messages))
    return path


def verdict_lines(output: bytes) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in output.splitlines()]


@contextmanager
def counted_commits() -> Iterator[list[object]]:
    """The connections of every commit made inside the block, one entry per commit."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    commits: list[object] = []

    def count(connection: object) -> None:
        commits.append(connection)

    event.listen(Engine, "commit", count)
    try:
        yield commits
    finally:
        event.remove(Engine, "commit", count)


def generated_lines(accounts: int, events: int, seed: int) -> list[bytes]:
    """A generated history with every kind of violation mixed in, as JSON lines."""
    from lifecycle.generate import generate

    stream = generate(accounts=accounts, events=events, seed=seed, illegal_rate=0.2)
    return [orjson.dumps(g.message) for g in stream]


def sample(tmp_path: Path, accounts: int = 4) -> list[dict[str, Any]]:
    """A legal interleaved history with a few illegal messages mixed in."""
    history = interleave([account_history(f"acct_{n}") for n in range(accounts)], seed=7)
    history.insert(3, msg("Signed In", "ghost", "acct_0"))
    history.insert(10, msg("Trial Ended", "acct_1-u0", "acct_1"))
    history.append(history[5])  # a resent message: duplicate
    return history


def test_ingest_in_two_parts_equals_check_on_the_whole(db_url: str, tmp_path: Path) -> None:
    """Ingesting a file in two runs gives the verdicts `check` gives on the whole file."""
    Lifecycle(db_url, create_schema=True).close()
    history = sample(tmp_path)
    whole = write_jsonl(tmp_path / "whole.jsonl", history)
    half = len(history) // 2
    first = write_jsonl(tmp_path / "first.jsonl", history[:half])
    second = write_jsonl(tmp_path / "second.jsonl", history[half:])
    checked = cli("check", str(whole), "--format", "jsonl", cwd=tmp_path)
    assert checked.returncode == 1
    runs = [
        cli("ingest", str(part), "--db", db_url, "--format", "jsonl",
            "--batch-size", "7", cwd=tmp_path)
        for part in (first, second)
    ]  # fmt: skip
    assert [r.returncode for r in runs] == [1, 0], [r.stderr for r in runs]  # rejections: 1st half
    ingested = verdict_lines(runs[0].stdout) + verdict_lines(runs[1].stdout)
    expected = verdict_lines(checked.stdout)
    strip = ("file", "line")
    assert [{k: v for k, v in r.items() if k not in strip} for r in ingested] == [
        {k: v for k, v in r.items() if k not in strip} for r in expected
    ]


def test_transactions_of_several_chunks_give_the_verdicts_of_check(
    db_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfdbinary: pytest.CaptureFixture[bytes],
) -> None:
    """A transaction judged in several chunks sees its own earlier chunks; output is in order."""
    from lifecycle.cli import main
    from lifecycle.cli import store as store_cli

    Lifecycle(db_url, create_schema=True).close()
    path = write_jsonl(tmp_path / "whole.jsonl", sample(tmp_path))
    expected = verdict_lines(cli("check", str(path), "--format", "jsonl", cwd=tmp_path).stdout)
    monkeypatch.setattr(store_cli, "CHUNK_LINES", 3)
    capfdbinary.readouterr()
    code = main(["ingest", str(path), "--db", db_url, "--format", "jsonl", "--batch-size", "7"])
    assert code == 1
    assert verdict_lines(capfdbinary.readouterr().out) == expected
    with Lifecycle(db_url) as store:
        accepted = [r["messageId"] for r in expected if r["verdict"] == "accepted"]
        assert [e.message_id for e in store.events()] == accepted


def test_rerun_gives_duplicates_and_no_new_quarantine(db_url: str, tmp_path: Path) -> None:
    """A second ingest of the same file stores nothing new and quarantines nothing twice."""
    Lifecycle(db_url, create_schema=True).close()
    path = write_jsonl(tmp_path / "in.jsonl", sample(tmp_path))
    args = ("ingest", str(path), "--db", db_url, "--format", "jsonl")
    first = verdict_lines(cli(*args, cwd=tmp_path).stdout)
    second = verdict_lines(cli(*args, cwd=tmp_path).stdout)
    accepted_first = [r["messageId"] for r in first if r["verdict"] == "accepted"]
    assert {r["messageId"]: r["verdict"] for r in second if r["messageId"] in accepted_first} == {
        mid: "duplicate" for mid in accepted_first
    }
    with Lifecycle(db_url) as store:
        assert len(list(store.events())) == len(accepted_first)
        assert len(list(store.rejections())) == sum(r["verdict"] == "rejected" for r in first)


@pytest.mark.parametrize(
    ("cut", "spelling"),
    [(3, "same"), (9, "same"), (23, "same"), (41, "same"), (60, "same"), (23, "dotted"),
     (41, "linked")],
)  # fmt: skip
def test_a_resumed_ingest_ends_as_one_uninterrupted_run(
    db_url: str,
    tmp_path: Path,
    cut: int,
    spelling: str,
    capfdbinary: pytest.CaptureFixture[bytes],
) -> None:
    """An ingest that stored the first ``cut`` lines of a file (then died), run again on
    the whole file, gives every line the verdict one run gives it — accepted lines come
    back as ``duplicate``, rejected ones with their first rejection — and stores what
    `check` accepts, in order. Judged again against the state the first run left, a line
    it rejected (a Signed In before the user's Signed Up) had been accepted out of place.
    The file may be named otherwise the second time (``dir/./h.jsonl``, a link to it):
    the store knew it by the path as typed, and took it for another file."""
    from lifecycle.cli import main

    Lifecycle(db_url, create_schema=True).close()
    history = [orjson.loads(m) for m in generated_lines(accounts=3, events=70, seed=cut)]
    # Stored by the dead run: a Signed In rejected before the same user's Signed Up.
    history[:0] = [msg("Account Created", "late", "acct_r"), msg("Signed In", "late", "acct_r")]
    history.insert(cut - 1, msg("Signed Up", "late", "acct_r"))
    path = write_jsonl(tmp_path / "export.jsonl", history)
    expected = verdict_lines(cli("check", str(path), "--format", "jsonl", cwd=tmp_path).stdout)
    write_jsonl(path, history[:cut])  # what the dead run had stored, under the same name
    args = ["ingest", str(path), "--db", db_url, "--format", "jsonl", "--batch-size", "5"]
    main(args)
    write_jsonl(path, history)
    if spelling == "dotted":
        args[1] = os.path.join(path.parent, ".", path.name)
    elif spelling == "linked":
        (tmp_path / "link.jsonl").symlink_to(path)
        args[1] = str(tmp_path / "link.jsonl")
    capfdbinary.readouterr()
    main(args)
    rerun = verdict_lines(capfdbinary.readouterr().out)
    assert [r.get("code") for r in rerun] == [r.get("code") for r in expected]
    assert [r["verdict"] for r in rerun] == [
        ("duplicate" if n < cut else "accepted") if r["verdict"] == "accepted" else r["verdict"]
        for n, r in enumerate(expected)
    ]
    with Lifecycle(db_url) as store:
        stored = [e.message_id for e in store.events()]
        rejected = sum(r["verdict"] == "rejected" for r in expected)
        assert len(list(store.rejections())) == rejected
    assert stored == [r["messageId"] for r in expected if r["verdict"] == "accepted"]


def _judged_again(db_url: str, tmp_path: Path, batch_size: str, one_run: bool) -> None:
    """Ingest a file, then one that moves its account, then the first file again."""
    Lifecycle(db_url, create_schema=True).close()
    first = write_jsonl(
        tmp_path / "first.jsonl",
        [msg("Signed In", "u1", "acct_1", mid="m1"), msg("Account Created", "u1", "acct_1")],
    )
    later = write_jsonl(tmp_path / "later.jsonl", [msg("Signed Up", "u1", "acct_1")])
    options = ("--db", db_url, "--format", "jsonl", "--batch-size", batch_size)
    if one_run:
        out = cli("ingest", str(first), str(later), str(first), *options, cwd=tmp_path).stdout
        again = verdict_lines(out)[3:]
    else:
        for path in (first, later):
            cli("ingest", str(path), *options, cwd=tmp_path)
        again = verdict_lines(cli("ingest", str(first), *options, cwd=tmp_path).stdout)
    assert [(r["verdict"], r.get("code")) for r in again] == [
        ("rejected", "account_unknown"),
        ("duplicate", None),
    ]
    with Lifecycle(db_url) as store:
        assert [r.message_id for r in store.rejections()] == ["m1"]
        assert [e.event for e in store.events()] == ["Account Created", "Signed Up"]


@pytest.mark.parametrize("batch_size", ["1", "2", "100000"])
def test_a_file_judged_again_keeps_its_rejections_whatever_the_batch_size(
    db_url: str, tmp_path: Path, batch_size: str
) -> None:
    """A file ingested again after other input moved its accounts: each line the quarantine
    holds comes back with its first rejection, in whatever transaction it lands. A line
    alone in its transaction had been judged afresh (accepted here), one sharing it with
    a stored line had not, so the verdict depended on ``--batch-size``."""
    _judged_again(db_url, tmp_path, batch_size, one_run=False)


@pytest.mark.parametrize("batch_size", ["1", "2", "100000"])
def test_a_file_given_twice_to_one_ingest_keeps_its_rejections(
    db_url: str, tmp_path: Path, batch_size: str
) -> None:
    """The same, the file given twice to one run: its lines come again after their first
    transaction committed, and the quarantine is asked again; or in the same submission,
    where the second copy of a rejected line had made a second quarantine row with the
    first's digest, and the ingest failed every time as though it lost a race."""
    _judged_again(db_url, tmp_path, batch_size, one_run=True)


def test_a_document_given_twice_keeps_its_rejections_across_chunks(
    db_url: str, tmp_path: Path
) -> None:
    """A `.json` document is one line of many items, so its second reading's later items
    come in chunks that hold none of its first: the rejection its first reading gave an
    item, in the chunk where the second reading began, had been missed, and the item
    accepted the second time."""
    Lifecycle(db_url, create_schema=True).close()
    page = {"type": "page", "name": "Home", "userId": "u1"}
    path = tmp_path / "twice.json"
    path.write_bytes(orjson.dumps([page, page, page, msg("Signed Up", "u1", "acct_y"),
                                   msg("Account Created", "u1", "acct_y")]))  # fmt: skip
    options = ("--db", db_url, "--format", "jsonl", "--batch-size", "3")
    out = verdict_lines(cli("ingest", str(path), str(path), *options, cwd=tmp_path).stdout)
    assert [(r["index"], r["verdict"]) for r in out if r["verdict"] != "ignored"] == [
        (3, "rejected"), (4, "accepted"), (3, "rejected"), (4, "duplicate")
    ]  # fmt: skip
    with Lifecycle(db_url) as store:
        assert [e.event for e in store.events()] == ["Account Created"]
        assert len(list(store.rejections())) == 1


@pytest.mark.parametrize("sort", [(), ("--sort-by", "timestamp")])
def test_standard_input_is_new_input_on_every_run(
    db_url: str, tmp_path: Path, sort: tuple[str, ...]
) -> None:
    """Standard input is not a file a later run reads again: the same bytes at the same line
    of the next ``ingest -`` are judged afresh. They had been taken for a re-run of the
    first, and given its rejection (the account was unknown then), and not stored."""
    Lifecycle(db_url, create_schema=True).close()
    line = orjson.dumps(msg("Signed In", "u1", "acct_1")) + b"\n"
    created = write_jsonl(
        tmp_path / "created.jsonl",
        [msg("Account Created", "u1", "acct_1"), msg("Signed Up", "u1", "acct_1")],
    )
    options = ("--db", db_url, "--format", "jsonl", *sort)
    first = verdict_lines(cli("ingest", "-", *options, cwd=tmp_path, stdin=line).stdout)
    assert [(r["verdict"], r.get("code")) for r in first] == [("rejected", "account_unknown")]
    cli("ingest", str(created), *options, cwd=tmp_path)
    again = cli("ingest", "-", *options, cwd=tmp_path, stdin=line)
    assert [r["verdict"] for r in verdict_lines(again.stdout)] == ["accepted"], again.stderr
    with Lifecycle(db_url) as store:
        assert [e.event for e in store.events()][-1] == "Signed In"
        assert [(r.source, r.code) for r in store.rejections()] == [("-", "account_unknown")]


@pytest.mark.slow
def test_killed_ingest_resumes_without_duplicates(db_url: str, tmp_path: Path) -> None:
    """An ingest killed half-way and run again stores every event exactly once."""
    history = interleave([account_history(f"acct_{n}", sessions=6) for n in range(600)], seed=3)
    path = write_jsonl(tmp_path / "big.jsonl", history)
    Lifecycle(db_url, create_schema=True).close()
    args = [sys.executable, "-m", "lifecycle", "ingest", str(path), "--db", db_url,
            "--batch-size", "50"]  # fmt: skip
    proc = subprocess.Popen(
        args, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    with Lifecycle(db_url) as store:
        deadline = time.monotonic() + 60
        stored = 0
        while stored < len(history) // 20 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.01)
            with store.engine.connect() as connection:
                stored = connection.execute(select(func.count()).select_from(events)).scalar_one()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert 0 < stored < len(history), "the ingest was not interrupted half-way"
        rerun = subprocess.run(args, cwd=tmp_path, capture_output=True)
        assert rerun.returncode == 0, rerun.stderr
        mids = [e.message_id for e in store.events()]
    assert sorted(mids) == sorted(m["messageId"] for m in history)


def test_an_ingest_that_loses_its_connection_says_so_and_resumes(
    db_url: str, backend: str, tmp_path: Path
) -> None:
    """A connection cut mid-transaction (a server restart) ends ingest with exit 2 and one
    line saying the connection was lost, and a second run stores every event once. The
    line had been a SQLAlchemy error about reconnecting, which hid the cause (and on
    PostgreSQL a second line from the driver)."""
    if backend == "sqlite":
        pytest.skip("a database file has no connection to lose")
    history = interleave([account_history(f"acct_{n}", sessions=6) for n in range(300)], seed=4)
    path = write_jsonl(tmp_path / "big.jsonl", history)
    Lifecycle(db_url, create_schema=True).close()
    url = make_url(db_url)
    assert url.host is not None and url.port is not None
    with TcpProxy(url.host, url.port, cut_after=len(path.read_bytes()) // 2) as proxy:
        through = url.set(host="127.0.0.1", port=proxy.port).render_as_string(False)
        cut = cli("ingest", str(path), "--db", through, cwd=tmp_path)
    assert cut.returncode == 2
    assert cut.stderr.endswith(b"; the transaction in flight was rolled back\n"), cut.stderr
    assert cut.stderr.count(b"\n") == 1
    assert cut.stderr.startswith(
        b"lifecycle: error: database error: the connection to the database was lost"
    )
    rerun = cli("ingest", str(path), "--db", db_url, cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    with Lifecycle(db_url) as store:
        assert sorted(e.message_id for e in store.events()) == sorted(
            m["messageId"] for m in history
        )


def test_accounts_and_rejections_commands(db_url: str, tmp_path: Path) -> None:
    """`accounts show/list` and `rejections list` read back what ingest stored."""
    Lifecycle(db_url, create_schema=True).close()
    path = write_jsonl(tmp_path / "in.jsonl", sample(tmp_path, accounts=2))
    cli("ingest", str(path), "--db", db_url, cwd=tmp_path)
    shown = cli("accounts", "show", "acct_0", "--db", db_url, cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    state = orjson.loads(shown.stdout)
    assert set(state) == {"account", "status", "version", "users", "trial", "created_at",
                          "updated_at"}  # fmt: skip
    assert state["account"] == "acct_0" and state["status"] == "active"
    assert set(state["users"]["acct_0-u0"]) == {"signed_up", "role", "signed_in"}
    assert state["trial"]["plan_name"] == "Pro"
    missing = cli("accounts", "show", "nope", "--db", db_url, cwd=tmp_path)
    assert missing.returncode == 1 and b"nope" in missing.stderr
    listed = cli("accounts", "list", "--status", "active", "--db", db_url, cwd=tmp_path)
    assert [line.split(b"\t")[0] for line in listed.stdout.splitlines()] == [b"acct_0", b"acct_1"]
    rejections = cli("rejections", "list", "--format", "jsonl", "--db", db_url, cwd=tmp_path)
    codes = [r["code"] for r in verdict_lines(rejections.stdout)]
    assert codes == ["user_unknown", "trial_not_active"]
    only = cli("rejections", "list", "--code", "trial_not_active", "--format", "jsonl",
               "--db", db_url, cwd=tmp_path)  # fmt: skip
    assert [r["line"] for r in verdict_lines(only.stdout)] == [11]


def test_default_database_is_sqlite_in_the_working_directory(tmp_path: Path) -> None:
    """Without --db or the environment variable, ingest creates lifecycle.db where it runs."""
    write_jsonl(tmp_path / "in.jsonl", account_history("acct_x"))
    env = {k: v for k, v in os.environ.items() if k != "LIFECYCLE_DATABASE_URL"}
    run = subprocess.run([sys.executable, "-m", "lifecycle", "ingest", "in.jsonl"], cwd=tmp_path,
                         capture_output=True, env=env)  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "lifecycle.db").exists()
    env["LIFECYCLE_DATABASE_URL"] = f"sqlite:///{tmp_path / 'other.db'}"
    subprocess.run([sys.executable, "-m", "lifecycle", "ingest", "in.jsonl"], cwd=tmp_path,
                   capture_output=True, env=env)  # fmt: skip
    assert (tmp_path / "other.db").exists()


def test_unreachable_database_exits_2(tmp_path: Path) -> None:
    """A database that cannot be reached is a one-line error and exit code 2."""
    path = write_jsonl(tmp_path / "in.jsonl", account_history("acct_x"))
    run = cli("ingest", str(path), "--db", "postgresql://nobody@127.0.0.1:1/none", cwd=tmp_path)
    assert run.returncode == 2
    assert run.stdout == b""
    assert len(run.stderr.decode().strip().splitlines()) == 1


def test_listing_a_code_no_policy_has_says_so(tmp_path: Path) -> None:
    """`rejections list --code` with a mistyped code lists nothing, exits 0 and notes why;
    a real code with nothing quarantined lists nothing, quietly."""
    db = f"sqlite:///{tmp_path / 'l.db'}"
    path = write_jsonl(tmp_path / "in.jsonl", [msg("Signed In", "u1", "acct_9")])
    cli("ingest", str(path), "--db", db, cwd=tmp_path)
    typo = cli("rejections", "list", "--code", "acount_unknown", "--db", db, cwd=tmp_path)
    assert (typo.returncode, typo.stdout) == (0, b"")
    assert typo.stderr.decode() == (
        "lifecycle: note: nothing has code 'acount_unknown', which is not one of the default "
        "policy's codes\n"
    )
    quiet = cli("rejections", "list", "--code", "trial_mismatch", "--db", db, cwd=tmp_path)
    assert (quiet.returncode, quiet.stdout, quiet.stderr) == (0, b"", b"")
    found = cli("rejections", "list", "--code", "account_unknown", "--db", db, cwd=tmp_path)
    assert b"account_unknown" in found.stdout and found.stderr == b""


def test_text_output_escapes_control_characters_from_the_input(tmp_path: Path) -> None:
    """Ids may hold any character but NUL: the text formats print a tab, a newline or an
    escape sequence as an escape, so that a line keeps its columns, no line is faked, and
    nothing reaches the terminal; the JSON formats already escape them."""
    db = f"sqlite:///{tmp_path / 't.db'}"
    account, user = "acme\tcreated\t9\t0\nfake", "u\x1b[31mred"
    history = [msg("Account Created", user, account), msg("Signed In", user, account)]
    path = write_jsonl(tmp_path / "in.jsonl", history)
    checked = cli("check", str(path), cwd=tmp_path)
    cli("ingest", str(path), "--db", db, cwd=tmp_path)
    listed = cli("accounts", "list", "--db", db, cwd=tmp_path)
    show = cli("accounts", "show", account, "--format", "text", "--db", db, cwd=tmp_path)
    rejected = cli("rejections", "list", "--db", db, cwd=tmp_path)
    assert listed.stdout == b"acme\\tcreated\\t9\\t0\\nfake\tcreated\t1\t0\n"
    assert show.stdout.startswith(b"acme\\tcreated\\t9\\t0\\nfake: created, version 1\n")
    for output in (checked.stdout, rejected.stdout):
        reason = b"Signed In for acme\\tcreated\\t9\\t0\\nfake by u\\x1b[31mred: user"
        assert reason in output, output
    for output in (checked.stdout, listed.stdout, show.stdout, rejected.stdout):
        assert b"\x1b" not in output and b"\tcreated\t9" not in output


def test_a_json_document_is_stored_in_transactions_of_batch_size(
    db_url: str, tmp_path: Path, capfdbinary: pytest.CaptureFixture[bytes]
) -> None:
    """A `.json` document is one line of any number of messages: it was stored in one
    transaction whatever ``--batch-size`` said (a killed ingest of a large document kept
    nothing, and all of it was held in memory until the commit)."""
    from lifecycle.cli import main

    Lifecycle(db_url, create_schema=True).close()
    path = tmp_path / "export.json"
    path.write_bytes(orjson.dumps([msg("Account Created", "u1", f"acct_{n}") for n in range(30)]))
    with counted_commits() as commits:
        main(["ingest", str(path), "--db", db_url, "--batch-size", "10", "--format", "jsonl"])
    assert [r["verdict"] for r in verdict_lines(capfdbinary.readouterr().out)] == ["accepted"] * 30
    assert len(commits) >= 3


def test_a_transaction_holds_batch_size_messages_not_more(
    db_url: str, tmp_path: Path, capfdbinary: pytest.CaptureFixture[bytes]
) -> None:
    """`--batch-size N` makes transactions of N messages: 30 messages at 10 a transaction
    take two commits more than at 30 (not one more, as transactions of 20 would), and the
    text summary counts every file read."""
    from lifecycle.cli import main

    Lifecycle(db_url, create_schema=True).close()
    commits: list[int] = []
    for run, size in enumerate(("30", "30", "10")):
        path = tmp_path / f"export_{run}.jsonl"
        write_jsonl(path, [msg("Account Created", "u1", f"acct_{run}_{n}") for n in range(30)])
        with counted_commits() as seen:
            assert main(["ingest", str(path), "--db", db_url, "--batch-size", size]) == 0
        commits.append(len(seen))
    assert commits[2] - commits[1] == 2, commits
    first = tmp_path / "export_0.jsonl"
    capfdbinary.readouterr()
    assert main(["ingest", str(first), str(first), "--db", db_url]) == 0
    summary = capfdbinary.readouterr().out.decode().splitlines()
    assert summary[0] == "lifecycle ingest: 60 messages in 2 files", summary


def test_a_file_judged_before_is_found_by_an_index_and_a_long_line_is_not_a_repeat(
    tmp_path: Path,
) -> None:
    """Whether the quarantine holds lines of a file was a scan of the whole quarantine, once
    per file (15 s for 40 small files against a million rows); it is an index look-up.
    The rest of a batch line that a submission cut in two is not the line coming again:
    it had made every later chunk of a `.json` document with a rejection careful."""
    import sqlite3

    from lifecycle.store.writer import Repeats, Submission

    db = tmp_path / "t.db"
    with Lifecycle(f"sqlite:///{db}", create_schema=True) as store:
        repeats = Repeats()

        def items(first: int, last: int) -> list[Submission]:
            return [Submission({}, b"{}", "doc.json", 1, n) for n in range(first, last)]

        with store.engine.begin() as connection:
            assert not repeats.any_in(connection, items(0, 10))
        store.submit_lines([InputLine("doc.json", 1, b'{"batch": [1]}')])  # quarantined
        with store.engine.begin() as connection:
            assert not repeats.any_in(connection, items(10, 20))  # the same line, cut
            assert repeats.any_in(connection, items(0, 5))  # the line again: judged before
    query = "EXPLAIN QUERY PLAN SELECT id FROM quarantine WHERE source = ? LIMIT 1"
    plan = " ".join(str(row) for row in sqlite3.connect(db).execute(query, ("doc.json",)))
    assert "ix_quarantine_source" in plan, plan


def test_a_pipe_keeps_the_name_it_was_given(tmp_path: Path) -> None:
    """Input given as ``<(cat file)`` resolved to ``/proc/PID/fd/pipe:[N]``, another name on
    every run; what is not a regular file keeps its name. A pipe is new input on every run
    all the same: the second run judges its lines afresh, and the ``Signed Up`` the first
    rejected (before its account was created) is now accepted."""
    if not Path("/dev/fd").exists() or shutil.which("bash") is None:
        pytest.skip("process substitution needs bash and /dev/fd")
    db = f"sqlite:///{tmp_path / 't.db'}"
    history = [msg("Signed Up", "u1", "ps"), msg("Account Created", "u1", "ps")]
    path = write_jsonl(tmp_path / "ps.jsonl", history)
    ingest = f"{sys.executable} -m lifecycle ingest --db {db} --format jsonl <(cat {path})"
    runs = [subprocess.run(["bash", "-c", ingest], capture_output=True, cwd=tmp_path)
            for _ in range(2)]  # fmt: skip
    assert [verdict_lines(r.stdout)[0].get("code") for r in runs] == ["account_unknown", None]
    with Lifecycle(db) as store:
        assert [e.event for e in store.events()] == ["Account Created", "Signed Up"]
        (rejected,) = store.rejections()
    assert rejected.source.startswith("/dev/fd/"), rejected.source


def test_rejections_list_names_the_item_of_a_batch_line(tmp_path: Path) -> None:
    """Every message of a `.json` document is on line 1: `rejections list` showed them all
    as `doc.json:1`; it adds the item's index, as `check` does."""
    db = f"sqlite:///{tmp_path / 't.db'}"
    path = tmp_path / "doc.json"
    path.write_bytes(orjson.dumps([msg("Account Created", "u1", "acct_1"),
                                   msg("Signed In", "ghost", "acct_1")]))  # fmt: skip
    cli("ingest", str(path), "--db", db, cwd=tmp_path)
    listed = cli("rejections", "list", "--db", db, cwd=tmp_path).stdout.decode()
    assert listed.split("\t")[1] == f"{os.path.realpath(path)}:1[1]"


def test_a_file_name_that_is_not_utf8(tmp_path: Path) -> None:
    """A file whose name holds bytes that are not UTF-8 (a Latin-1 name on Linux): `check`
    failed writing its jsonl verdicts and `ingest` writing the quarantine's ``source``,
    with a traceback and exit 1 (read as "rejections"). The name shows U+FFFD for them."""
    name = os.fsdecode(b"caf\xe9.jsonl")
    history = [msg("Account Created", "u1", "acct_1"), msg("Signed In", "ghost", "acct_1")]
    write_jsonl(tmp_path / name, history)
    db = f"sqlite:///{tmp_path / 't.db'}"
    for command in (("check",), ("ingest", "--db", db)):
        run = cli(*command, name, "--format", "jsonl", cwd=tmp_path)
        assert (run.returncode, run.stderr) == (1, b""), run.stderr
        assert [r["file"] for r in verdict_lines(run.stdout)] == ["caf\ufffd.jsonl"] * 2
    with Lifecycle(db) as store:
        (rejected,) = store.rejections()
    assert rejected.source == os.path.join(os.path.realpath(tmp_path), "caf\ufffd.jsonl")


def test_listing_a_status_no_policy_has_says_so(tmp_path: Path) -> None:
    """`accounts list --status` with a mistyped status lists nothing, exits 0 and notes why;
    a real status that no account is in lists nothing, quietly."""
    db = f"sqlite:///{tmp_path / 'l.db'}"
    path = write_jsonl(tmp_path / "in.jsonl", [msg("Account Created", "u1", "acct_9")])
    cli("ingest", str(path), "--db", db, cwd=tmp_path)
    typo = cli("accounts", "list", "--status", "actve", "--db", db, cwd=tmp_path)
    assert (typo.returncode, typo.stdout) == (0, b"")
    assert typo.stderr.decode() == (
        "lifecycle: note: no account is in status 'actve', which is not one of the default "
        "policy's (created, trial, active, deleted)\n"
    )
    quiet = cli("accounts", "list", "--status", "active", "--db", db, cwd=tmp_path)
    assert (quiet.returncode, quiet.stdout, quiet.stderr) == (0, b"", b"")
    found = cli("accounts", "list", "--status", "created", "--db", db, cwd=tmp_path)
    assert found.stdout.startswith(b"acct_9\tcreated") and found.stderr == b""


def test_a_full_replay_cut_before_the_first_event_says_so(tmp_path: Path) -> None:
    """`replay --as-of` counts when events were stored, not their own timestamp: a history
    ingested today printed `{}` as of last year, silently, as an empty store would. Now a
    note says when the first event was recorded; a replay that prints states says nothing."""
    db = f"sqlite:///{tmp_path / 'r.db'}"
    path = write_jsonl(tmp_path / "in.jsonl", [msg("Account Created", "u1", "acct_9")])
    cli("ingest", str(path), "--db", db, cwd=tmp_path)
    for cut, point in [(("--as-of", "2024-06-01"), "--as-of 2024-06-01"),
                       (("--until", "0"), "position 0")]:  # fmt: skip
        early = cli("replay", *cut, "--db", db, cwd=tmp_path)
        assert (early.returncode, early.stdout) == (0, b"{}\n")
        note = early.stderr.decode()
        assert re.fullmatch(
            f"lifecycle: note: no event was stored up to {point}: the first \\(position 1\\) "
            r"was recorded at 20\d\d-\d\d-\d\dT[\d:.]+Z\n",
            note,
        ), note
    later = cli("replay", "--until", "1", "--db", db, cwd=tmp_path)
    assert later.stdout.startswith(b'{\n  "acct_9"') and later.stderr == b""
    empty_db = f"sqlite:///{tmp_path / 'e.db'}"
    cli("db", "upgrade", "--db", empty_db, cwd=tmp_path)
    empty = cli("replay", "--until", "0", "--db", empty_db, cwd=tmp_path)
    assert (empty.returncode, empty.stdout, empty.stderr) == (0, b"{}\n", b"")


def test_replaying_an_account_that_prints_nothing_says_why(tmp_path: Path) -> None:
    """`replay --account` of an account with no stored event, or none up to the point asked,
    prints nothing, exits 0 and notes which and why; an account it prints goes unmentioned."""
    db = f"sqlite:///{tmp_path / 'r.db'}"
    path = write_jsonl(tmp_path / "in.jsonl", [msg("Account Created", "u1", "acct_9")])
    cli("ingest", str(path), "--db", db, cwd=tmp_path)
    both = ("--account", "acct_9", "--account", "acct_0", "--account", "acct_0")
    run = cli("replay", *both, "--format", "text", "--db", db, cwd=tmp_path)
    assert (run.returncode, run.stdout) == (0, b"acct_9\tcreated\t1\t0\n")
    assert run.stderr == b"lifecycle: note: account acct_0: no event of it is stored\n"
    early = cli("replay", *both, "--until", "0", "--db", db, cwd=tmp_path)
    assert (early.returncode, early.stdout) == (0, b"{}\n")
    assert early.stderr.decode().splitlines() == [
        "lifecycle: note: account acct_9: it has no event up to that point",
        "lifecycle: note: account acct_0: no event of it is stored",
    ]


def test_the_store_commands_print_what_the_documentation_says(tmp_path: Path) -> None:
    """`accounts list --format jsonl` is the JSON of `accounts show`, one compact object a
    line; `accounts show --format text` lists the users by id and the trial; `rejections
    list --account` lists that account's messages only, and the first item of a batch line
    is `file:line`, as `check` shows it, without an index."""
    db = f"sqlite:///{tmp_path / 's.db'}"
    history = [
        *onboarding("acct_a", user="u2"),
        msg("Invite Sent", "u2", "acct_a", invitee_email="u1@example.com"),
        msg("Signed Up", "u1", "acct_a", type="invited"),
        *onboarding("acct_c"),
        msg("Signed In", "ghost", "acct_b"),
    ]
    path = write_jsonl(tmp_path / "in.jsonl", history)
    batch = {"batch": [msg("Signed In", "ghost", "acct_a"), msg("Signed In", "u1", "acct_a")]}
    with path.open("ab") as handle:
        handle.write(orjson.dumps(batch) + b"\n")
    assert cli("ingest", str(path), "--db", db, cwd=tmp_path).returncode == 1
    with Lifecycle(db) as store:
        states = {a: store.state(a) for a in ("acct_a", "acct_c")}

    listed = cli("accounts", "list", "--format", "jsonl", "--db", db, cwd=tmp_path)
    assert listed.stdout.splitlines() == [orjson.dumps(s.to_dict()) for s in states.values()]

    shown = cli("accounts", "show", "acct_a", "--format", "text", "--db", db, cwd=tmp_path)
    a = states["acct_a"]
    assert a is not None and a.trial is not None and set(a.users) == {"u1", "u2"}
    assert shown.stdout.decode().splitlines() == [
        f"acct_a: trial, version {a.version}",
        *(
            f"  {user}: signed_up={u.signed_up} role={u.role!r} signed_in={u.signed_in}"
            for user, u in sorted(a.users.items())
        ),
        f"  trial: {a.trial.to_dict()}",
    ]
    assert a.version == 7

    source = os.path.realpath(path)
    with Lifecycle(db) as store:
        quarantined = {r.account: r.raw for r in store.rejections()}
    # An item of a batch line is kept as its own JSON, not as the whole line.
    assert orjson.loads(quarantined["acct_a"]) == batch["batch"][0]
    only_b = cli("rejections", "list", "--account", "acct_b", "--db", db, cwd=tmp_path)
    assert [row.split("\t")[1:3] for row in only_b.stdout.decode().splitlines()] == [
        [f"{source}:11", "account_unknown"]
    ]
    only_a = cli("rejections", "list", "--account", "acct_a", "--db", db, cwd=tmp_path)
    assert [row.split("\t")[1:3] for row in only_a.stdout.decode().splitlines()] == [
        [f"{source}:12", "user_unknown"]
    ]
