"""`lifecycle relay` as a process: killed mid-batch and restarted, stopped by SIGTERM, status."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from lifecycle.service import Lifecycle
from lifecycle.store.outbox import shard_of
from tests.relay.fake_segment import FakeSegment
from tests.relay.helpers import assert_delivered, relay_for, submit_history


def relay_command(db_url: str, server: FakeSegment, *args: str) -> list[str]:
    return [
        sys.executable, "-m", "lifecycle", "relay", "--db", db_url, "--host", server.url,
        "--backoff", "0.02", "--max-backoff", "0.2", "--poll-interval", "0.05", *args,
    ]  # fmt: skip


def environment(server: FakeSegment) -> dict[str, str]:
    return {**os.environ, "LIFECYCLE_SEGMENT_WRITE_KEY": server.write_key}


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lifecycle", *args],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip


@pytest.mark.parametrize("backend", ["sqlite", "postgres", "mariadb"], indirect=True)
def test_killed_mid_batch_and_restarted(db_url: str, segment: FakeSegment) -> None:
    """SIGKILL while a batch is in flight: the restart sends it again, same messageIds, in order."""
    with Lifecycle(db_url, create_schema=True) as store:
        stored = submit_history(store, accounts=4)
    segment.slow(3.0)
    command = relay_command(db_url, segment, "--once", "--batch-size", "20")
    first = subprocess.Popen(command, env=environment(segment), stderr=subprocess.DEVNULL)
    try:
        assert segment.received.wait(30), "the relay sent nothing"
    finally:
        first.kill()
        first.wait(timeout=30)
    assert first.returncode == -signal.SIGKILL
    in_flight = [m["messageId"] for m in segment.requests[0].messages]
    with relay_for(db_url, segment) as relay:
        assert relay.status().delivered == 0
    again = subprocess.run(command, env=environment(segment), capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert_delivered(segment, stored, duplicates=True)
    counts = Counter(segment.message_ids())
    assert {m for m, n in counts.items() if n > 1} == set(in_flight)
    assert max(counts.values()) == 2
    with relay_for(db_url, segment) as relay:
        status = relay.status()
    assert (status.pending, status.delivered) == (0, len(stored.accepted))


def test_sigterm_stops_after_the_batch_in_flight(db_url: str, segment: FakeSegment) -> None:
    """SIGTERM mid-batch: the batch is answered and recorded, nothing more is sent, exit 0."""
    with Lifecycle(db_url, create_schema=True) as store:
        stored = submit_history(store, accounts=3)
    segment.slow(1.0)
    command = relay_command(db_url, segment, "--follow", "--batch-size", "20")
    process = subprocess.Popen(
        command, env=environment(segment), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert segment.received.wait(30), "the relay sent nothing"
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert out.startswith("delivered 20,")
    assert len(segment.requests) == 1
    with relay_for(db_url, segment) as relay:
        status = relay.status()
    assert (status.delivered, status.pending) == (20, len(stored.accepted) - 20)


def test_sigint_stops_an_idle_follower(tmp_path: Path, segment: FakeSegment) -> None:
    """A following relay with nothing to do stops promptly on SIGINT, exit 0."""
    url = f"sqlite:///{tmp_path / 'idle.db'}"
    Lifecycle(url).close()
    process = subprocess.Popen(
        relay_command(url, segment, "--follow", "--verbose"),
        env=environment(segment), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert process.stderr is not None
    assert "relaying to" in process.stderr.readline()
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=10)
    assert process.returncode == 0, err
    assert out.strip() == "delivered 0, parked 0, requests 0, failures 0"


def test_status_parked_and_errors(tmp_path: Path, segment: FakeSegment) -> None:
    """`relay status` and `relay parked` report; a missing key or a refused key exits 2."""
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    with Lifecycle(url) as store:
        stored = submit_history(store, accounts=2)
    bad = sorted(stored.accepted)[0]
    segment.refuse(bad)

    status = run("relay", "status", "--db", url, "--format", "json")
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    assert report["pending"] == len(stored.accepted) and report["delivered"] == 0
    assert report["oldest_pending_age"] >= 0

    keyless = {k: v for k, v in os.environ.items() if k != "LIFECYCLE_SEGMENT_WRITE_KEY"}
    no_key = run("relay", "--db", url, "--host", segment.url, env=keyless)
    assert no_key.returncode == 2 and "write key" in no_key.stderr
    assert no_key.stdout == ""

    wrong = run("relay", "--db", url, "--host", segment.url, "--write-key", "wrong")
    assert wrong.returncode == 2 and "401" in wrong.stderr

    done = subprocess.run(
        relay_command(url, segment), env=environment(segment), capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert "parked outbox row" in done.stderr
    assert_delivered(segment, stored, duplicates=False, parked={bad})

    text = run("relay", "--db", url, "status")
    assert text.stdout.splitlines()[:3] == [
        "pending    0",
        f"delivered  {len(stored.accepted) - 1}",
        "parked     1",
    ]
    parked = run("relay", "parked", "--db", url, "--format", "jsonl")
    (line,) = parked.stdout.splitlines()
    assert json.loads(line)["messageId"] == bad

    unnamed = run("relay", "requeue", "--db", url)
    assert unnamed.returncode == 2 and "--account, --message-id or --all" in unnamed.stderr
    segment.refused_ids.clear()
    again = run("relay", "requeue", "--db", url, "--message-id", bad)
    assert (again.returncode, again.stdout) == (0, "requeued 1 parked event\n")
    assert run("relay", "requeue", "--db", url, "--all").stdout == "requeued 0 parked events\n"
    for two in (("--all", "--account", "acct_1"), ("--account", "acct_1", "--message-id", bad)):
        both = run("relay", "requeue", "--db", url, *two)
        assert (both.returncode, both.stdout) == (2, "")
        assert "give one of --account, --message-id or --all" in both.stderr
    resent = subprocess.run(
        relay_command(url, segment), env=environment(segment), capture_output=True, text=True
    )
    assert resent.returncode == 0, resent.stderr
    assert sorted(segment.message_ids()) == sorted(stored.accepted)


def test_shard_processes_and_gzip(tmp_path: Path, segment: FakeSegment) -> None:
    """`--shard 0/2` and `--shard 1/2` together deliver everything; `--gzip` bodies are read."""
    url = f"sqlite:///{tmp_path / 'shards.db'}"
    with Lifecycle(url) as store:
        stored = submit_history(store, accounts=6)
    processes = [
        subprocess.Popen(
            relay_command(url, segment, "--shard", f"{i}/2", "--gzip"),
            env=environment(segment),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    outputs = [p.communicate(timeout=60) for p in processes]
    assert [p.returncode for p in processes] == [0, 0], [err for _, err in outputs]
    delivered = [int(out.split(",")[0].split()[1]) for out, _ in outputs]
    assert all(delivered) and sum(delivered) == len(stored.accepted)
    assert_delivered(segment, stored, duplicates=False)


def test_workers_run_a_relay_per_shard_from_one_command(db_url: str, segment: FakeSegment) -> None:
    """`--workers 2`: every event once, in per-account order, each request from one shard,
    both shards at work, and one line with the summed counts."""
    with Lifecycle(db_url, create_schema=True) as store:
        stored = submit_history(store, accounts=8)
    command = relay_command(db_url, segment, "--once", "--workers", "2", "--batch-size", "10")
    done = subprocess.run(command, env=environment(segment), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    total = len(stored.accepted)
    assert done.stdout.startswith(f"delivered {total}, parked 0, requests "), done.stdout
    assert_delivered(segment, stored, duplicates=False)
    shards = [{shard_of(m["context"]["groupId"]) % 2 for m in r.messages} for r in segment.requests]
    assert all(len(s) == 1 for s in shards)
    assert set().union(*shards) == {0, 1}


def test_workers_stop_on_sigterm_and_report_errors(tmp_path: Path, segment: FakeSegment) -> None:
    """SIGTERM to `--workers` reaches every worker (exit 0 after their batches); a refused
    key exits 2 as one relay does; `--workers` with `--shard` is a usage error."""
    url = f"sqlite:///{tmp_path / 'workers.db'}"
    with Lifecycle(url) as store:
        stored = submit_history(store, accounts=4)
    wrong = run(
        "relay", "--db", url, "--host", segment.url, "--write-key", "wrong", "--workers", "2"
    )
    assert wrong.returncode == 2 and "401" in wrong.stderr
    assert wrong.stdout == ""  # not the counts of no shard (an empty line)
    follower = subprocess.Popen(
        relay_command(url, segment, "--follow", "--workers", "2"),
        env=environment(segment), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    segment.wait_for(len(stored.accepted))
    follower.send_signal(signal.SIGTERM)
    out, err = follower.communicate(timeout=30)
    assert follower.returncode == 0, err
    assert out.startswith(f"delivered {len(stored.accepted)}, parked 0,"), out

    both = run("relay", "--db", url, "--workers", "2", "--shard", "0/2", env=environment(segment))
    assert both.returncode == 2 and "cannot be combined" in both.stderr
    too_big = run("relay", "--db", url, "--batch-size", "2501", env=environment(segment))
    assert too_big.returncode == 2 and "--batch-size" in too_big.stderr


def _relay_with(prelude: str, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`lifecycle relay --db url ARGS` in a process that first runs ``prelude``."""
    script = f"{prelude}\nimport sys\nfrom lifecycle.cli import main\nsys.exit(main(sys.argv[1:]))"
    return subprocess.run(
        [sys.executable, "-c", script, "relay", "--db", url, "--write-key", "k", *args],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_workers_say_what_is_wrong_once_and_a_bug_exits_70(tmp_path: Path) -> None:
    """Each worker found a missing client library or a wrong host for itself: N messages,
    which could run together on one line. They are now found once, before any starts. A
    bug in a worker exited 1 (multiprocessing's code, taken for "rejected"), not 70."""
    url = f"sqlite:///{tmp_path / 'workers.db'}"
    with Lifecycle(url) as store:
        submit_history(store, accounts=4)
    missing = _relay_with("import sys; sys.modules['segment'] = None", url, "--workers", "3")
    assert missing.returncode == 2
    assert missing.stderr.count("needs segment-analytics-python") == 1, missing.stderr
    assert len(missing.stderr.splitlines()) == 1
    host = _relay_with("", url, "--workers", "3", "--host", "ftp://example.com")
    assert host.returncode == 2 and len(host.stderr.splitlines()) == 1, host.stderr
    broken = _relay_with(
        "from lifecycle.relay import Relay\n"
        "def run(self, **options): raise RuntimeError('broken')\n"
        "Relay.run = run",
        url, "--workers", "2", "--host", "http://127.0.0.1:9",
    )  # fmt: skip
    assert broken.returncode == 70, broken.stderr
    assert broken.stderr.count("RuntimeError: broken") == 2
    assert broken.stdout == ""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal: Linux")
def test_workers_stop_when_their_command_is_killed(tmp_path: Path, segment: FakeSegment) -> None:
    """SIGKILL to a `--follow --workers 2` command: its workers stop too, none left behind."""
    url = f"sqlite:///{tmp_path / 'orphans.db'}"
    Lifecycle(url).close()
    command = subprocess.Popen(
        relay_command(url, segment, "--follow", "--workers", "2", "--verbose"),
        env=environment(segment), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert command.stderr is not None
    for _ in range(2):  # each worker logs once it runs
        assert "relaying to" in command.stderr.readline()
    workers = _children(command.pid)
    assert len(workers) == 2
    command.kill()
    command.wait(timeout=10)
    command.stderr.close()
    deadline = time.monotonic() + 15
    while any(Path(f"/proc/{pid}").exists() for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [pid for pid in workers if _alive(pid)], "a worker outlived its command"


def _children(parent: int) -> list[int]:
    """The processes whose parent is ``parent`` (from /proc)."""
    pids = (int(stat.parent.name) for stat in Path("/proc").glob("[0-9]*/stat"))
    return [pid for pid in pids if (fields := _stat(pid)) and int(fields[1]) == parent]


def _alive(pid: int) -> bool:
    """Running, not a zombie waiting to be reaped."""
    fields = _stat(pid)
    return fields is not None and fields[0] != "Z"


def _stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/PID/stat`` after the command name (state, ppid, ...), if it exists."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def test_once_gives_up_after_max_failures(db_url: str, segment: FakeSegment) -> None:
    """`--once` against a Segment that keeps failing exits 2 and leaves everything pending."""
    with Lifecycle(db_url, create_schema=True) as store:
        stored = submit_history(store, accounts=2)
    segment.fail(503, times=3)
    command = relay_command(db_url, segment, "--once", "--max-failures", "3")
    gave_up = subprocess.run(command, env=environment(segment), capture_output=True, text=True)
    assert gave_up.returncode == 2, gave_up.stderr
    assert "gave up after 3 failed attempts in a row" in gave_up.stderr
    assert segment.message_ids() == []
    with relay_for(db_url, segment) as relay:
        assert relay.status().pending == len(stored.accepted)
    again = subprocess.run(command, env=environment(segment), capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert_delivered(segment, stored)
