"""Commands that read the history: ``replay``, ``audit`` and ``rejections retry``."""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING

import orjson

from lifecycle.cli.common import (
    EXIT_OK,
    EXIT_REJECTED,
    add_format_argument,
    complain,
    load_policy,
    non_negative,
    positive,
    sigterm_interrupts,
)
from lifecycle.cli.store import add_db_argument, open_store
from lifecycle.cli.text import account_line, shown
from lifecycle.errors import InputError
from lifecycle.spec import parse_date
from lifecycle.store.codec import iso_utc

if TYPE_CHECKING:
    from lifecycle.replay import AuditFinding
    from lifecycle.service import Lifecycle


def add_parser(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``replay`` and ``audit`` (``rejections retry`` is added by the store commands)."""
    replay = commands.add_parser(
        "replay",
        help="rebuild account states from the stored events alone",
        description=(
            "Rebuild account states purely from stored events (never from a cache) and print "
            "them in the `accounts show` JSON shape (text: the `accounts list` line). "
            "--until stops at a global position, --as-of at "
            "the instant the store recorded the events (not the events' own timestamp). "
            "--verify compares a full replay with what the live path reads (account heads, "
            "snapshots) and exits 1 with a diff per account if they differ."
        ),
    )
    replay.add_argument(
        "--account", action="append", metavar="ID", help="only this account (repeatable)"
    )
    bound = replay.add_mutually_exclusive_group()
    bound.add_argument(
        "--until", type=non_negative, metavar="POSITION", help="events up to this position"
    )
    bound.add_argument(
        "--as-of", metavar="TIMESTAMP", help="events recorded up to this instant (ISO-8601)"
    )
    add_format_argument(replay, "json", "jsonl", "text")
    replay.add_argument(
        "--workers",
        type=positive,
        default=None,
        metavar="N",
        help="split a full replay by account over N processes (default: one per CPU, "
        f"at most {MAX_AUTO_WORKERS}, for {AUTO_WORKERS_FROM:,} events or more; else 1)",
    )
    replay.add_argument(
        "--verify", action="store_true", help="compare with the live state; exit 1 on a difference"
    )
    replay.add_argument(
        "--policy", metavar="MODULE:ATTR", help="the policy the history was written under"
    )
    add_db_argument(replay)
    replay.set_defaults(run=run_replay)

    audit = commands.add_parser(
        "audit",
        help="which stored events would another policy reject?",
        description=(
            "Re-judge the stored history under another policy and report the events it would "
            "reject, grouped by code, with account and position. Read-only. Exit 1 when "
            "something would be rejected. With FILEs, judge those instead, exactly as "
            "`check --policy` does (its output and exit codes)."
        ),
    )
    audit.add_argument(
        "files",
        nargs="*",
        metavar="FILE",
        help="judge these files instead of the store (as `check --policy` does)",
    )
    audit.add_argument(
        "--policy", metavar="MODULE:ATTR", required=True, help="the policy to audit against"
    )
    add_format_argument(audit, "text", "jsonl")
    audit.add_argument(
        "--show",
        type=non_negative,
        default=10,
        metavar="N",
        help="findings listed in the text summary (default: 10)",
    )
    add_db_argument(audit)
    audit.set_defaults(run=run_audit)


def add_retry_parser(rejection_commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``rejections retry``."""
    retry = rejection_commands.add_parser(
        "retry",
        help="judge quarantined messages again; the ones now legal are stored",
        description=(
            "Re-submit quarantined messages in their original order. The ones now legal are "
            "appended and leave the quarantine (so do those whose event is now stored); the "
            "others stay, with the code and reason they get today, and so do those the "
            "policy ignores (a store written under another policy). Idempotent. Exit 1 when "
            "some remain."
        ),
    )
    retry.add_argument("--code", metavar="C", help="only messages quarantined with this code")
    retry.add_argument("--account", metavar="ID", help="only this account's messages")
    retry.add_argument(
        "--policy", metavar="MODULE:ATTR", help="the policy the store is written under"
    )
    retry.add_argument(
        "--no-forward",
        action="store_true",
        help="do not queue the accepted events for Segment (input ingested with --no-forward)",
    )
    add_format_argument(retry, "text", "json")
    add_db_argument(retry)
    retry.set_defaults(run=run_retry)


def _instant(text: str | None) -> datetime | None:
    if text is None:
        return None
    # A date alone is its midnight, UTC, as a spec Date property's is.
    moment = parse_date(text)
    if moment is None:
        raise InputError(f"--as-of {text!r}: not an ISO-8601 date-time or date")
    return moment


#: Full replays of at least this many events use several processes by default.
AUTO_WORKERS_FROM = 200_000
#: The most processes a replay uses by default.
MAX_AUTO_WORKERS = 4


def auto_workers(events: int | None) -> int:
    """How many processes a full replay of ``events`` events uses when not told.

    Forking and sending the states back costs a few hundred milliseconds, worth
    it only on a large history.
    """
    if events is None or events < AUTO_WORKERS_FROM:
        return 1
    if "fork" not in multiprocessing.get_all_start_methods():
        return 1
    return min(os.cpu_count() or 1, MAX_AUTO_WORKERS)


def run_replay(args: argparse.Namespace) -> int:
    """Print replayed states, or verify them against the live path."""
    if args.verify:
        given = [
            option
            for option, value in (
                ("--account", args.account),
                ("--until", args.until),
                ("--as-of", args.as_of),
                ("--workers", args.workers),
            )
            if value is not None
        ]
        if given:
            # It checks every account, as of now, in one process: say so rather than
            # print a clean result for something it did not look at.
            raise InputError(f"replay --verify checks every account as of now: drop {given[0]}")
    with open_store(args) as store:
        if args.verify:
            found = 0
            for difference in store.verify():
                found += 1
                print(shown(difference))
            complain(f"replay --verify: {found} difference{'s' if found != 1 else ''}")
            return EXIT_REJECTED if found else EXIT_OK
        show_bar = sys.stderr.isatty() and args.account is None
        # The count sizes the bar and picks the default number of processes.
        needed = args.account is None and (show_bar or args.workers is None)
        total = store.count_events() if needed else None
        workers = args.workers if args.workers is not None else auto_workers(total)
        with sigterm_interrupts(), events_bar(total if show_bar else None) as advance:
            states = list(
                store.replay(
                    accounts=args.account,
                    until=args.until,
                    as_of=_instant(args.as_of),
                    progress=advance,
                    workers=workers,
                )
            )
        cut = args.until is not None or args.as_of is not None
        if args.account:
            _note_missing(store, args.account, {s.account for s in states}, cut)
        elif cut and not states:
            _note_nothing_by_then(store, args)
        out = sys.stdout.buffer
        if args.format == "json":
            document = {s.account: s.to_dict() for s in states}
            out.write(
                orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)
            )
        elif args.format == "jsonl":
            for state in states:
                out.write(orjson.dumps(state.to_dict(), option=orjson.OPT_APPEND_NEWLINE))
        else:
            for state in states:
                print(account_line(state))  # text: in the output's encoding, as elsewhere
    return EXIT_OK


def _note_missing(store: Lifecycle, accounts: list[str], replayed: set[str], cut: bool) -> None:
    """Say on stderr which ``--account`` printed nothing, and why: a typo prints nothing too.

    Without a cut (``--until``, ``--as-of``) none of them has an event; with one, those
    that have are found by one replay of them all (reading each one's state took 27 s for
    25,000 accounts)."""
    missing = list(dict.fromkeys(a for a in accounts if a not in replayed))
    stored = {s.account for s in store.replay(accounts=missing)} if cut and missing else set()
    for account in missing:
        if account in stored:
            why = "it has no event up to that point"
        else:
            why = "no event of it is stored"
        complain(f"lifecycle: note: account {shown(account)}: {why}")


def _note_nothing_by_then(store: Lifecycle, args: argparse.Namespace) -> None:
    """A full replay cut before the first stored event prints ``{}``: say so, and when the
    first event was recorded. ``--as-of`` counts when events were stored, not their own
    ``timestamp``: a history ingested today replays as ``{}`` as of last year, which
    looked like an empty store."""
    first = store.first_event()
    if first is None:
        return
    point = f"--as-of {shown(args.as_of)}" if args.as_of is not None else f"position {args.until}"
    complain(
        f"lifecycle: note: no event was stored up to {point}: the first (position "
        f"{first.position}) was recorded at {iso_utc(first.recorded_at)}"
    )


@contextmanager
def events_bar(total: int | None) -> Iterator[Callable[[int], None] | None]:
    """A progress bar over ``total`` events on stderr (none when ``total`` is None)."""
    if total is None:
        yield None
        return
    from tqdm import tqdm

    with tqdm(total=total, unit="ev", unit_scale=True, file=sys.stderr, leave=False) as bar:

        def advance(n: int) -> None:
            bar.update(n)

        yield advance


def run_audit(args: argparse.Namespace) -> int:
    """Report what the other policy would reject."""
    policy = load_policy(args.policy)
    if args.files:
        from lifecycle.cli import check

        args.sort_by = None
        return check.run(args)
    with open_store(argparse.Namespace(db=args.db)) as store:
        codes: Counter[str] = Counter()
        first: list[AuditFinding] = []
        for finding in store.audit(policy):
            codes[finding.code] += 1
            if args.format == "jsonl":
                sys.stdout.buffer.write(
                    orjson.dumps(finding.to_dict(), option=orjson.OPT_APPEND_NEWLINE)
                )
            elif len(first) < args.show:
                first.append(finding)
    if args.format == "text":
        total = sum(codes.values())
        print(f"lifecycle audit under policy {policy.name!r}: {total:,} rejections")
        for code, count in sorted(codes.items(), key=lambda kv: (-kv[1], kv[0])):
            print(f"  {code:<24} {count:>10,}")
        if first:
            print("\nfirst findings:")
            for f in first:
                print(
                    f"  position {f.position}  {shown(f.account)} v{f.version}  {f.code}"
                    f"  {shown(f.reason)}"
                )
    return EXIT_REJECTED if codes else EXIT_OK


def run_retry(args: argparse.Namespace) -> int:
    """Retry the quarantine and print what happened."""
    with open_store(args) as store:
        report = store.retry_rejections(code=args.code, account=args.account)
    if args.format == "json":
        sys.stdout.buffer.write(orjson.dumps(report.to_dict(), option=orjson.OPT_APPEND_NEWLINE))
    else:
        ignored = f", {report.ignored:,} ignored by the policy (kept)" if report.ignored else ""
        print(
            f"lifecycle rejections retry: {report.accepted:,} accepted, "
            f"{report.duplicate:,} already stored, {report.still_rejected:,} still rejected"
            + ignored
        )
        for code, count in sorted(report.codes.items()):
            print(f"  {code:<24} {count:>10,}")
    return EXIT_REJECTED if report.still_rejected or report.ignored else EXIT_OK
