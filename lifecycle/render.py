"""Documentation generated from a policy: the rules table and the state diagram.

``docs/rules.md`` holds blocks between ``<!-- generated: NAME -->`` and
``<!-- end: NAME -->`` markers; :func:`refresh` rewrites them from the policy,
and a test fails when the committed page differs from what the policy says.
Run ``python -m lifecycle.render docs/rules.md`` after changing the rules.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable

from lifecycle.policy import Policy, Rule
from lifecycle.rules import DEFAULT_POLICY


def rules_table(policy: Policy) -> str:
    """A Markdown table: events down, states across; each cell the outcome and its checks."""
    states = policy.states
    lines = [
        "| event | " + " | ".join(f"`{s}`" for s in states) + " |",
        "|---|" + "---|" * len(states),
    ]
    for spec in policy.events:
        cells = []
        for state in states:
            entry = policy.rule(state, spec.name)
            if isinstance(entry, Rule):
                move = "stays" if entry.dest == state else f"→ `{entry.dest}`"
                checks = ", ".join(f"`{g.code}`" for g in entry.guards)
                cells.append(f"{move}<br>checks {checks}" if checks else move)
            else:
                cells.append(f"✗ `{entry.code}`")
        name = spec.name + "".join(f"<br>({alias})" for alias in spec.aliases)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def properties_table(policy: Policy) -> str:
    """A Markdown table of every event's typed semantic properties."""
    lines = ["| event | properties |", "|---|---|"]
    for spec in policy.events:
        props = ", ".join(f"`{n}` ({t.value})" for n, t in spec.properties.items()) or "—"
        lines.append(f"| {spec.name} | {props} |")
    return "\n".join(lines) + "\n"


def diagram_block(policy: Policy) -> str:
    """The Mermaid diagram in a fenced block."""
    return "```mermaid\n" + policy.diagram("mermaid") + "```\n"


BLOCKS: dict[str, Callable[[Policy], str]] = {
    "rules-table": rules_table,
    "properties-table": properties_table,
    "diagram": diagram_block,
}


def refresh(text: str, policy: Policy = DEFAULT_POLICY) -> str:
    """``text`` with every generated block rewritten from ``policy``."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        return f"<!-- generated: {name} -->\n{BLOCKS[name](policy)}<!-- end: {name} -->"

    return re.sub(
        r"<!-- generated: ([\w-]+) -->\n.*?<!-- end: \1 -->", replace, text, flags=re.DOTALL
    )


def main(paths: list[str]) -> int:
    """Rewrite the generated blocks of each file in place."""
    for path in paths:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(refresh(text))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
