"""``lifecycle relay``: forward accepted events to Segment, and read the outbox.

``lifecycle relay`` delivers; ``relay status``, ``relay parked``, ``relay backfill``
and ``relay prune`` read, fill or trim the outbox. The store and the Segment client
library are imported when a relay command runs, not when the CLI starts.
"""

from __future__ import annotations

import argparse
import gc
import logging
import multiprocessing
import os
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import TYPE_CHECKING, Any, NoReturn

import orjson

from lifecycle.cli.common import (
    EXIT_ERROR,
    EXIT_OK,
    add_format_argument,
    bug,
    complain,
    exit_code,
    positive,
    seconds,
)
from lifecycle.cli.store import add_db_argument, store_in_use
from lifecycle.cli.text import shown
from lifecycle.errors import InputError, RelayError

if TYPE_CHECKING:
    from lifecycle.relay import Relay

#: As in :mod:`lifecycle.relay`, which is imported only when a relay command runs.
WRITE_KEY_ENV = "LIFECYCLE_SEGMENT_WRITE_KEY"
HOST_ENV = "LIFECYCLE_SEGMENT_HOST"


def add_parser(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``relay`` and its ``status``, ``parked``, ``backfill`` and ``prune`` commands."""
    relay = commands.add_parser(
        "relay",
        help="forward accepted events to Segment (outbox relay)",
        description=(
            "Deliver the events waiting in the outbox to Segment's batch API, with the "
            "official client library: at least once, with their messageId, in per-account "
            "order. Transient failures are retried with backoff; a message Segment refuses "
            "for good is parked. SIGINT/SIGTERM stop it after the batch in flight."
        ),
    )
    add_db_argument(relay)
    relay.add_argument(
        "--write-key", metavar="KEY", help=f"Segment source write key (default: ${WRITE_KEY_ENV})"
    )
    relay.add_argument(
        "--host",
        metavar="URL",
        help=(
            f"Segment API (default: ${HOST_ENV}, else https://api.segment.io; "
            "EU workspaces: https://events.eu1.segmentapis.com)"
        ),
    )
    mode = relay.add_mutually_exclusive_group()
    mode.add_argument(
        "--once", action="store_true", help="deliver what is pending, then exit (the default)"
    )
    mode.add_argument("--follow", action="store_true", help="keep delivering until stopped")
    relay.add_argument(
        "--batch-size",
        type=int,
        default=500,
        metavar="N",
        help="events per batch (default: 500, at most 2500)",
    )
    relay.add_argument(
        "--shard",
        type=_shard,
        default=(0, 1),
        metavar="I/N",
        help="deliver only the accounts of shard I of N (run N relays, one per shard)",
    )
    relay.add_argument(
        "--workers",
        type=positive,
        default=1,
        metavar="N",
        help="run N relay processes, one per shard, to use N cores (default: 1; not with --shard)",
    )
    relay.add_argument(
        "--timeout",
        type=seconds,
        default=15.0,
        metavar="S",
        help="connect and read timeout (default: 15)",
    )
    relay.add_argument(
        "--backoff",
        type=seconds,
        default=0.5,
        metavar="S",
        help="first wait after a failure (default: 0.5)",
    )
    relay.add_argument(
        "--max-backoff",
        type=seconds,
        default=60.0,
        metavar="S",
        help="longest wait between tries (default: 60)",
    )
    relay.add_argument(
        "--max-failures",
        type=positive,
        default=None,
        metavar="N",
        help=f"give up (exit 2) after N failed attempts in a row (default: {ONCE_MAX_FAILURES} "
        "with --once, never with --follow)",
    )
    relay.add_argument(
        "--poll-interval",
        type=seconds,
        default=1.0,
        metavar="S",
        help="with --follow: wait when nothing is pending (default: 1)",
    )
    relay.add_argument("--gzip", action="store_true", help="gzip request bodies")
    relay.add_argument("-v", "--verbose", action="store_true", help="log every batch")
    relay.set_defaults(run=run_relay)

    sub = relay.add_subparsers(title="relay commands", metavar="COMMAND")
    status = sub.add_parser(
        "status",
        help="pending, delivered and parked counts",
        description="Count the outbox: pending, delivered, parked and pruned events, and "
        "how old the oldest pending one is.",
    )
    add_format_argument(status, "text", "json")
    status.set_defaults(run=run_status)
    parked = sub.add_parser(
        "parked",
        help="events Segment refused for good, with its answer",
        description="List the parked events (refused by Segment for good, or over its "
        "limits) with the reason each was parked.",
    )
    add_format_argument(parked, "text", "jsonl")
    parked.set_defaults(run=run_parked)
    requeue = sub.add_parser(
        "requeue",
        help="send parked events again",
        description="Make parked events pending again, for the next relay to send: those "
        "of an account, those with the given messageIds, or --all. For when what parked "
        "them is fixed (a proxy that refused every request parks every event).",
    )
    requeue.add_argument("--account", metavar="ID", help="the parked events of this account")
    requeue.add_argument(
        "--message-id",
        metavar="ID",
        action="append",
        default=[],
        help="the parked event with this messageId (repeat for more)",
    )
    requeue.add_argument(
        "--all", action="store_true", help="every parked event (not with --account or --message-id)"
    )
    requeue.set_defaults(run=run_requeue)
    backfill = sub.add_parser(
        "backfill",
        help="enqueue stored events that have no outbox row (older stores)",
        description="Queue for Segment every stored event that has no outbox row and was "
        "not pruned: events stored with `ingest --no-forward`, or before the outbox existed.",
    )
    backfill.set_defaults(run=run_backfill)
    prune = sub.add_parser(
        "prune",
        help="delete outbox rows delivered long ago",
        description=(
            "Delete the outbox rows of events delivered more than --older-than ago, per "
            "account up to its first pending or parked row; `relay status` counts them as "
            "pruned, and `relay backfill` no longer offers those events."
        ),
    )
    prune.add_argument(
        "--older-than",
        type=duration,
        default=KEEP_DELIVERED_TEXT,
        metavar="AGE",
        help=f"delivered longer ago than this: 90s, 30m, 12h, 7d (default: {KEEP_DELIVERED_TEXT})",
    )
    prune.set_defaults(run=run_prune)
    for command in (status, parked, requeue, backfill, prune):
        # SUPPRESS: `relay --db URL status` keeps the URL given before the command.
        command.add_argument(
            "--db",
            metavar="URL",
            default=argparse.SUPPRESS,
            help="database URL (default: $LIFECYCLE_DATABASE_URL, else sqlite:///lifecycle.db)",
        )


def open_relay(args: argparse.Namespace, **options: Any) -> Relay:
    """The :class:`Relay` for ``--db`` (and the given options)."""
    from lifecycle.relay import Relay

    return Relay(store_in_use(args), **options)


#: Failed attempts in a row after which ``relay --once`` gives up (a few minutes of backoff).
ONCE_MAX_FAILURES = 10


def _max_failures(args: argparse.Namespace) -> int | None:
    if args.max_failures is not None:
        return int(args.max_failures)
    return None if args.follow else ONCE_MAX_FAILURES


def run_relay(args: argparse.Namespace) -> int:
    """Deliver pending events (``--once``) or keep delivering (``--follow``)."""
    if not 1 <= args.batch_size <= 2500:
        _usage_error("--batch-size must be between 1 and 2500")
    if args.workers > 1 and args.shard != (0, 1):
        _usage_error("--workers and --shard cannot be combined")
    write_key = args.write_key or os.environ.get(WRITE_KEY_ENV)
    if not write_key:
        raise RelayError(f"no Segment write key: pass --write-key or set ${WRITE_KEY_ENV}")
    _configure_logging(args.verbose)
    if args.workers > 1:
        return _run_workers(args, write_key)
    _print_counts(_deliver(args, write_key))
    return EXIT_OK


def _usage_error(message: str) -> NoReturn:
    complain(f"lifecycle relay: error: {message}")
    raise SystemExit(EXIT_ERROR)


def _sending_relay(args: argparse.Namespace, write_key: str) -> Relay:
    """The relay the options describe, for shard ``args.shard``."""
    from lifecycle.relay import Backoff

    return open_relay(
        args,
        write_key=write_key,
        host=args.host or os.environ.get(HOST_ENV),
        batch_size=args.batch_size,
        timeout=args.timeout,
        gzip=args.gzip,
        backoff=Backoff(base=args.backoff, cap=args.max_backoff),
        poll_interval=args.poll_interval,
        shard=args.shard,
    )


def _deliver(args: argparse.Namespace, write_key: str) -> dict[str, int]:
    """Run one relay (``args.shard``) until done or stopped; its report's counts."""
    relay = _sending_relay(args, write_key)
    # What is alive now (modules, the engine) lives as long as the process: keeping it out
    # of the collector's scans saves the relay, which decodes every message it sends, a
    # sizeable share of its time.
    gc.freeze()
    with relay:
        previous = _stop_on_signals(relay)
        try:
            report = relay.run(follow=args.follow, max_failures=_max_failures(args))
        finally:
            _restore(previous)
    return report.to_dict()


def _print_counts(counts: dict[str, int]) -> None:
    print(", ".join(f"{name} {value}" for name, value in counts.items()))


def _run_workers(args: argparse.Namespace, write_key: str) -> int:
    """``--workers N``: N forked relays, shard i of N each; their summed counts, worst exit.

    An account belongs to one shard, so its order is kept. The workers run in a
    process group of their own and this process passes SIGINT/SIGTERM on, once
    per signal it gets: each worker then stops after its batch in flight, as a
    single relay does (a second signal ends them at once).
    """
    if "fork" not in multiprocessing.get_all_start_methods():
        raise RelayError("--workers needs a system that can fork: run one relay per --shard")
    # The store checked (a file with no schema is refused), and the write key, the host
    # and the client library, once: not N times, in lines that could run together.
    with _sending_relay(args, write_key) as relay:
        relay.check()
    context = multiprocessing.get_context("fork")
    counts = context.SimpleQueue()
    workers = [
        context.Process(
            target=_worker,
            args=(args, write_key, (i, args.workers), counts),
            name=f"lifecycle-relay-{i}",
        )
        for i in range(args.workers)
    ]
    for worker in workers:
        worker.start()
    previous = _forward_signals(workers)
    try:
        for worker in workers:
            worker.join()
    finally:
        _restore(previous)
    reports = [counts.get() for worker in workers if worker.exitcode == EXIT_OK]
    # A worker ended by a signal counts as a shell reports it: 128 + the signal's number.
    worst = max(code if code >= 0 else 128 - code for code in (w.exitcode or 0 for w in workers))
    if worst == EXIT_OK:
        _print_counts({name: sum(r[name] for r in reports) for name in reports[0]})
    # Else each failed worker said why on stderr, and counts of some shards would mislead.
    return worst


def _worker(args: argparse.Namespace, write_key: str, shard: tuple[int, int], counts: Any) -> None:
    """One ``--workers`` relay: deliver shard ``shard``; exit with the code a relay would."""
    parent = os.getppid()
    os.setpgrp()  # signals come from the parent, once, not from the terminal as well
    _stop_with(parent)
    args.shard = shard
    try:
        code = exit_code(lambda: _report(counts, _deliver(args, write_key)))
    except Exception:  # exit as the command would, not with multiprocessing's 1
        code = bug()
    sys.exit(code)


def _stop_with(parent: int) -> None:
    """On Linux, get SIGTERM when ``parent`` dies, so a killed command leaves no worker behind.

    SIGTERM stops the relay after its batch in flight, as it would from the parent.
    Elsewhere a worker outlives a killed command until its shard is done.
    """
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # it died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)


#: prctl(2) option: the signal a process gets when its parent dies.
_PR_SET_PDEATHSIG = 1


def _report(counts: Any, result: dict[str, int]) -> int:
    counts.put(result)
    return EXIT_OK


def _forward_signals(workers: list[Any]) -> dict[int, Any]:
    """Pass each SIGINT/SIGTERM this process gets on to the workers still running."""
    signals = (signal.SIGINT, signal.SIGTERM)
    previous: dict[int, Any] = {s: signal.getsignal(s) for s in signals}

    def handler(signum: int, _frame: Any) -> None:
        for worker in workers:
            if worker.is_alive():
                os.kill(worker.pid, signum)

    for s in signals:
        signal.signal(s, handler)
    return previous


def run_status(args: argparse.Namespace) -> int:
    """Print pending, delivered and parked counts and the oldest pending event's age."""
    from lifecycle.store.codec import now

    with open_relay(args) as relay:
        status = relay.status().to_dict(now())
    if args.format == "json":
        sys.stdout.buffer.write(orjson.dumps(status, option=orjson.OPT_APPEND_NEWLINE))
        return EXIT_OK
    age = status["oldest_pending_age"]
    print(f"pending    {status['pending']}")
    print(f"delivered  {status['delivered']}")
    print(f"parked     {status['parked']}")
    print(f"pruned     {status['pruned']}")
    print(f"oldest pending age  {'-' if age is None else f'{age:.1f} s'}")
    return EXIT_OK


def run_parked(args: argparse.Namespace) -> int:
    """Print every parked event with the answer that parked it."""
    with open_relay(args) as relay:
        for event in relay.parked():
            if args.format == "jsonl":
                sys.stdout.buffer.write(
                    orjson.dumps(event.to_dict(), option=orjson.OPT_APPEND_NEWLINE)
                )
            else:
                print(
                    f"{shown(event.account)}\t{event.version}\t{shown(event.message_id)}"
                    f"\t{shown(event.reason)}"
                )
    return EXIT_OK


def run_requeue(args: argparse.Namespace) -> int:
    """Make parked events pending again."""
    if not (args.account or args.message_id or args.all):
        raise InputError("relay requeue: name what to send again: --account, --message-id or --all")
    if sum(map(bool, (args.all, args.account, args.message_id))) > 1:
        # "--all --account X" would requeue X's events only, "--account X --message-id M"
        # only M if it is X's: the synopsis offers one of them, so say so rather than guess.
        raise InputError("relay requeue: give one of --account, --message-id or --all")
    with open_relay(args) as relay:
        count = relay.requeue(account=args.account, message_ids=args.message_id)
    print(f"requeued {count} parked event{'s' * (count != 1)}")
    return EXIT_OK


def run_backfill(args: argparse.Namespace) -> int:
    """Enqueue stored events without an outbox row."""
    with open_relay(args) as relay:
        count = relay.backfill()
    print(f"queued {count} events")
    return EXIT_OK


def run_prune(args: argparse.Namespace) -> int:
    """Delete delivered outbox rows older than ``--older-than``."""
    with open_relay(args) as relay, _accounts_bar() as advance:
        count = relay.prune(older_than=args.older_than, progress=advance)
    print(f"pruned {count} delivered events")
    return EXIT_OK


@contextmanager
def _accounts_bar() -> Iterator[Callable[[int, int], None] | None]:
    """A progress bar over accounts on stderr when it is a terminal (else no callback)."""
    if not sys.stderr.isatty():
        yield None
        return
    from tqdm import tqdm

    with tqdm(unit="account", file=sys.stderr, leave=False) as bar:

        def advance(done: int, total: int) -> None:
            # Once per transaction of accounts: cheap enough to redraw every time.
            bar.total, bar.n = total, done
            bar.refresh()

        yield advance


#: ``relay prune``'s default age, as the command line spells it (the library's default).
KEEP_DELIVERED_TEXT = "7d"
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def duration(text: str) -> timedelta:
    """``90s``, ``30m``, ``12h``, ``7d`` (or plain seconds) as a timedelta."""
    number, unit = (text[:-1], text[-1]) if text[-1:] in _UNITS else (text, "s")
    try:
        age = timedelta(seconds=float(number) * _UNITS[unit])
    except (ValueError, OverflowError):
        raise argparse.ArgumentTypeError(
            f"expected an age like 90s, 30m, 12h or 7d, got {text!r}"
        ) from None
    if age < timedelta(0):
        raise argparse.ArgumentTypeError(f"{text!r}: an age cannot be negative")
    return age


def _shard(text: str) -> tuple[int, int]:
    """``I/N`` as ``(I, N)``, with 0 <= I < N."""
    index, _, count = text.partition("/")
    try:
        shard = (int(index), int(count))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected I/N, got {text!r}") from None
    if not 0 <= shard[0] < shard[1]:
        raise argparse.ArgumentTypeError(f"{text!r}: expected 0 <= I < N")
    from lifecycle.store.outbox import SHARDS  # the relay command needs it anyway

    if shard[1] > SHARDS:  # accounts hash to 0..SHARDS-1: a higher index matches none
        raise argparse.ArgumentTypeError(f"{text!r}: at most {SHARDS} shards")
    return shard


def _configure_logging(verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("lifecycle relay: %(message)s"))
    logger = logging.getLogger("lifecycle.relay")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO if verbose else logging.WARNING)
    logger.propagate = False
    # The relay reports every failed request itself; the library would repeat it.
    logging.getLogger("segment").setLevel(logging.CRITICAL)


def _stop_on_signals(relay: Relay) -> dict[int, Any]:
    """SIGINT/SIGTERM: finish the batch in flight, then return; a second signal ends at once."""
    signals = (signal.SIGINT, signal.SIGTERM)
    previous: dict[int, Any] = {s: signal.getsignal(s) for s in signals}

    def handler(signum: int, _frame: Any) -> None:
        relay.stop()
        _restore(previous)

    for s in signals:
        signal.signal(s, handler)
    return previous


def _restore(previous: dict[int, Any]) -> None:
    for s, h in previous.items():
        signal.signal(s, h)
