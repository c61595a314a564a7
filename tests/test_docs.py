"""The documentation cannot rot: generated parts are current and examples run."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from lifecycle.render import refresh

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_generated_blocks_are_current() -> None:
    """docs/rules.md shows the tables and diagram the default policy generates today."""
    page = ROOT / "docs" / "rules.md"
    text = page.read_text(encoding="utf-8")
    assert "<!-- generated: rules-table -->" in text
    assert refresh(text) == text, "stale: run `python -m lifecycle.render docs/rules.md`"


def python_blocks(page: Path) -> list[str]:
    """Fenced ```python blocks (```py blocks are sketches and are not run)."""
    return re.findall(r"```python\n(.*?)```", page.read_text(encoding="utf-8"), flags=re.DOTALL)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_python_examples_run(page: Path) -> None:
    """Every ```python block of a page runs, in order, in one namespace."""
    namespace: dict[str, object] = {}
    for block in python_blocks(page):
        exec(compile(block, str(page), "exec"), namespace)


def test_cli_md_names_the_format_option_of_relay_status_and_parked() -> None:
    """`relay status --format text|json` and `relay parked --format text|jsonl` (both in
    --help and segment.md) are documented on the command-line page too."""
    text = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    relay = text[text.index("## `lifecycle relay") :]
    relay = relay[: relay.index("\n## ")]
    assert re.search(r"relay status[^.]*--format", relay), "cli.md: relay status --format"
    assert re.search(r"relay parked[^.]*--format", relay), "cli.md: relay parked --format"
