"""``lifecycle check``: judge JSONL input in memory, with no database."""

from __future__ import annotations

import argparse

from lifecycle.cli.common import (
    EXIT_OK,
    EXIT_REJECTED,
    counted,
    load_policy,
    make_report,
    non_negative,
    progress,
    sigterm_interrupts,
)
from lifecycle.gate import Gate
from lifecycle.messages import MAX_BYTES
from lifecycle.reader import items_of, read_lines
from lifecycle.sorting import sorted_by_timestamp


def add_parser(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``check``."""
    parser = commands.add_parser(
        "check",
        help="judge JSONL input in memory (no database)",
        description=(
            "Judge Segment messages, one JSON object or batch object per line, in order and "
            "statefully across all files. Exit 0 when nothing was rejected, 1 when something "
            "was, 2 on usage or input errors."
        ),
    )
    add_input_arguments(parser)
    parser.set_defaults(run=run)


def add_input_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments ``check`` and ``ingest`` share."""
    parser.add_argument("files", nargs="+", metavar="FILE", help="JSONL input; - is stdin; .gz ok")
    parser.add_argument(
        "--format",
        choices=["text", "jsonl"],
        default="text",
        help="text: a summary (default); jsonl: one verdict object per message on stdout",
    )
    parser.add_argument(
        "--show",
        type=non_negative,
        default=10,
        metavar="N",
        help="rejections listed in the text summary (default: 10)",
    )
    parser.add_argument(
        "--policy", metavar="MODULE:ATTR", help="judge under this policy instead of the default"
    )
    parser.add_argument(
        "--sort-by",
        choices=["timestamp"],
        help="first put each account's messages in timestamp order (stable; spills to disk)",
    )


def run(args: argparse.Namespace) -> int:
    """Judge every line of every file through one in-memory gate; SIGTERM interrupts."""
    with sigterm_interrupts():
        return _judge(args)


def _judge(args: argparse.Namespace) -> int:
    gate = Gate(load_policy(args.policy))
    report = make_report(args.format, args.show)
    if args.sort_by:
        with progress(args.files, "check") as bar:
            for it in sorted_by_timestamp(counted(read_lines(args.files), bar)):
                report.add(it.file, it.line, it.index, gate.submit_item(it.item))
        report.finish("lifecycle check", len(args.files))
        return EXIT_REJECTED if report.rejected else EXIT_OK
    submit_line, add = gate.submit_line, report.add
    with progress(args.files, "check") as bar:
        for line in read_lines(args.files):
            if line.oversize or len(line.raw) > MAX_BYTES:
                # Not read whole (its start is no message), or a reason may note what the
                # quarantine keeps of it: as items_of says, as `ingest` reports it.
                for it in items_of(line):
                    add(it.file, it.line, it.index, gate.submit_item(it.item))
                bar.advance(line.oversize or len(line.raw))
                continue
            for index, verdict in enumerate(submit_line(line.raw)):
                add(line.file, line.number, index, verdict)
            bar.advance(len(line.raw))
    report.finish("lifecycle check", len(args.files))
    return EXIT_REJECTED if report.rejected else EXIT_OK
