"""A line of a file that comes again gets the rejection it got the first time: after a
submission judged carefully, sorted, and while another run of the file rejects it."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from lifecycle.reader import InputLine
from lifecycle.service import Lifecycle
from tests.store.helpers import msg


@pytest.fixture
def store(db_url: str) -> Iterator[Lifecycle]:
    lc = Lifecycle(db_url, create_schema=True)
    yield lc
    lc.close()


@pytest.mark.parametrize("found_stored_before", [False, True])
def test_a_line_judged_carefully_the_first_time_keeps_its_rejection_when_submitted_again(
    store: Lifecycle, found_stored_before: bool
) -> None:
    """`submit_lines` promises that a line of a file submitted again gets the rejection it
    got then, "rather than a verdict on what was stored since". Whether it does must not
    depend on whether the submission before the line's first one happened to find a
    stored message (which makes the store judge the next one carefully, and a line judged
    carefully was never marked as judged, so its second coming was not recognised)."""
    created, early, signed_up = (
        msg("Account Created", "u1", "acct_1"),
        msg("Signed In", "u1", "acct_1", mid="early"),
        msg("Signed Up", "u1", "acct_1"),
    )
    line = {n: InputLine("f.jsonl", n, orjson.dumps(m) + b"\n") for n, m in
            enumerate([created, early, signed_up], 1)}  # fmt: skip
    store.submit_lines([line[1]])
    if found_stored_before:
        store.submit(created)  # a resent message: duplicate
    first = [(v.verdict, v.code) for _, v in store.submit_lines([line[2]])]
    assert first == [("rejected", "user_unknown")]
    store.submit_lines([line[3]])
    again = [(v.verdict, v.code) for _, v in store.submit_lines([line[2]])]
    assert again == first
    assert [e.event for e in store.events()] == ["Account Created", "Signed Up"]


def test_a_file_given_twice_and_sorted_keeps_its_rejections(db_url: str, tmp_path: Path) -> None:
    """docs/cli.md: "A file given twice to one ingest is read twice the same way: its second
    reading's rejected lines get the first reading's rejections" (and a test holds it
    without --sort-by). Sorted, the two readings' copies of a line meet: the second copy of
    an `Account Created` is a duplicate, found stored, so the next line (a Signed In before
    its user's Signed Up) is judged carefully and never marked as judged; its second copy,
    after the Signed Up, was then taken for new input and accepted — while the quarantine
    still holds the first copy's rejection."""
    Lifecycle(db_url, create_schema=True).close()

    def at(moment: str, message: dict[str, Any]) -> dict[str, Any]:
        return {**message, "timestamp": moment}

    path = tmp_path / "f.jsonl"
    path.write_bytes(b"".join(orjson.dumps(m) + b"\n" for m in [
        at("2024-01-01T00:00:04Z", msg("Account Created", "u1", "acct_1")),
        at("2024-01-01T00:00:05Z", msg("Signed In", "u1", "acct_1", mid="early")),
        at("2024-01-01T00:00:05Z", msg("Signed Up", "u1", "acct_1")),
    ]))  # fmt: skip
    out = subprocess.run(
        [sys.executable, "-m", "lifecycle", "ingest", str(path), str(path), "--db", db_url,
         "--format", "jsonl", "--batch-size", "1", "--sort-by", "timestamp"],
        cwd=tmp_path, capture_output=True,
    )  # fmt: skip
    verdicts = [orjson.loads(line) for line in out.stdout.splitlines()]
    early = [(v["verdict"], v.get("code")) for v in verdicts if v.get("messageId") == "early"]
    assert early == [("rejected", "user_unknown")] * 2, out.stderr
    with Lifecycle(db_url) as store:
        assert [e.event for e in store.events()] == ["Account Created", "Signed Up"]
        assert [r.message_id for r in store.rejections()] == ["early"]


def test_two_ingests_of_one_file_at_once_give_a_rejected_line_one_verdict(db_url: str) -> None:
    """Two ingests of the same file at once (an hourly import that started again before the
    last one ended), each a store of its own. The second asked once, at its first line,
    whether the quarantine held lines of the file (it did not yet), and never again: when
    it reached the line the first ingest had rejected (a Signed In before the user's
    Signed Up), it judged it afresh against the state the first ingest went on to build,
    accepted it out of its place in the file, and the message ended both stored and
    quarantined."""
    history = [
        msg("Account Created", "u1", "acct_1"),
        msg("Signed In", "u1", "acct_1", mid="early"),
        msg("Signed Up", "u1", "acct_1"),
    ]
    lines = [InputLine("/data/f.jsonl", n, orjson.dumps(m) + b"\n")
             for n, m in enumerate(history, 1)]  # fmt: skip
    with Lifecycle(db_url, create_schema=True) as first, Lifecycle(db_url) as second:
        second.submit_lines(lines[:1])  # the second ingest has begun
        first_verdicts = [v for line in lines for _, v in first.submit_lines([line])]
        assert (first_verdicts[1].verdict, first_verdicts[1].code) == ("rejected", "user_unknown")
        again = [(v.verdict, v.code) for _, v in second.submit_lines(lines[1:2])]
        assert again == [("rejected", "user_unknown")]
        assert [e.event for e in first.events()] == ["Account Created", "Signed Up"]
        assert [r.message_id for r in first.rejections()] == ["early"]
