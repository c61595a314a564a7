"""How judged input is shown: one JSON object per message, or a summary for people."""

from __future__ import annotations

import sys
from collections import Counter
from typing import IO

import orjson

from lifecycle.cli.text import shown
from lifecycle.decide import REJECTED, Verdict


class JsonlReport:
    """Writes one JSON object per message to stdout, in input order, and nothing else."""

    def __init__(self, out: IO[bytes] | None = None) -> None:
        self.out = out if out is not None else sys.stdout.buffer
        self.rejected = 0

    def add(self, file: str, line: int, index: int, verdict: Verdict) -> None:
        """Record the verdict of the message at ``file:line`` (batch position ``index``)."""
        record = {
            "line": line,
            "index": index,
            "file": file,
            "messageId": verdict.message_id,
            "event": verdict.event_name,
            "groupId": verdict.account,
            "verdict": verdict.verdict,
        }
        if verdict.code is not None:
            record["code"] = verdict.code
            record["reason"] = verdict.reason
            self.rejected += 1
        self.out.write(orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE))

    def finish(self, command: str, files: int) -> None:
        """Flush what was written."""
        self.out.flush()


class TextReport:
    """Counts verdicts and codes and keeps the first rejections, for a summary at the end."""

    def __init__(self, out: IO[str] | None = None, show: int = 10) -> None:
        self.out = out if out is not None else sys.stdout
        self.show = show
        self.verdicts: Counter[str] = Counter()
        self.codes: Counter[str] = Counter()
        self.first: list[tuple[str, int, int, Verdict]] = []

    @property
    def rejected(self) -> int:
        """How many messages were rejected."""
        return self.verdicts[REJECTED]

    def add(self, file: str, line: int, index: int, verdict: Verdict) -> None:
        """Count the verdict; keep it if it is one of the first rejections."""
        self.verdicts[verdict.verdict] += 1
        if verdict.code is not None:
            self.codes[verdict.code] += 1
            if len(self.first) < self.show:
                self.first.append((file, line, index, verdict))

    def finish(self, command: str, files: int) -> None:
        """Print the summary; ``files`` is how many inputs were read."""
        total = sum(self.verdicts.values())
        lines = [f"{command}: {_count(total, 'message')} in {_count(files, 'file')}"]
        for kind in ("accepted", "rejected", "duplicate", "ignored"):
            lines.append(f"  {kind:<10} {self.verdicts[kind]:>12,}")
        if self.codes:
            lines.append("")
            lines.append("rejections by code:")
            width = max(len(code) for code in self.codes)
            for code, count in sorted(self.codes.items(), key=lambda kv: (-kv[1], kv[0])):
                lines.append(f"  {code:<{width}} {count:>12,}")
        if self.first:  # none with --show 0
            lines.append("")
            lines.append(f"first {len(self.first)} rejection{'s' if len(self.first) != 1 else ''}:")
            for file, line, index, verdict in self.first:
                where = f"{file}:{line}" + (f"[{index}]" if index else "")
                lines.append(f"  {shown(where)}  {verdict.code}  {shown(verdict.reason)}")
        self.out.write("\n".join(lines) + "\n")
        self.out.flush()


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


Report = JsonlReport | TextReport
