"""The command line, run as a real subprocess: output formats, exit codes, inputs, policies."""

from __future__ import annotations

import argparse
import gc
import gzip
import importlib.util
import io
import os
import re
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any, ClassVar

import orjson
import pytest

from lifecycle import DEFAULT_POLICY
from lifecycle.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
KEYS = ["line", "index", "file", "messageId", "event", "groupId", "verdict"]


def lifecycle(
    *args: str | Path,
    stdin: bytes | None = None,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run ``python -m lifecycle ARGS`` and capture its exit code, stdout and stderr."""
    return subprocess.run(
        [sys.executable, "-m", "lifecycle", *map(str, args)],
        input=stdin if stdin is not None else b"",
        capture_output=True,
        cwd=cwd,
        env=env,
        timeout=60,
        check=False,
    )


def verdicts(result: subprocess.CompletedProcess[bytes]) -> list[dict[str, Any]]:
    """The JSON objects of a ``--format jsonl`` run, one per stdout line."""
    return [orjson.loads(line) for line in result.stdout.splitlines()]


def line(event: str, user: str = "u1", account: str = "acct_1", **extra: Any) -> bytes:
    """One JSONL line holding a track call."""
    return orjson.dumps(
        {"type": "track", "event": event, "userId": user, "context": {"groupId": account}, **extra}
    )


def write(path: Path, *lines: bytes) -> Path:
    """Write ``lines`` to ``path`` as JSONL and return the path."""
    path.write_bytes(b"".join(item + b"\n" for item in lines))
    return path


def short(
    line_no: int,
    verdict: str,
    event: str | None = None,
    *,
    file: str,
    index: int = 0,
    mid: str | None = None,
    account: str | None = "acct_1",
    code: str | None = None,
    reason: str | None = None,
) -> dict[str, Any]:
    """The expected JSONL object of one message."""
    out: dict[str, Any] = {
        "line": line_no,
        "index": index,
        "file": file,
        "messageId": mid,
        "event": event,
        "groupId": account,
        "verdict": verdict,
    }
    if code is not None:
        out["code"] = code
        out["reason"] = reason
    return out


def assert_usage_error(result: subprocess.CompletedProcess[bytes], message: str) -> None:
    """Exit 2, exactly ``message`` as one line on stderr, nothing on stdout."""
    assert (result.returncode, result.stdout) == (2, b"")
    assert result.stderr.decode() == message + "\n"


# -- --format jsonl -----------------------------------------------------------------------------


def test_jsonl_one_object_per_message_in_order(tmp_path: Path) -> None:
    """jsonl prints exactly one object per message, in input order, with the documented keys."""
    path = write(
        tmp_path / "events.jsonl",
        line("Account Created", messageId="m1"),
        line("Signed In", user="u9", messageId="m2"),
        orjson.dumps({"type": "identify", "userId": "u1", "messageId": "m3"}),
        line("Signed Up", messageId="m4"),
        line("Signed Up", messageId="m4"),
    )
    result = lifecycle("check", path, "--format", "jsonl")
    assert (result.returncode, result.stderr) == (1, b"")
    records = verdicts(result)
    file = str(path)
    assert records == [
        short(1, "accepted", "Account Created", file=file, mid="m1"),
        short(
            2,
            "rejected",
            "Signed In",
            file=file,
            mid="m2",
            code="user_unknown",
            reason="Signed In for acct_1 by u9: user u9 is unknown "
            "(expected Signed Up or Account Added User first)",
        ),
        short(3, "ignored", None, file=file, mid="m3", account=None),
        short(4, "accepted", "Signed Up", file=file, mid="m4"),
        short(5, "duplicate", "Signed Up", file=file, mid="m4"),
    ]
    assert [list(r) for r in records] == [KEYS, KEYS + ["code", "reason"], KEYS, KEYS, KEYS]
    assert result.stdout.endswith(b"\n") and result.stdout.count(b"\n") == 5


def test_jsonl_batch_lines_give_an_index(tmp_path: Path) -> None:
    """Each batch item gets its own object with its position as index and the line's number."""
    batch = orjson.dumps(
        {
            "batch": [
                {"event": "Account Created", "userId": "u1", "messageId": "b0"},
                7,
                {"event": "Signed In", "userId": "u1", "messageId": "b2"},
            ],
            "context": {"groupId": "acct_1"},
        }
    )
    path = write(tmp_path / "batch.jsonl", line("Account Created", account="acct_0"), batch)
    records = verdicts(lifecycle("check", path, "--format", "jsonl"))
    assert [(r["line"], r["index"], r["verdict"], r.get("code")) for r in records] == [
        (1, 0, "accepted", None),
        (2, 0, "accepted", None),
        (2, 1, "rejected", "malformed_json"),
        (2, 2, "rejected", "user_unknown"),
    ]
    assert records[2]["reason"] == "batch item 1 is not a JSON object (got a number)"
    assert [r["groupId"] for r in records] == ["acct_0", "acct_1", None, "acct_1"]


def test_malformed_lines_are_rejections_not_crashes(tmp_path: Path) -> None:
    """Bad JSON, a JSON array and invalid UTF-8 are each malformed_json; the run goes on."""
    path = write(
        tmp_path / "bad.jsonl",
        b'{"event": "Account Created",',
        b'[{"event": "Account Created"}]',
        b'{"event": "Account Created", "userId": "\xff\xfe", "context": {"groupId": "a"}}',
        line("Account Created"),
    )
    result = lifecycle("check", path, "--format", "jsonl")
    assert (result.returncode, result.stderr) == (1, b"")
    records = verdicts(result)
    assert [(r["line"], r["verdict"], r.get("code")) for r in records] == [
        (1, "rejected", "malformed_json"),
        (2, "rejected", "malformed_json"),
        (3, "rejected", "malformed_json"),
        (4, "accepted", None),
    ]
    assert records[0]["reason"].startswith("not valid JSON (")
    assert records[1]["reason"] == "not a JSON object (got an array)"
    # It said "str is not valid UTF-8: surrogates not allowed", at column 1.
    assert records[2]["reason"] == (
        'not valid JSON (not UTF-8 text: byte 0xFF, after \'reated", "userId": "\','
        " is not part of a UTF-8 character)"
    )


def test_blank_lines_are_skipped_but_counted(tmp_path: Path) -> None:
    """Blank and whitespace-only lines give no verdict, and later line numbers stay physical."""
    path = tmp_path / "gaps.jsonl"
    path.write_bytes(
        b"\n" + line("Account Created") + b"\n\n   \t\n" + line("Signed Up") + b"\r\n\n"
    )
    records = verdicts(lifecycle("check", path, "--format", "jsonl"))
    assert [(r["line"], r["verdict"]) for r in records] == [(2, "accepted"), (5, "accepted")]


def test_a_byte_order_mark_is_skipped_at_the_start_of_a_file_only(tmp_path: Path) -> None:
    """A UTF-8 BOM (as Windows tools write) before the first line costs no message; one
    anywhere else is still malformed JSON. The same holds in each file and for .json."""
    bom = b"\xef\xbb\xbf"
    first = tmp_path / "a.jsonl"
    first.write_bytes(bom + line("Account Created") + b"\r\n" + bom + line("Signed Up") + b"\r\n")
    second = tmp_path / "b.jsonl"
    second.write_bytes(bom + b"\n" + line("Signed Up") + b"\n")
    document = tmp_path / "c.json"
    document.write_bytes(bom + b"[" + line("Signed In", "u2") + b"]")
    result = lifecycle("check", first, second, document, "--format", "jsonl")
    assert [(r["line"], r["verdict"], r.get("code")) for r in verdicts(result)] == [
        (1, "accepted", None),
        (2, "rejected", "malformed_json"),
        (2, "accepted", None),
        (1, "rejected", "user_unknown"),
    ]


def test_sorting_by_timestamp_keeps_an_impossible_instant_where_it_stands(tmp_path: Path) -> None:
    """A timestamp that does not exist in UTC is judged invalid_timestamp, not a crash."""
    path = write(
        tmp_path / "export.jsonl",
        line("Signed Up", timestamp="2024-01-02T00:00:00Z"),
        line("Signed In", timestamp="0001-01-01T00:00:00+01:00"),
        line("Account Created", timestamp="2024-01-01T00:00:00Z"),
    )
    result = lifecycle("check", path, "--sort-by", "timestamp", "--format", "jsonl")
    assert [(r["line"], r.get("code")) for r in verdicts(result)] == [
        (3, None),
        (2, "invalid_timestamp"),
        (1, None),
    ]


def test_sorting_by_timestamp_orders_nanoseconds(tmp_path: Path) -> None:
    """`--sort-by timestamp` puts an account's messages in timestamp order (docs/replay.md).
    Go and Java clients send nanoseconds: 300 ns apart is not a tie, yet the sort key
    dropped the digits past microseconds and kept the input order, so the later
    Account Created was judged second and the Signed Up before it account_unknown."""
    path = write(
        tmp_path / "export.jsonl",
        line("Signed Up", timestamp="2024-01-01T09:00:00.123456900Z"),
        line("Account Created", timestamp="2024-01-01T09:00:00.123456600Z"),
    )
    result = lifecycle("check", path, "--sort-by", "timestamp", "--format", "jsonl")
    assert [(r["line"], r["verdict"]) for r in verdicts(result)] == [
        (2, "accepted"),
        (1, "accepted"),
    ]


def test_sorting_by_timestamp_ties_the_same_instant_written_twice(tmp_path: Path) -> None:
    """The same instant written with more zeros, or in another offset, is a tie: input order."""
    path = write(
        tmp_path / "export.jsonl",
        line("Account Created", timestamp="2024-01-01T09:00:00.1234567Z"),
        line("Signed Up", timestamp="2024-01-01T10:00:00.123456700+01:00"),
    )
    result = lifecycle("check", path, "--sort-by", "timestamp", "--format", "jsonl")
    assert [(r["line"], r["verdict"]) for r in verdicts(result)] == [
        (1, "accepted"),
        (2, "accepted"),
    ]


@pytest.mark.parametrize("db", [[], ["--db", "sqlite:///store.db"]], ids=["check", "ingest"])
def test_sorting_does_not_unpack_a_batch_inside_a_batch(tmp_path: Path, db: list[str]) -> None:
    """Batches do not nest: an item holding a batch is one message, ignored. Sorted,
    `check` unpacked it: one of its two messages was reported and both were applied, so
    the next line was user_already_signed_up instead of account_unknown."""
    inner = b'{"batch": [' + line("Account Created") + b", " + line("Signed Up") + b"]}"
    path = write(tmp_path / "nested.jsonl", b'{"batch": [' + inner + b"]}", line("Signed Up"))
    command = "ingest" if db else "check"
    plain = lifecycle("check", path, "--format", "jsonl")
    done = lifecycle(
        command, path, *db, "--sort-by", "timestamp", "--format", "jsonl", cwd=tmp_path
    )
    expected = [(1, "ignored", None), (2, "rejected", "account_unknown")]
    for run in (plain, done):
        assert [(r["line"], r["verdict"], r.get("code")) for r in verdicts(run)] == expected


@pytest.mark.parametrize("sort", [[], ["--sort-by", "timestamp"]], ids=["read", "sorted"])
def test_ingest_shows_each_file_as_given(tmp_path: Path, sort: list[str]) -> None:
    """A file given twice under two spellings is one file to the store, and two to the
    report, as to `check`: ingest labelled every verdict with the last spelling."""
    write(
        tmp_path / "p1.jsonl",
        line("Account Created", messageId="m1"),
        line("Signed In", messageId="m2"),
    )
    spellings = ["p1.jsonl", "./p1.jsonl"]
    db = ["--db", "sqlite:///store.db"]
    done = lifecycle("ingest", *spellings, *db, *sort, "--format", "jsonl", cwd=tmp_path)
    checked = lifecycle("check", *spellings, *sort, "--format", "jsonl", cwd=tmp_path)
    shown = [(r["file"], r["line"], r["verdict"], r.get("code")) for r in verdicts(done)]
    assert shown == [(r["file"], r["line"], r["verdict"], r.get("code")) for r in verdicts(checked)]
    assert [f for f, *_ in shown] == ["p1.jsonl", "p1.jsonl", "./p1.jsonl", "./p1.jsonl"]
    assert [v for _, _, v, _ in shown] == ["accepted", "rejected", "duplicate", "rejected"]


@pytest.mark.skipif(sys.platform == "win32", reason="needs a file size limit (POSIX)")
def test_sorting_on_a_full_disk_is_an_error_not_rejections(tmp_path: Path) -> None:
    """A temporary directory that fills up while sorting is one line on stderr and exit 2,
    as any other write (it was SQLite's traceback and exit 1, "rejections found"), and the
    spill file is removed."""
    import resource

    path = write(
        tmp_path / "export.jsonl",
        *(line("Signed In", timestamp=f"2024-01-01T00:00:{n % 60:02}Z") for n in range(4000)),
    )
    spill = tmp_path / "tmp"
    spill.mkdir()

    def small_files() -> None:  # a file may not grow past 64 KiB: a disk that is full
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 16, 1 << 16))

    done = subprocess.run(
        [sys.executable, "-m", "lifecycle", "check", str(path), "--sort-by", "timestamp"],
        capture_output=True, env={**os.environ, "TMPDIR": str(spill)}, preexec_fn=small_files,
        timeout=60, check=False,
    )  # fmt: skip
    assert (done.returncode, done.stdout) == (2, b"")
    assert re.fullmatch(
        rb"lifecycle: error: sorting by timestamp: [^\n]+ \(\S+/lifecycle-sort-\w+/sort.db\)\n",
        done.stderr,
    ), done.stderr
    assert not list(spill.iterdir())


def test_state_carries_across_files(tmp_path: Path) -> None:
    """Files are judged in the order given through one state; line numbers restart per file."""
    first = write(tmp_path / "a.jsonl", line("Account Created"), line("Signed Up"))
    second = write(tmp_path / "b.jsonl", line("Signed In"), line("Account Created"))
    result = lifecycle("check", first, second, "--format", "jsonl")
    records = verdicts(result)
    assert [(r["file"], r["line"], r["verdict"], r.get("code")) for r in records] == [
        (str(first), 1, "accepted", None),
        (str(first), 2, "accepted", None),
        (str(second), 1, "accepted", None),
        (str(second), 2, "rejected", "account_exists"),
    ]
    reversed_order = verdicts(lifecycle("check", second, first, "--format", "jsonl"))
    assert [r.get("code") for r in reversed_order] == [
        "account_unknown",
        None,
        "account_exists",
        None,
    ]


def test_stdin_is_read_with_a_dash() -> None:
    """`-` reads standard input, and its verdicts name the file `-`."""
    data = line("Account Created") + b"\n" + line("Trial Ended") + b"\n"
    result = lifecycle("check", "-", "--format", "jsonl", stdin=data)
    assert result.returncode == 1
    assert [(r["file"], r["line"], r.get("code")) for r in verdicts(result)] == [
        ("-", 1, None),
        ("-", 2, "trial_not_active"),
    ]


def test_gzip_input(tmp_path: Path) -> None:
    """A gzip file is read transparently and gives the same verdicts as the plain file."""
    plain = write(tmp_path / "events.jsonl", line("Account Created"), line("Signed In"))
    packed = tmp_path / "events.jsonl.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    unpacked = verdicts(lifecycle("check", plain, "--format", "jsonl"))
    records = verdicts(lifecycle("check", packed, "--format", "jsonl"))
    assert [r["file"] for r in records] == [str(packed)] * 2
    assert [{**r, "file": None} for r in records] == [{**r, "file": None} for r in unpacked]
    assert [r.get("code") for r in records] == [None, "user_unknown"]


@pytest.mark.parametrize("command", ["check", "ingest"])
def test_a_gzip_file_with_damaged_data_is_unreadable_input(tmp_path: Path, command: str) -> None:
    """Compressed data that zlib cannot inflate (a damaged block, not a file cut short) is
    input that cannot be read to its end, as a truncated gzip file is: one line, exit 2.
    zlib's own error escaped the reader as a bug, exit 70 with a traceback."""
    reserved_block = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff\x07" + b"\x00" * 16
    path = tmp_path / "events.jsonl.gz"
    path.write_bytes(gzip.compress(line("Account Created") + b"\n") + reserved_block)
    store = ["--db", f"sqlite:///{tmp_path / 'store.db'}"] if command == "ingest" else []
    result = lifecycle(command, path, *store, "--format", "jsonl")
    assert result.returncode == 2, result.stderr.decode()
    (message,) = result.stderr.decode().splitlines()
    assert message.startswith(f"lifecycle: error: cannot read {path} after line 1: ")


def test_a_gzip_file_is_closed_once_read(tmp_path: Path) -> None:
    """Reading a gzip file leaves no file open (the file under the gzip reader stayed open
    until it was collected, a ResourceWarning)."""
    from lifecycle.reader import read_lines

    packed = tmp_path / "events.jsonl.gz"
    packed.write_bytes(gzip.compress(line("Account Created") + b"\n"))
    lines = read_lines([str(packed)])
    assert [x.number for x in lines] == [1]
    del lines
    gc.collect()


def test_a_line_too_long_is_not_read_whole(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A line was read whole before the 4 MiB rule applied: a file with no newline (or a
    binary one given by mistake) filled memory. Past the line limit, the start is kept
    and the rest skipped, counted to its ending however the chunks fall."""
    from lifecycle import messages, reader
    from lifecycle.reader import items_of, read_lines

    monkeypatch.setattr(messages, "MAX_LINE_BYTES", 100)
    monkeypatch.setattr(reader, "_SKIP_CHUNK", 7)
    ok = line("Account Created")
    assert len(ok) <= 100
    path = tmp_path / "long.jsonl"
    path.write_bytes(
        ok + b"\n" + b"a" * 300 + b"\r\n" + b"b" * 227 + b"\r\n" + ok + b"\r\n"
        + b"d" * 100 + b"\r\n" + b"e" * 101 + b"\n" + b"c" * 150
    )  # fmt: skip
    lines = list(read_lines([str(path)]))
    assert [(x.number, x.oversize) for x in lines] == [
        (1, 0), (2, 300), (3, 227), (4, 0), (5, 0), (6, 101), (7, 150)
    ]  # fmt: skip
    assert lines[1].raw == b"a" * 105 and lines[6].raw == b"c" * 105
    assert lines[4].raw == b"d" * 100 + b"\r\n"  # as long as allowed, with CR LF: whole
    # A byte order mark before a first line too long: the rest of it is no line of its own.
    path.write_bytes(b"\xef\xbb\xbf" + b"f" * 200 + b"\n" + ok + b"\n")
    assert [(x.number, x.oversize) for x in read_lines([str(path)])] == [(1, 200), (2, 0)]
    (item,) = items_of(lines[1])
    assert (item.item, item.raw, item.whole_line) == (
        messages.Malformed(
            "the line is 300 bytes, more than the 100 (64 MiB) a line may have; "
            "the quarantine keeps its first 4,194,304"
        ),
        b"a" * 105,
        True,
    )


@pytest.mark.parametrize("sort", [[], ["--sort-by", "timestamp"]])
def test_check_gives_the_reason_ingest_gives_for_a_line_over_the_message_limit(
    tmp_path: Path, sort: list[str]
) -> None:
    """`ingest` judges input exactly like `check`, with the same output: a line over 4 MiB
    had a reason of its own in plain `check` (without "the quarantine keeps its first ..."),
    while `check --sort-by timestamp` and `ingest` gave the longer one."""
    from lifecycle.messages import MAX_BYTES

    path = write(
        tmp_path / "large.jsonl",
        line("Account Created", properties={"note": "x" * MAX_BYTES}),
        b'{"not json' + b" " * MAX_BYTES,
    )
    db = f"sqlite:///{tmp_path / 'store.db'}"
    checked = lifecycle("check", path, *sort, "--format", "jsonl")
    ingested = lifecycle("ingest", path, "--db", db, *sort, "--format", "jsonl")
    assert ingested.returncode == checked.returncode == 1
    assert [r["reason"] for r in verdicts(checked)] == [r["reason"] for r in verdicts(ingested)]


def test_a_malformed_line_of_the_largest_message_size_is_quarantined_whole() -> None:
    """A malformed line of exactly the largest message size (its line ending not counted)
    is kept whole, with its reason as it is; one byte more keeps the first bytes only and
    says so."""
    from lifecycle.messages import MAX_BYTES, Malformed, kept

    largest = b"x" * MAX_BYTES + b"\r\n"
    assert kept(Malformed("why"), largest) == (Malformed("why"), largest)
    item, raw = kept(Malformed("why"), b"x" * (MAX_BYTES + 1) + b"\n")
    assert raw == b"x" * MAX_BYTES
    assert (
        item.reason
        == f"why; the quarantine keeps its first {MAX_BYTES:,} of {MAX_BYTES + 1:,} bytes"
    )


def test_a_line_of_300_mb_is_judged_in_bounded_memory(tmp_path: Path) -> None:
    """The real limit, in a process of its own: its peak memory stays below the line's size."""
    path = tmp_path / "huge.jsonl"
    with path.open("wb") as out:
        for _ in range(300):
            out.write(b"a" * (1 << 20))
        out.write(b"\n" + line("Account Created") + b"\n")
    script = (
        "import resource, subprocess, sys;"
        f"done = subprocess.run([sys.executable, '-m', 'lifecycle', 'check', {str(path)!r},"
        " '--format', 'jsonl'], capture_output=True);"
        "sys.stdout.buffer.write(done.stdout);"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, check=True)
    *records, peak = done.stdout.splitlines()
    assert [(r["line"], r.get("code")) for r in map(orjson.loads, records)] == [
        (1, "malformed_json"),
        (2, None),
    ]
    assert orjson.loads(records[0])["reason"].startswith("the line is 314,572,800 bytes")
    assert int(peak) < 250_000  # KiB: the line alone is 307,200


def test_more_files_than_the_process_may_open_at_once(tmp_path: Path) -> None:
    """Every file was kept open from the start: more files than `ulimit -n` (a glob over
    years of daily exports) failed with "Too many open files". Each is opened first, to
    fail before any output when one cannot be read, then again when its turn comes."""
    import resource

    paths = [write(tmp_path / f"day_{n:03}.jsonl", line("Account Created", account=f"a{n}"))
             for n in range(300)]  # fmt: skip
    paths.insert(150, tmp_path / "day_missing.jsonl")

    def few_files() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (128, 128))

    def run(*args: Path) -> subprocess.CompletedProcess[bytes]:
        command = [sys.executable, "-m", "lifecycle", "check", *map(str, args), "--format", "jsonl"]
        return subprocess.run(command, capture_output=True, preexec_fn=few_files, timeout=60)

    done = run(*paths[:150], *paths[151:])
    assert done.returncode == 0, done.stderr
    assert [r["groupId"] for r in verdicts(done)] == [f"a{n}" for n in range(300)]
    missing = run(*paths)
    assert (missing.returncode, missing.stdout) == (2, b"")
    assert missing.stderr.startswith(b"lifecycle: error: cannot read ")


def test_gzip_on_standard_input() -> None:
    """Gzip on standard input is detected by its magic bytes, as a file's is (its compressed
    bytes were read as lines, each one malformed_json)."""
    data = line("Account Created") + b"\n" + line("Signed In") + b"\n"
    result = lifecycle("check", "-", "--format", "jsonl", stdin=gzip.compress(data))
    assert [(r["file"], r["line"], r.get("code")) for r in verdicts(result)] == [
        ("-", 1, None),
        ("-", 2, "user_unknown"),
    ]


@pytest.mark.parametrize("compress", [True, False])
def test_standard_input_that_arrives_one_byte_first(compress: bool) -> None:
    """A pipe may hold only the first byte when it is looked at: gzip's second magic byte
    is waited for (the input had been read as lines, each one malformed_json), and plain
    input loses no byte to the look."""
    data = line("Account Created") + b"\n" + line("Signed In") + b"\n"
    data = gzip.compress(data) if compress else data
    proc = subprocess.Popen(
        [sys.executable, "-m", "lifecycle", "check", "-", "--format", "jsonl"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert proc.stdin is not None
    proc.stdin.write(data[:1])
    proc.stdin.flush()
    time.sleep(0.5)
    out, _ = proc.communicate(data[1:], timeout=60)
    found = [orjson.loads(row) for row in out.splitlines()]
    assert [(r["line"], r.get("code")) for r in found] == [(1, None), (2, "user_unknown")]


@pytest.mark.parametrize("name", ["export.JSON", "export.Json.GZ"])
def test_a_json_document_is_known_by_its_extension_in_any_case(tmp_path: Path, name: str) -> None:
    """A pretty-printed `.JSON` array (as Windows tools name files) is one document, as a
    `.json` is: it was read as lines, each one malformed."""
    document = b"[\n  " + line("Account Created") + b",\n  " + line("Signed In") + b"\n]\n"
    path = tmp_path / name
    path.write_bytes(gzip.compress(document) if name.endswith(".GZ") else document)
    result = lifecycle("check", path, "--format", "jsonl")
    assert [(r["line"], r["index"], r.get("code")) for r in verdicts(result)] == [
        (1, 0, None),
        (1, 1, "user_unknown"),
    ]


# -- --format text ------------------------------------------------------------------------------


def test_text_summary(tmp_path: Path) -> None:
    """The text summary counts verdicts and codes and lists the first rejections with file:line."""
    batch = orjson.dumps(
        {"batch": [{"event": "Signed Out", "userId": "u1", "context": {"groupId": "acct_1"}}, 1]}
    )
    path = write(
        tmp_path / "events.jsonl",
        line("Account Created", messageId="m1"),
        line("Account Created", messageId="m1"),
        line("Signed In"),
        orjson.dumps({"type": "page", "userId": "u1"}),
        batch,
    )
    result = lifecycle("check", path, cwd=tmp_path)
    assert (result.returncode, result.stderr) == (1, b"")
    assert result.stdout.decode() == textwrap.dedent(
        f"""\
        lifecycle check: 6 messages in 1 file
          accepted              1
          rejected              3
          duplicate             1
          ignored               1

        rejections by code:
          user_unknown              2
          malformed_json            1

        first 3 rejections:
          {path}:3  user_unknown  Signed In for acct_1 by u1: user u1 is unknown (expected Signed Up or Account Added User first)
          {path}:5  user_unknown  Signed Out for acct_1 by u1: user u1 is unknown (expected Signed Up or Account Added User first)
          {path}:5[1]  malformed_json  batch item 1 is not a JSON object (got a number)
        """  # noqa: E501 - the summary lines are long
    )


def test_text_summary_show_limits_the_listed_rejections(tmp_path: Path) -> None:
    """--show N lists only the first N rejections while still counting them all."""
    path = write(tmp_path / "e.jsonl", *(line("Signed In", user=f"u{i}") for i in range(4)))
    text = lifecycle("check", path, "--show", "1").stdout.decode()
    assert "  account_unknown            4\n" in text
    assert "first 1 rejection:\n" in text
    assert text.count("account_unknown  Signed In") == 1


def test_text_summary_of_a_clean_file(tmp_path: Path) -> None:
    """A file with nothing rejected prints only the counts and exits 0."""
    path = write(tmp_path / "ok.jsonl", line("Account Created"), line("Signed Up"))
    result = lifecycle("check", path)
    assert result.returncode == 0
    assert result.stdout.decode() == (
        "lifecycle check: 2 messages in 1 file\n"
        "  accepted              2\n"
        "  rejected              0\n"
        "  duplicate             0\n"
        "  ignored               0\n"
    )


def test_text_summary_counts_every_file_read_and_says_one_message(tmp_path: Path) -> None:
    """An empty file is still a file read; one message is "1 message"."""
    empty = write(tmp_path / "empty.jsonl")
    one = write(tmp_path / "one.jsonl", line("Account Created"))
    assert lifecycle("check", empty).stdout.decode().splitlines()[0] == (
        "lifecycle check: 0 messages in 1 file"
    )
    assert lifecycle("check", empty, one, "-").stdout.decode().splitlines()[0] == (
        "lifecycle check: 1 message in 3 files"
    )


def test_text_output_to_a_terminal_that_cannot_encode_the_input(tmp_path: Path) -> None:
    """Characters stdout's encoding lacks are printed as backslash escapes (they were a
    UnicodeEncodeError traceback, exit 1, after the whole input was judged); jsonl stays
    UTF-8 JSON."""
    path = write(tmp_path / "cjk.jsonl", line("Account Created", account="客户"),
                 line("Signed In", user="用户", account="客户"))  # fmt: skip
    env = {**os.environ, "PYTHONIOENCODING": "ascii"}
    db = ("--db", f"sqlite:///{tmp_path / 'cjk.db'}")
    ingested = lifecycle("ingest", path, *db, env=env)
    assert (ingested.returncode, ingested.stderr) == (1, b"")
    assert b"by \\u7528\\u6237: user \\u7528\\u6237 is unknown" in ingested.stdout
    listed = lifecycle("rejections", "list", *db, env=env)
    assert (listed.returncode, listed.stderr) == (0, b"")
    assert b"user_unknown\tSigned In for \\u5ba2\\u6237 by \\u7528\\u6237" in listed.stdout
    accounts = lifecycle("accounts", "list", *db, env=env)
    assert (accounts.returncode, accounts.stdout) == (0, b"\\u5ba2\\u6237\tcreated\t1\t0\n")
    replayed = lifecycle(
        "replay", *db, "--format", "text", env=env
    )  # it wrote UTF-8 whatever the encoding
    assert (replayed.returncode, replayed.stdout) == (0, accounts.stdout)
    checked = lifecycle("check", path, "--format", "jsonl", env=env)
    assert [r.get("groupId") for r in verdicts(checked)] == ["客户", "客户"]


# -- progress bars ------------------------------------------------------------------------------


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class _Bar:
    """Stands in for tqdm: records the bar's total and each update, with no timing."""

    made: ClassVar[list[_Bar]] = []

    def __init__(self, total: int | None = None, **_: Any) -> None:
        self.total, self.n, self.updates = total, 0, list[int]()
        _Bar.made.append(self)

    def update(self, n: int) -> None:
        self.n += n
        self.updates.append(n)

    def __enter__(self) -> _Bar:
        return self

    def __exit__(self, *_: object) -> None:
        pass


@pytest.fixture
def bars(monkeypatch: pytest.MonkeyPatch) -> list[_Bar]:
    """The bars a command run in this process draws, redrawn at every line (on a terminal:
    the test sets stderr, which the capture of its output sets again after the fixtures)."""
    from lifecycle.cli import common

    monkeypatch.setattr(common, "tqdm", _Bar)
    monkeypatch.setattr(common.Progress, "_EVERY", 1)
    monkeypatch.setattr(_Bar, "made", [])
    return _Bar.made


@pytest.mark.parametrize("command", ["check", "ingest"])
def test_a_sorted_run_draws_a_bar_that_follows_the_reading(
    tmp_path: Path, bars: list[_Bar], command: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With --sort-by timestamp the bar advances line by line as the input is read to be
    sorted, and is full at the end (check drew none, ingest's stayed at 0%)."""
    from lifecycle.cli import main

    monkeypatch.setattr(sys, "stderr", _Terminal())

    path = write(tmp_path / "e.jsonl", line("Account Created"), b"", line("Signed Up"))
    db = ["--db", f"sqlite:///{tmp_path / 'e.db'}"] if command == "ingest" else []
    assert main([command, str(path), *db, "--sort-by", "timestamp", "--format", "jsonl"]) == 0
    (bar,) = bars
    assert bar.total == bar.n == path.stat().st_size
    assert bar.updates[:2] == [len(line("Account Created")) + 1, len(line("Signed Up")) + 1]


def test_a_gzip_file_of_any_name_has_no_known_size(
    tmp_path: Path, bars: list[_Bar], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A gzip file is counted in the bytes it holds, not in its size on disk: its bar has no
    total (one named without .gz was sized on disk and overshot)."""
    from lifecycle.cli import main

    monkeypatch.setattr(sys, "stderr", _Terminal())

    packed = tmp_path / "events.jsonl"
    packed.write_bytes(gzip.compress(line("Account Created") + b"\n"))
    assert main(["check", str(packed), "--format", "jsonl"]) == 0
    (bar,) = bars
    assert (bar.total, bar.n) == (None, len(line("Account Created")) + 1)


# -- signals ------------------------------------------------------------------------------------


def _started(command: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """``python -m lifecycle COMMAND`` started, reading the test's pipe as standard input."""
    pipes = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    return subprocess.Popen([sys.executable, "-m", "lifecycle", *command], env=env, **pipes)


def _terminated(process: subprocess.Popen[bytes]) -> tuple[int, bytes, bytes]:
    """SIGTERM to ``process`` while it waits for more input; its exit code, stdout, stderr."""
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=60)  # before its input ends, which would end it as well
    assert process.stdout is not None and process.stderr is not None
    return process.returncode, process.stdout.read(), process.stderr.read()


def _wait_for(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@pytest.mark.skipif(sys.platform == "win32", reason="SIGTERM cannot be handled on Windows")
@pytest.mark.parametrize("command", ["check", "ingest"])
def test_sigterm_ends_a_sorted_run_as_sigint_does(tmp_path: Path, command: str) -> None:
    """SIGTERM while sorting: the spill is removed, one line on stderr, exit 143 (128 +
    15); the process had ended on the spot, its spill left in the temporary directory."""
    spill = tmp_path / "tmp"
    spill.mkdir()
    db = ["--db", f"sqlite:///{tmp_path / 'e.db'}"] if command == "ingest" else []
    env = {**os.environ, "TMPDIR": str(spill)}
    with _started([command, "-", *db, "--sort-by", "timestamp"], env=env) as process:
        assert process.stdin is not None
        process.stdin.write(line("Account Created") + b"\n")
        process.stdin.flush()
        _wait_for(lambda: any(spill.iterdir()))
        assert _terminated(process) == (143, b"", b"lifecycle: terminated\n")
    assert not list(spill.iterdir())


@pytest.mark.skipif(sys.platform == "win32", reason="SIGTERM cannot be handled on Windows")
def test_sigterm_keeps_what_ingest_committed(tmp_path: Path) -> None:
    """SIGTERM during ingest keeps the transactions committed, as SIGINT does: a re-run
    finds them stored."""
    db = tmp_path / "e.db"
    messages = line("Account Created", messageId="m1") + b"\n" + line("Signed Up", messageId="m2")

    def stored() -> bool:
        try:
            with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
                return bool(conn.execute("SELECT count(*) FROM events").fetchone()[0] == 2)
        except sqlite3.OperationalError:  # not made yet
            return False

    with _started(["ingest", "-", "--db", f"sqlite:///{db}", "--batch-size", "1"]) as process:
        assert process.stdin is not None
        process.stdin.write(messages + b"\n")
        process.stdin.flush()
        _wait_for(stored)
        assert _terminated(process) == (143, b"", b"lifecycle: terminated\n")
    again = lifecycle("ingest", "-", "--db", f"sqlite:///{db}", "--format", "jsonl", stdin=messages)
    assert [r["verdict"] for r in verdicts(again)] == ["duplicate", "duplicate"]


# -- exit codes ---------------------------------------------------------------------------------


def test_exit_0_when_nothing_is_rejected(tmp_path: Path) -> None:
    """Accepted, duplicate and ignored messages alone exit 0."""
    path = write(
        tmp_path / "ok.jsonl",
        line("Account Created", messageId="m1"),
        line("Account Created", messageId="m1"),
        line("Order Completed"),
    )
    result = lifecycle("check", path, "--format", "jsonl")
    assert result.returncode == 0
    assert [r["verdict"] for r in verdicts(result)] == ["accepted", "duplicate", "ignored"]


def test_exit_1_when_something_is_rejected(tmp_path: Path) -> None:
    """A single rejection among accepted messages exits 1."""
    path = write(tmp_path / "e.jsonl", line("Account Created"), line("Account Created"))
    assert lifecycle("check", path, "--format", "jsonl").returncode == 1


def test_exit_2_for_a_missing_file_before_any_output(tmp_path: Path) -> None:
    """A missing file fails the run with one line on stderr, even after a readable file."""
    good = write(tmp_path / "good.jsonl", line("Account Created"))
    missing = tmp_path / "missing.jsonl"
    result = lifecycle("check", good, missing, "--format", "jsonl")
    assert_usage_error(
        result, f"lifecycle: error: cannot read {missing}: No such file or directory"
    )


def test_exit_2_for_a_directory(tmp_path: Path) -> None:
    """A directory given as input fails the run with one line on stderr."""
    result = lifecycle("check", tmp_path)
    assert_usage_error(result, f"lifecycle: error: cannot read {tmp_path}: Is a directory")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["check", "x.jsonl", "--bogus"],
            "lifecycle: error: unrecognized arguments: --bogus (see lifecycle --help)",
        ),
        (
            ["check"],
            "lifecycle check: error: the following arguments are required: FILE "
            "(see lifecycle check --help)",
        ),
        (
            ["check", "x.jsonl", "--format", "xml"],
            "lifecycle check: error: argument --format: invalid choice: 'xml' "
            "(choose from 'text', 'jsonl') (see lifecycle check --help)",
        ),
        (
            ["check", "x.jsonl", "--show", "-1"],
            "lifecycle check: error: argument --show: must be at least 0, got -1 "
            "(see lifecycle check --help)",
        ),
        (
            ["replay", "--until", "-5"],
            "lifecycle replay: error: argument --until: must be at least 0, got -5 "
            "(see lifecycle replay --help)",
        ),
        (
            ["replay", "--workers", "0"],
            "lifecycle replay: error: argument --workers: must be at least 1, got 0 "
            "(see lifecycle replay --help)",
        ),
        (
            ["ingest", "x.jsonl", "--batch-size", "many"],
            "lifecycle ingest: error: argument --batch-size: not an integer: 'many' "
            "(see lifecycle ingest --help)",
        ),
        (
            ["audit"],
            "lifecycle audit: error: the following arguments are required: --policy "
            "(see lifecycle audit --help)",
        ),
    ],
    ids=[
        "unknown-option", "no-file", "bad-format", "show", "until", "workers", "batch-size",
        "audit-policy",
    ],
)  # fmt: skip
def test_exit_2_for_usage_errors(args: list[str], message: str) -> None:
    """Usage errors exit 2 with one line on stderr and nothing on stdout."""
    assert_usage_error(lifecycle(*args), message)


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (Linux)")
def test_exit_2_when_the_output_cannot_be_written(tmp_path: Path) -> None:
    """A full disk is the environment's problem: one line on stderr and exit 2, no traceback."""
    path = write(tmp_path / "e.jsonl", line("Account Created"), line("Signed Up"))
    with open("/dev/full", "wb") as full:
        done = subprocess.run(
            [sys.executable, "-m", "lifecycle", "check", str(path), "--format", "jsonl"],
            stdout=full,
            stderr=subprocess.PIPE,
            timeout=60,
            check=False,
        )
    assert (done.returncode, done.stderr) == (2, b"lifecycle: error: No space left on device\n")


def test_exit_2_for_an_unknown_command() -> None:
    """An unknown command exits 2 with one line on stderr naming it, and nothing on stdout."""
    result = lifecycle("frobnicate")
    assert (result.returncode, result.stdout) == (2, b"")
    assert result.stderr.startswith(b"lifecycle: error: argument COMMAND: invalid choice: ")
    assert result.stderr.count(b"\n") == 1 and b"'frobnicate'" in result.stderr


def test_exit_2_for_a_policy_that_cannot_be_loaded(tmp_path: Path) -> None:
    """An unimportable or non-policy --policy fails with one line on stderr. An attribute
    the module lacks is named as missing: it was "not a lifecycle Policy" too."""
    path = write(tmp_path / "e.jsonl", line("Account Created"))
    assert_usage_error(
        lifecycle("check", path, "--policy", "json:dumps"),
        "lifecycle: error: --policy 'json:dumps': dumps is of type function, not a lifecycle "
        "Policy",
    )
    assert_usage_error(
        lifecycle("check", path, "--policy", "json:NOPE"),
        "lifecycle: error: --policy 'json:NOPE': json has no NOPE",
    )
    for spec in ("json", "json:", ":dumps"):
        assert_usage_error(
            lifecycle("check", path, "--policy", spec),
            f"lifecycle: error: --policy {spec!r}: expected module:attribute",
        )
    assert_usage_error(
        lifecycle("check", path, "--policy", "no_such_module_here:P"),
        "lifecycle: error: --policy 'no_such_module_here:P': cannot import "
        "no_such_module_here: No module named 'no_such_module_here'",
    )


def test_exit_2_for_a_policy_module_that_raises(tmp_path: Path) -> None:
    """A policy module that fails as it is imported exits 2 (not 1, "rejections found"),
    with its traceback, for the user to fix it, and one line naming the error."""
    (tmp_path / "broken_policy.py").write_text("raise RuntimeError('no config')\n")
    path = write(tmp_path / "e.jsonl", line("Account Created"))
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    result = lifecycle("check", path, "--policy", "broken_policy:P", env=env)
    assert (result.returncode, result.stdout) == (2, b"")
    assert b"Traceback" in result.stderr and b"broken_policy.py" in result.stderr
    assert result.stderr.endswith(
        b"lifecycle: error: --policy 'broken_policy:P': importing broken_policy raised"
        b" RuntimeError: no config\n"
    )


@pytest.mark.parametrize("exit_call", ["raise SystemExit(0)", "import sys; sys.exit('usage')"])
def test_exit_2_for_a_policy_module_that_exits(tmp_path: Path, exit_call: str) -> None:
    """A policy module that exits as it is imported (a script that runs its main()) is a
    module that raises: exit 2 with its traceback (it ended check silently, exit 0, or 1 -
    "rejections found" - for sys.exit with a message)."""
    (tmp_path / "script_policy.py").write_text(exit_call + "\n")
    path = write(tmp_path / "e.jsonl", line("Account Created"))
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    result = lifecycle("check", path, "--policy", "script_policy:P", env=env)
    assert (result.returncode, result.stdout) == (2, b"")
    assert b"Traceback" in result.stderr and b"script_policy.py" in result.stderr
    assert re.search(
        rb"\nlifecycle: error: --policy 'script_policy:P': importing script_policy raised"
        rb" SystemExit: \S+\n\Z",
        result.stderr,
    ), result.stderr


def test_exit_2_for_a_policy_guard_that_raises(tmp_path: Path) -> None:
    """A guard that raises while judging ends check with exit 2 and one line naming the
    guard, where it raised and the event (it was a traceback and exit 1)."""
    (tmp_path / "guarded.py").write_text(
        "from lifecycle import DEFAULT_POLICY, Guard\n"
        "def check(state, event):\n"
        "    return event.properties['username']\n"
        "P = DEFAULT_POLICY.with_guard('Signed Up', Guard('named', 'unnamed', check))\n"
    )
    path = write(tmp_path / "e.jsonl", line("Account Created"), line("Signed Up"))
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    result = lifecycle("check", path, "--policy", "guarded:P", env=env)
    assert (result.returncode, result.stdout) == (2, b"")
    assert re.fullmatch(
        rb"lifecycle: error: guard 'named' raised KeyError: 'username' at \S+guarded.py:3,"
        rb" on Signed Up for \S+ by \S+\n",
        result.stderr,
    ), result.stderr


@pytest.mark.parametrize("option", ["--timeout", "--backoff", "--max-backoff", "--poll-interval"])
@pytest.mark.parametrize("value", ["0", "-1", "inf", "nan", "1e300", "604801"])
def test_relay_waits_must_be_positive_seconds(option: str, value: str) -> None:
    """A relay wait of zero or less, infinite, NaN or past a week is a usage error (a
    traceback, a busy retry loop or a wait without end before; ``--timeout 1e300`` failed
    at the first request, past what the clock can hold)."""
    assert_usage_error(
        lifecycle("relay", "--write-key", "k", "--once", option, value),
        f"lifecycle relay: error: argument {option}: must be a number of seconds above 0 and at"
        f" most 604800 (a week), got {value} (see lifecycle relay --help)",
    )


@pytest.mark.parametrize("option", ["--timeout", "--backoff", "--max-backoff", "--poll-interval"])
def test_relay_waits_may_be_a_week_exactly(option: str) -> None:
    """A week is the longest wait the relay takes, and it takes it: the bound is inclusive."""
    args = build_parser().parse_args(["relay", "--once", option, "604800"])
    assert getattr(args, option.removeprefix("--").replace("-", "_")) == 604800.0


# -- --policy -----------------------------------------------------------------------------------


@pytest.fixture
def policy_env() -> dict[str, str]:
    """An environment in which `tests.policies:SUBSCRIPTIONS` can be imported."""
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path}


def test_check_with_a_custom_policy(tmp_path: Path, policy_env: dict[str, str]) -> None:
    """--policy module:attr judges under that policy: its event counts and its code is given."""
    path = write(
        tmp_path / "subs.jsonl",
        line("Account Created"),
        line("Subscription Started", properties={"plan_name": "Pro"}),
        line("Subscription Started"),
    )
    custom = lifecycle(
        "check",
        path,
        "--format",
        "jsonl",
        "--policy",
        "tests.policies:SUBSCRIPTIONS",
        env=policy_env,
    )
    assert (custom.returncode, custom.stderr) == (1, b"")
    assert [(r["verdict"], r.get("code")) for r in verdicts(custom)] == [
        ("accepted", None),
        ("accepted", None),
        ("rejected", "subscription_not_allowed"),
    ]
    default = lifecycle("check", path, "--format", "jsonl", env=policy_env)
    assert default.returncode == 0
    assert [r["verdict"] for r in verdicts(default)] == ["accepted", "ignored", "ignored"]


def test_audit_text_orders_codes_by_count_and_shows_n_findings(
    tmp_path: Path, policy_env: dict[str, str]
) -> None:
    """The audit's text summary: the codes by how often they occur, most first (not by
    name), then the first `--show N` findings in stored order, and none with `--show 0`."""
    fax = {"method": "fax"}
    path = write(
        tmp_path / "history.jsonl",
        line("Account Created"),
        line("Signed Up"),
        *[line("Signed In", properties=fax), line("Signed Out")] * 2,
        line("Signed In", properties=fax),
    )
    db = f"sqlite:///{tmp_path / 'store.db'}"
    assert lifecycle("ingest", path, "--db", db, env=policy_env).returncode == 0

    def audit(*args: str) -> list[str]:
        done = lifecycle("audit", "--policy", "tests.policies:KNOWN_METHODS", "--db", db, *args,
                         env=policy_env)  # fmt: skip
        assert (done.returncode, done.stderr) == (1, b"")
        return done.stdout.decode().splitlines()

    shown = audit("--show", "2")
    assert [row.split() for row in shown[:3]] == [
        ["lifecycle", "audit", "under", "policy", "'b2b-saas+known_method':", "5", "rejections"],
        ["unknown_method", "3"],
        ["not_signed_in", "2"],
    ]
    assert shown[3:5] == ["", "first findings:"]
    assert [row.split()[:5] for row in shown[5:]] == [
        ["position", "3", "acct_1", "v3", "unknown_method"],
        ["position", "4", "acct_1", "v4", "not_signed_in"],
    ]
    assert audit("--show", "0") == shown[:3]


def test_accounts_show_replays_a_headless_account_under_its_policy(
    tmp_path: Path, policy_env: dict[str, str]
) -> None:
    """An account of a custom-policy store whose head row is gone is replayed: under the
    default policy that stops at the first custom event, and the error said to read it
    with `--policy`, which `accounts show` did not have."""
    db = f"sqlite:///{tmp_path / 'store.db'}"
    custom = ("--policy", "tests.policies:SUBSCRIPTIONS")
    path = write(
        tmp_path / "subs.jsonl",
        line("Account Created"),
        line("Subscription Started", properties={"plan_name": "Pro"}),
    )
    assert lifecycle("ingest", path, "--db", db, *custom, env=policy_env).returncode == 0
    with closing(sqlite3.connect(tmp_path / "store.db")) as connection:
        connection.execute("DELETE FROM account_heads")
        connection.execute("DELETE FROM snapshots")
        connection.commit()
    default = lifecycle("accounts", "show", "acct_1", "--db", db, env=policy_env)
    assert default.returncode == 2 and b"(--policy)" in default.stderr
    shown = lifecycle("accounts", "show", "acct_1", "--db", db, *custom, env=policy_env)
    assert shown.returncode == 0, shown.stderr
    assert orjson.loads(shown.stdout)["status"] == "active"


def test_retry_under_a_custom_policy_and_without_forwarding(
    tmp_path: Path, policy_env: dict[str, str]
) -> None:
    """`rejections retry` of a store written under a custom policy and `--no-forward`.
    Under the default policy a quarantined `Subscription Started` is ignored: it had been
    deleted from the quarantine and counted as accepted, with nothing stored. It stays
    now; `--policy` judges it as the store's policy does; `--no-forward` queues nothing
    for Segment, as the ingest did not."""
    from sqlalchemy import func, select

    from lifecycle.service import Lifecycle
    from lifecycle.store.schema import outbox

    db = f"sqlite:///{tmp_path / 'store.db'}"
    custom = ("--policy", "tests.policies:SUBSCRIPTIONS")
    path = write(
        tmp_path / "subs.jsonl",
        line("Signed In", messageId="early"),
        line("Account Created"),
        line("Subscription Started", properties={"plan_name": "Pro"}),
        line("Subscription Started", messageId="again"),
        line("Signed Up"),
    )
    ingest = lifecycle("ingest", path, "--db", db, "--no-forward", *custom, env=policy_env)
    assert ingest.returncode == 1
    retry = lifecycle("rejections", "retry", "--db", db, "--no-forward", "--format", "json",
                      env=policy_env)  # fmt: skip
    assert retry.returncode == 1
    assert orjson.loads(retry.stdout) == {
        "accepted": 1,
        "duplicate": 0,
        "still_rejected": 0,
        "ignored": 1,
        "codes": {},
    }
    with Lifecycle(db) as store:
        assert [(r.message_id, r.code) for r in store.rejections()] == [
            ("again", "subscription_not_allowed")
        ]
        assert [e.message_id for e in store.events()][-1] == "early"
        with store.engine.connect() as connection:
            assert connection.execute(select(func.count()).select_from(outbox)).scalar() == 0
    text = lifecycle("rejections", "retry", "--db", db, *custom, env=policy_env)
    assert text.returncode == 1
    assert text.stdout.splitlines() == [
        b"lifecycle rejections retry: 0 accepted, 0 already stored, 1 still rejected",
        b"  subscription_not_allowed          1",
    ]


def test_diagram_with_a_custom_policy(policy_env: dict[str, str]) -> None:
    """`diagram --policy` draws the custom policy, new transition included."""
    result = lifecycle("diagram", "--policy", "tests.policies:SUBSCRIPTIONS", env=policy_env)
    assert result.returncode == 0
    assert "    created --> active: Subscription Started\n" in result.stdout.decode()


# -- diagram --------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["mermaid", "dot"])
def test_diagram_prints_the_policy_diagram(fmt: str) -> None:
    """`diagram --format F` prints exactly what the default policy generates in format F."""
    result = lifecycle("diagram", "--format", fmt)
    assert (result.returncode, result.stderr) == (0, b"")
    assert result.stdout.decode() == DEFAULT_POLICY.diagram(fmt)


def test_diagram_defaults_to_mermaid() -> None:
    """`diagram` without --format prints Mermaid."""
    assert lifecycle("diagram").stdout.decode() == DEFAULT_POLICY.diagram("mermaid")


# -- --help ---------------------------------------------------------------------------------------


def command_paths(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[str, ...]]:
    """Every command path of the parser, the top level and nested sub-commands included."""
    yield path
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from command_paths(sub, (*path, name))


COMMAND_PATHS = list(command_paths(build_parser()))


def test_every_command_is_collected() -> None:
    """The help test below sees check and diagram, so new commands are covered the same way."""
    assert {("check",), ("diagram",), ()} <= set(COMMAND_PATHS)


@pytest.mark.parametrize("path", COMMAND_PATHS, ids=lambda p: " ".join(p) or "lifecycle")
def test_help_works_for_every_command(path: tuple[str, ...]) -> None:
    """`--help` exits 0 and prints the command's usage on stdout."""
    result = lifecycle(*path, "--help")
    assert (result.returncode, result.stderr) == (0, b"")
    assert result.stdout.decode().startswith(" ".join(("usage: lifecycle", *path)))


def _parser_at(path: tuple[str, ...]) -> argparse.ArgumentParser:
    parser = build_parser()
    for name in path:
        action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = action.choices[name]
    return parser


@pytest.mark.parametrize("path", COMMAND_PATHS, ids=lambda p: " ".join(p) or "lifecycle")
def test_every_command_describes_itself_and_every_argument(path: tuple[str, ...]) -> None:
    """A command that runs something says what in its --help, and so does each option."""
    parser = _parser_at(path)
    groups = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not groups:
        assert parser.description, f"lifecycle {' '.join(path)} has no description"
    undescribed = [
        a.option_strings or a.dest
        for a in parser._actions
        if a.help is None and not isinstance(a, argparse._SubParsersAction)
    ]
    assert undescribed == []


# -- the bundled example ------------------------------------------------------------------------

SAMPLE = ROOT / "examples" / "sample-history.jsonl"
SAMPLE_CODES = {
    "account_unknown": 1,
    "trial_already_started": 1,
    "not_signed_in": 1,
    "user_unknown": 1,
    "malformed_json": 1,
}


def test_sample_history_reports_exactly_its_illegal_events() -> None:
    """The sample history exits 1 and is rejected only for the illegal events it was built with."""
    result = lifecycle("check", "examples/sample-history.jsonl", "--format", "jsonl", cwd=ROOT)
    assert (result.returncode, result.stderr) == (1, b"")
    records = verdicts(result)
    assert Counter(r["code"] for r in records if "code" in r) == SAMPLE_CODES
    assert Counter(r["verdict"] for r in records) == {
        "accepted": 34,
        "rejected": 5,
        "duplicate": 1,
        "ignored": 2,
    }
    assert records[0] == {
        "line": 1,
        "index": 0,
        "file": "examples/sample-history.jsonl",
        "messageId": "msg-0001",
        "event": "Account Created",
        "groupId": "acct_initech",
        "verdict": "accepted",
    }
    assert len({r["groupId"] for r in records} - {None}) == 4
    assert any(r["index"] > 0 for r in records)


def test_sample_history_text_summary() -> None:
    """The README's command exits 1 and lists the sample's codes, one rejection each."""
    result = lifecycle("check", "examples/sample-history.jsonl", cwd=ROOT)
    assert result.returncode == 1
    text = result.stdout.decode()
    section = text.split("rejections by code:\n")[1].split("\n\n")[0]
    assert {row.split()[0]: int(row.split()[1]) for row in section.splitlines()} == SAMPLE_CODES
    assert SAMPLE.read_bytes().count(b"\n") == 40


@pytest.mark.parametrize(
    ("module", "url", "extra"),
    [("psycopg", "postgresql://u@127.0.0.1:1/x", "postgres"),
     ("pymysql", "mariadb://u@127.0.0.1:1/x", "mariadb")],
)  # fmt: skip
def test_exit_2_naming_the_extra_when_the_driver_is_missing(
    module: str, url: str, extra: str
) -> None:
    """A server URL whose driver is not installed (plain `pip install lifecycle`) printed an
    ImportError traceback and exited 1, which scripts read as "rejections found"."""
    code = (
        f"import sys; sys.modules[{module!r}] = None\n"
        "from lifecycle.cli import main\n"
        f"sys.exit(main(['accounts', 'list', '--db', {url!r}]))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert (done.returncode, done.stdout) == (2, "")
    (message,) = done.stderr.splitlines()
    assert message.startswith("lifecycle: error: cannot open the event store: the ")
    assert message.endswith(f"driver is not installed (import of {module} halted; None in "
                            f"sys.modules): pip install 'lifecycle[{extra}]'")  # fmt: skip


@pytest.mark.parametrize(
    ("url", "message"),
    [("postgresql+nosuchdrv://u@127.0.0.1:1/x", None),
     ("postgresql+asyncpg://u@127.0.0.1:1/x",
      "the postgresql driver is not installed (No module named 'asyncpg'): install asyncpg, "
      "or drop '+asyncpg' from the URL for lifecycle's own (pip install 'lifecycle[postgres]')"),
     ("oracle://u@127.0.0.1:1/x",
      "'oracle://u@127.0.0.1:1/x': the database URL must look like sqlite:///FILE, "
      "postgresql://USER@HOST/DB or mariadb://USER@HOST/DB")],
)  # fmt: skip
def test_exit_2_for_a_driver_lifecycle_does_not_pick(url: str, message: str | None) -> None:
    """A URL naming another driver is not told to install lifecycle's extra, which would not
    bring that driver; a database lifecycle does not support gets the usual URL line."""
    if url.startswith("postgresql+asyncpg") and importlib.util.find_spec("asyncpg"):
        pytest.skip("asyncpg is installed here")
    done = lifecycle("accounts", "list", "--db", url)
    assert (done.returncode, done.stdout) == (2, b"")
    (line,) = done.stderr.decode().splitlines()
    assert line.startswith("lifecycle: error: cannot open the event store: ")
    if message is not None:
        assert line.endswith(message), line


@pytest.mark.parametrize(
    ("url", "message"),
    [("postgresql://u@127.0.0.1:54x2/db", "cannot open the event store: the database URL must"),
     ("sqlite://x.db", "cannot open the event store: 'sqlite://x.db': Invalid SQLite URL"),
     ("sqlite://", "'sqlite://' names no file: a store in memory is gone when the command"),
     ("sqlite:///", "'sqlite:///' names no file"),
     ("sqlite:///:memory:", "'sqlite:///:memory:' names no file"),
     ("sqlite:///file::memory:?uri=true", "'sqlite:///file::memory:?uri=true' names no file"),
     ("sqlite:///file:x.db?mode=memory&uri=true", "'sqlite:///file:x.db?mode=memory&uri=true'"
      " names no file"),
     ("sqlite:///file:/x.db?vfs=memdb&uri=true", "'sqlite:///file:/x.db?vfs=memdb&uri=true'"
      " names no file")],
)  # fmt: skip
def test_exit_2_with_one_line_for_a_url_that_cannot_be_meant(
    url: str, message: str, tmp_path: Path
) -> None:
    """A port that is not a number had raised ValueError from URL parsing (a traceback,
    exit 1); a malformed SQLite URL printed SQLAlchemy's four-line message; an SQLite URL
    naming no file gave a store in memory, reported on, then gone."""
    path = write(tmp_path / "in.jsonl", line("Account Created"))
    for command in (("ingest", str(path)), ("accounts", "list"), ("db", "upgrade")):
        done = lifecycle(*command, "--db", url, cwd=tmp_path)
        assert (done.returncode, done.stdout) == (2, b""), done.stderr
        (error,) = done.stderr.decode().splitlines()
        assert error.startswith(f"lifecycle: error: {message}"), error


def test_read_commands_do_not_create_a_store(tmp_path: Path) -> None:
    """A mistyped SQLite path given to a command that only reads (or relays) had created
    and migrated a new empty store, and reported that it held nothing, exit 0. Only
    `ingest` and `db upgrade` create a store."""
    url = f"sqlite:///{tmp_path / 'typo.db'}"
    for command in (
        ("accounts", "list"),
        ("rejections", "list"),
        ("replay",),
        ("db", "current"),
        ("relay", "status"),
    ):
        done = lifecycle(*command, "--db", url, cwd=tmp_path)
        assert (done.returncode, done.stdout) == (2, b""), command
        (error,) = done.stderr.decode().splitlines()
        assert error == (
            f"lifecycle: error: no event store at {tmp_path / 'typo.db'} ({url}); "
            "`lifecycle ingest` or `lifecycle db upgrade` creates one"
        )
        assert not (tmp_path / "typo.db").exists()
    assert lifecycle("db", "upgrade", "--db", url, cwd=tmp_path).returncode == 0
    assert lifecycle("accounts", "list", "--db", url, cwd=tmp_path).returncode == 0


def _tables(path: Path) -> set[str]:
    with closing(sqlite3.connect(path)) as connection:
        found = connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        # Not SQLite's own: `sqlite_sequence` stays once a table with AUTOINCREMENT was made.
        return {name for (name,) in found if not name.startswith("sqlite_")}


def test_read_commands_refuse_a_file_that_holds_no_store(tmp_path: Path) -> None:
    """An application's own SQLite database, an empty file, a store downgraded to base or
    one whose revision table is empty was migrated by any command that reads a store,
    which then reported that it held nothing: lifecycle's tables were put into a file that
    was not the store meant."""
    own = tmp_path / "app.db"
    unversioned = tmp_path / "unversioned.db"
    for path, table in ((own, "orders (id INTEGER)"),
                        (unversioned, "lifecycle_version (version_num VARCHAR(32))")):  # fmt: skip
        with closing(sqlite3.connect(path)) as connection:
            connection.execute(f"CREATE TABLE {table}")
            connection.commit()
    empty = tmp_path / "empty.db"
    empty.touch()
    downgraded = tmp_path / "downgraded.db"
    for step in ("upgrade", "downgrade base"):
        assert lifecycle("db", *step.split(), "--db", f"sqlite:///{downgraded}").returncode == 0
    for path, tables in (
        (own, {"orders"}),
        (unversioned, {"lifecycle_version"}),
        (empty, set()),
        (downgraded, set()),
    ):
        url = f"sqlite:///{path}"
        for command in (
            ("accounts", "list"),
            ("accounts", "show", "acct_1"),
            ("rejections", "list"),
            ("replay",),
            ("relay", "status"),
        ):
            done = lifecycle(*command, "--db", url, cwd=tmp_path)
            assert (done.returncode, done.stdout) == (2, b""), command
            assert done.stderr.decode().splitlines() == [
                f"lifecycle: error: {path} ({url}) is not an event store: it holds no "
                "lifecycle schema; `lifecycle db upgrade` sets one up in it"
            ]
        assert _tables(path) == tables
    assert lifecycle("db", "current", "--db", f"sqlite:///{own}").stdout == b"base (head is 0009)\n"
    # A store at an older revision is still migrated by the first command that reads it.
    old = tmp_path / "old.db"
    assert lifecycle("db", "upgrade", "0006", "--db", f"sqlite:///{old}").returncode == 0
    assert lifecycle("accounts", "list", "--db", f"sqlite:///{old}").returncode == 0
    assert lifecycle("db", "current", "--db", f"sqlite:///{old}").stdout == b"0009 (head)\n"


def test_ingest_of_a_missing_file_creates_no_store(tmp_path: Path) -> None:
    """A file that cannot be read fails ingest before the store is made: it had left a new,
    migrated store behind, for a run that stored nothing."""
    good = write(tmp_path / "good.jsonl", line("Account Created"))
    missing = tmp_path / "missing.jsonl"
    url = f"sqlite:///{tmp_path / 'new.db'}"
    assert_usage_error(
        lifecycle("ingest", good, missing, "--db", url),
        f"lifecycle: error: cannot read {missing}: No such file or directory",
    )
    assert not (tmp_path / "new.db").exists()


def test_the_installed_command_finds_a_policy_module_of_the_working_directory(
    tmp_path: Path,
) -> None:
    """`lifecycle check --policy myapp.tracking:POLICY` run from the project: the console
    script's import path held its own directory, not the working one, and the module was
    "not found" (it worked only as `python -m lifecycle`)."""
    script = Path(sys.executable).with_name("lifecycle")
    if not script.exists():
        pytest.skip("the lifecycle console script is not installed next to this Python")
    (tmp_path / "myapp").mkdir()
    (tmp_path / "myapp" / "__init__.py").write_text("")
    module = "from lifecycle import DEFAULT_POLICY\nPOLICY = DEFAULT_POLICY.extend(name='mine')\n"
    (tmp_path / "myapp" / "tracking.py").write_text(module)
    path = write(tmp_path / "in.jsonl", line("Account Created"))
    done = subprocess.run(
        [script, "check", path, "--policy", "myapp.tracking:POLICY"],
        cwd=tmp_path, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": ""},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "accepted              1" in done.stdout


def _closing(redirect: str, *args: str | Path, cwd: Path) -> subprocess.CompletedProcess[bytes]:
    """``python -m lifecycle ARGS`` started with a standard stream closed (``2>&-``)."""
    command = ["sh", "-c", f'exec "$@" {redirect}', "sh", sys.executable, "-m", "lifecycle"]
    return subprocess.run([*command, *map(str, args)], capture_output=True, cwd=cwd, timeout=60)


def test_a_closed_standard_stream_is_not_a_rejection(tmp_path: Path) -> None:
    """Started with stderr, stdin or stdout closed, a command died with a traceback and
    exit 1, which a script reads as "something was rejected": with stderr closed even a
    clean file exited 1, and `ingest` stored nothing."""
    good = write(tmp_path / "good.jsonl", line("Account Created"))
    bad = write(tmp_path / "bad.jsonl", b"not json")
    assert _closing("2>&-", "check", good, cwd=tmp_path).returncode == 0
    assert _closing("2>&-", "check", bad, cwd=tmp_path).returncode == 1
    url = f"sqlite:///{tmp_path / 'store.db'}"
    assert _closing("2>&-", "ingest", good, "--db", url, cwd=tmp_path).returncode == 0
    assert lifecycle("accounts", "list", "--db", url).stdout.startswith(b"acct_1")
    no_stdin = _closing("<&-", "check", "-", cwd=tmp_path)
    assert (no_stdin.returncode, no_stdin.stderr) == (
        2,
        b"lifecycle: error: cannot read -: standard input is closed\n",
    )
    no_stdout = _closing(">&-", "ingest", good, "--db", url, cwd=tmp_path)
    assert (no_stdout.returncode, no_stdout.stderr) == (
        2,
        b"lifecycle: error: standard output is closed: nothing can be written\n",
    )


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full on this system")
@pytest.mark.parametrize("args", [["--help"], ["--version"], ["check", "--help"]])
def test_help_that_cannot_be_written_is_an_error(args: list[str], tmp_path: Path) -> None:
    """argparse ignores a failed write: `lifecycle --help > /dev/full` exited 0."""
    done = _closing(">/dev/full", *args, cwd=tmp_path)
    assert (done.returncode, done.stderr) == (
        2,
        b"lifecycle: error: cannot write the output: No space left on device\n",
    )


def test_a_bug_exits_70_with_its_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """An exception no command expects propagated, and Python exited 1: "rejected"."""
    from lifecycle.cli import check, main

    def broken(args: argparse.Namespace) -> int:
        raise RuntimeError("a bug")

    monkeypatch.setattr(check, "run", broken)
    assert main(["check", str(write(tmp_path / "good.jsonl", line("Account Created")))]) == 70
    error = capsys.readouterr().err
    assert "RuntimeError: a bug" in error
    assert error.endswith(
        "lifecycle: internal error (a bug, please report it with the traceback above)\n"
    )


def test_an_empty_db_option_is_a_usage_error(tmp_path: Path) -> None:
    """`--db "$UNSET"` fell back to $LIFECYCLE_DATABASE_URL, then to ./lifecycle.db."""
    assert_usage_error(
        lifecycle("accounts", "list", "--db", "", cwd=tmp_path),
        "lifecycle: error: --db is empty: give a database URL, or leave --db out for the default",
    )
    assert not (tmp_path / "lifecycle.db").exists()


def test_show_0_lists_no_rejection(tmp_path: Path) -> None:
    """`--show 0` printed a heading, "first 0 rejections:", over nothing."""
    done = lifecycle("check", write(tmp_path / "bad.jsonl", b"not json"), "--show", "0")
    assert done.returncode == 1
    assert done.stdout.decode().endswith("rejections by code:\n  malformed_json            1\n")


def test_files_may_follow_options(tmp_path: Path) -> None:
    """`check a.jsonl --format jsonl b.jsonl` was "unrecognized arguments: b.jsonl"."""
    first = write(tmp_path / "a.jsonl", line("Account Created"))
    second = write(tmp_path / "b.jsonl", line("Signed Up"))
    done = lifecycle("check", first, "--format", "jsonl", second)
    assert done.returncode == 0, done.stderr
    assert [(r["file"], r["event"]) for r in verdicts(done)] == [
        (str(first), "Account Created"),
        (str(second), "Signed Up"),
    ]
    assert_usage_error(
        lifecycle("check", first, "--format", "jsonl", second, "--bogus"),
        f"lifecycle: error: unrecognized arguments: {second} --bogus (see lifecycle --help)",
    )


def test_standard_input_may_follow_options(tmp_path: Path) -> None:
    """`-` after an option is standard input, a file like any other, not an unknown option:
    `check a.jsonl --format jsonl -` reads the file, then standard input."""
    first = write(tmp_path / "a.jsonl", line("Account Created"))
    done = lifecycle("check", first, "--format", "jsonl", "-", stdin=line("Signed Up") + b"\n")
    assert (done.returncode, done.stderr) == (0, b"")
    assert [(r["file"], r["event"]) for r in verdicts(done)] == [
        (str(first), "Account Created"),
        ("-", "Signed Up"),
    ]


@pytest.mark.parametrize(
    "args", [["check", "{path}", "--format", "jsonl"], ["check", "{path}"], ["--version"]]
)
def test_a_reader_that_stopped_early_gives_2_quietly(tmp_path: Path, args: list[str]) -> None:
    """A reader that stops early (`| head`) leaves nothing more to write: exit 2, with
    nothing on stderr (not "cannot write the output", nor Python's broken pipe warning)."""
    path = write(tmp_path / "e.jsonl", *[line("Signed In", messageId=f"m{n}") for n in range(50)])
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first line is written
    try:
        done = subprocess.run(
            [sys.executable, "-m", "lifecycle", *(a.format(path=path) for a in args)],
            stdout=write_end,
            stderr=subprocess.PIPE,
            timeout=60,
            check=False,
        )
    finally:
        os.close(write_end)
    assert (done.returncode, done.stderr) == (2, b"")


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full on this system")
def test_an_unwritable_stderr_keeps_the_exit_code(tmp_path: Path) -> None:
    """With stderr unwritable, writing a usage error raised in turn, and the process
    exited 1: "rejected". The code stays what the run gives."""
    good = write(tmp_path / "good.jsonl", line("Account Created"))
    bad = write(tmp_path / "bad.jsonl", b"not json")
    codes = [
        _closing("2>/dev/full", *args, cwd=tmp_path).returncode
        for args in (["--bogus"], ["check", good], ["check", bad], ["check", "missing.jsonl"])
    ]
    assert codes == [2, 0, 1, 2]
    # The commands' own notes and errors, as well as the shared ones.
    url = f"sqlite:///{tmp_path / 'store.db'}"
    assert lifecycle("ingest", good, "--db", url).returncode == 0
    codes = [
        _closing("2>/dev/full", *args, "--db", url, cwd=tmp_path).returncode
        for args in (
            ["accounts", "show", "acct_missing"],
            ["accounts", "list", "--status", "bogus"],
            ["rejections", "list", "--code", "bogus"],
            ["replay", "--verify"],
            ["replay", "--account", "acct_missing"],
        )
    ]
    assert codes == [1, 0, 0, 0, 0]


def test_replay_as_of_takes_a_date_time_or_a_date(tmp_path: Path) -> None:
    """`--as-of 2026-12-07` was "not an ISO-8601 date-time"; a date alone is its midnight,
    UTC, as a spec Date property's is."""
    from datetime import UTC, datetime, timedelta

    url = f"sqlite:///{tmp_path / 'store.db'}"
    ingested = lifecycle(
        "ingest", write(tmp_path / "a.jsonl", line("Account Created")), "--db", url
    )
    assert ingested.returncode == 0, ingested.stderr
    today = datetime.now(UTC).date()
    for when, accounts in [
        (today.isoformat(), []),  # midnight: before the event was recorded
        ((today + timedelta(days=1)).isoformat(), ["acct_1"]),
        ((today + timedelta(days=1)).strftime("%Y%m%d"), ["acct_1"]),
        (datetime.now(UTC).isoformat(), ["acct_1"]),
    ]:
        done = lifecycle("replay", "--as-of", when, "--format", "jsonl", "--db", url)
        assert done.returncode == 0, done.stderr
        assert [r["account"] for r in verdicts(done)] == accounts, when
    assert_usage_error(
        lifecycle("replay", "--as-of", "soon", "--db", url),
        "lifecycle: error: --as-of 'soon': not an ISO-8601 date-time or date",
    )
