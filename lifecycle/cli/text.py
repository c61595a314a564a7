"""Text output: what the command line prints of values that came from the input."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lifecycle.state import AccountState

#: Control characters (C0, DEL and C1) as escapes; tab, newline and return by name.
_ESCAPES = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0))} | {
    0x09: "\\t",
    0x0A: "\\n",
    0x0D: "\\r",
}


def shown(value: object) -> str:
    """``value`` for a line of text output, its control characters escaped.

    Account and user ids, reasons and sources come from the input, and the rules
    allow any character in them but NUL. A tab or a newline would break a line's
    columns (or fake a line), and an escape sequence would reach the terminal.
    The JSON formats escape them already.
    """
    return str(value).translate(_ESCAPES)


def account_line(state: AccountState) -> str:
    """An account as `accounts list` and `replay --format text` print it, tab-separated:
    id, status, version, number of users."""
    return f"{shown(state.account)}\t{state.status}\t{state.version}\t{len(state.users)}"
