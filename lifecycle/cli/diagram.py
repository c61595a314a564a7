"""``lifecycle diagram``: the account state machine, generated from the policy."""

from __future__ import annotations

import argparse
import sys

from lifecycle.cli.common import EXIT_OK, add_format_argument, load_policy


def add_parser(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``diagram``."""
    parser = commands.add_parser(
        "diagram",
        help="print the account state machine (Mermaid or Graphviz dot)",
        description="Print the account state machine of the policy, generated from its definition.",
    )
    add_format_argument(parser, "mermaid", "dot")
    parser.add_argument("--policy", metavar="MODULE:ATTR", help="a policy other than the default")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Print the diagram."""
    sys.stdout.write(load_policy(args.policy).diagram(args.format))
    return EXIT_OK
