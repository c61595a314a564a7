"""Text output: what the command line prints of values that came from the input."""

from __future__ import annotations

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
