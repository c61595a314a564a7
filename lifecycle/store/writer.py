"""One submission, one transaction: read what the rules need, judge, write.

The write path reads as little as it can. Account states come from a cache of
recently written heads, trusted only while the stored head still has the same
version (one indexed look-up per account, no JSON decoding). Whether a
messageId is already stored is *not* asked up front: an accepted event whose
messageId is stored fails on the unique index, and the submission is judged
again in *careful* mode, which asks first. Only rejected messages are checked
after judging, since a stored duplicate must be reported as ``duplicate``
rather than as the rule it would break. Careful mode also replays accounts
whose head row is missing.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Connection

from lifecycle.decide import REJECTED, Verdict, judge, malformed
from lifecycle.envelope import (
    EnvelopeError,
    group_id_of,
    is_storable_key,
    message_id_of,
    parse_event,
)
from lifecycle.messages import Malformed
from lifecycle.policy import Policy
from lifecycle.replay import load_account
from lifecycle.spec import ACCOUNT_UNKNOWN
from lifecycle.state import AccountState
from lifecycle.store import outbox, repository
from lifecycle.store.codec import event_row, head_row, now, payload_text

API = "api"


@dataclass(frozen=True, slots=True)
class Submission:
    """One message to judge, with where it came from (for the quarantine)."""

    item: Mapping[str, Any] | Malformed
    raw: bytes
    source: str = API
    line: int | None = None
    index: int | None = None
    whole_line: bool = False
    #: Whether the source can be read again as it was (see ``InputLine.rereadable``).
    rereadable: bool = True

    @property
    def account(self) -> str | None:
        """The account the message names, if it is an object with a valid groupId."""
        return None if isinstance(self.item, Malformed) else group_id_of(self.item)


class NeedsCare(Exception):
    """Optimistic reading was not enough for this submission: judge it again carefully."""


class HeadCache:
    """Recently written account states, shared by the threads of one process.

    An entry is only ever used after checking that the stored head has the same
    version, so another process writing the same account cannot make it lie.
    """

    def __init__(self, size: int = 200_000) -> None:
        self._size = size
        self._states: dict[str, AccountState] = {}
        self._lock = threading.Lock()

    def get(self, accounts: Iterable[str]) -> dict[str, AccountState]:
        """The cached states of ``accounts`` (those that are cached)."""
        with self._lock:
            return {a: s for a in accounts if (s := self._states.get(a)) is not None}

    def put(self, states: Iterable[AccountState]) -> None:
        """Remember committed states, forgetting the oldest entries past the size limit."""
        with self._lock:
            for state in states:
                self._states.pop(state.account, None)
                self._states[state.account] = state
            while len(self._states) > self._size:
                del self._states[next(iter(self._states))]

    def discard(self, accounts: Iterable[str]) -> None:
        """Forget ``accounts`` (their heads were written in a transaction we do not own)."""
        with self._lock:
            for account in accounts:
                self._states.pop(account, None)


class Repeats:
    """Which files of the input the quarantine holds lines of: files judged before.

    A line of such a file may be one the quarantine holds, which must come back
    with the rejection it got (see :func:`_rejected_before`) whatever else its
    submission holds, so the submission is judged carefully. The quarantine is
    asked once per file (an indexed look-up), and again when lines of it come a
    second time (the file judged again by this process); a file it holds no line
    of is judged as usual, once the quarantine is found to hold none of the
    submission's own lines either (another run of the file may be rejecting them
    at the same time).
    """

    #: Files remembered; past this many the oldest are forgotten (asked about again).
    SOURCES = 1024

    def __init__(self) -> None:
        self._held: dict[str, bool] = {}
        #: One bit per line number judged, per file.
        self._judged: dict[str, bytearray] = {}
        #: Per file, the line a submission ended inside of, when that line was judged
        #: before: the next submission, which goes on with its later items, repeats it too.
        self._repeating: dict[str, int] = {}
        self._lock = threading.Lock()

    def any_in(self, conn: Connection, subs: Sequence[Submission]) -> bool:
        """Whether ``subs`` come from a file the quarantine holds lines of."""
        files = [s for s in subs if s.source != API and s.rereadable]
        sources = {s.source for s in files}
        if not sources:
            return False
        # A line's first message marks it: the rest of a batch line may come in the next
        # submission, which is not the line coming again.
        firsts = [(s.source, s.line or 0) for s in files if not s.index]
        with self._lock:
            again = set()
            repeated = set()
            for source, line in firsts:
                if self._seen(source, line):  # judged before, or earlier in these subs
                    again.add(source)
                    repeated.add((source, line))
                self._mark(source, line)
            head, tail = files[0], files[-1]
            if head.index and self._repeating.get(head.source) == head.line:
                again.add(head.source)  # the rest of a batch line judged before
                repeated.add((head.source, head.line or 0))
            if (tail.source, tail.line or 0) in repeated:
                self._repeating[tail.source] = tail.line or 0
            else:
                self._repeating.pop(tail.source, None)
            # A line twice in one submission (the file given twice, one chunk holding both):
            # the second must get the first's rejection, which only care looks for.
            held = len(set(firsts)) < len(firsts)
            for source in sources:
                stored_as = _fitting(source, MAX_SOURCE_CHARS)
                known = self._held.get(source)
                if known is None or (not known and source in again):
                    known = repository.holds_source(conn, stored_as)
                    self._held[source] = known
                # Another run of the same file at once may have rejected these lines since.
                held = (
                    held
                    or known
                    or repository.holds_items(
                        conn,
                        stored_as,
                        ((s.line or 0, s.index or 0) for s in files if s.source == source),
                    )
                )
            for table in (self._held, self._judged, self._repeating):
                while len(table) > self.SOURCES:
                    del table[next(iter(table))]
            return held

    def _seen(self, source: str, line: int) -> bool:
        bits = self._judged.get(source)
        return (
            bits is not None and (line >> 3) < len(bits) and bool(bits[line >> 3] >> (line & 7) & 1)
        )

    def _mark(self, source: str, line: int) -> None:
        bits = self._judged.setdefault(source, bytearray())
        if (line >> 3) >= len(bits):
            bits.extend(bytes(max((line >> 3) + 1 - len(bits), len(bits))))
        bits[line >> 3] |= 1 << (line & 7)


@dataclass(slots=True)
class Outcome:
    """What a submission decided: a verdict per message and the accounts' new states."""

    verdicts: list[Verdict]
    states: list[AccountState]
    #: When the submission was recorded (the events' ``recorded_at``).
    recorded: datetime
    found_stored: bool = False
    #: Accounts among ``states`` only because their lost head row was rebuilt: nothing
    #: was appended to them, so another writer may append to them before this commits.
    rebuilt_only: frozenset[str] = frozenset()


def write(
    conn: Connection,
    policy: Policy,
    cache: HeadCache,
    subs: Sequence[Submission],
    *,
    careful: bool,
    snapshot_every: int | None = None,
    quarantine: bool = True,
    forward: bool = False,
    deferred: Mapping[str, AccountState] | None = None,
) -> Outcome:
    """Judge ``subs`` in order against what is stored, and write the result on ``conn``.

    ``deferred``: the states this transaction already appended to, whose head rows
    the caller writes once, before it commits (see ``Lifecycle.transaction``). They
    are authoritative: no other writer can append to those accounts until this
    transaction ends, since its events hold their next versions. With it, the
    heads this submission moves are not written either.
    """
    recorded = now()
    accounts = list(
        dict.fromkeys(a for s in subs if (a := s.account) is not None and is_storable_key(a))
    )
    moved_here = deferred or {}
    known = {a: s for a in accounts if (s := moved_here.get(a)) is not None}
    unknown = [a for a in accounts if a not in known]
    states, rebuilt = _load_states(conn, policy, cache, unknown, careful)
    states.update(known)
    seen = repository.accepted_ids(conn, _message_ids(subs)) if careful else set()
    # Lines of a file judged before (a re-run): the rejection they got, not a new verdict.
    earlier, repeats = _rejected_before(conn, subs) if careful and quarantine else (None, {})
    found_stored = bool(seen or rebuilt or earlier)
    before = {a: s.version for a, s in states.items()}
    judging = _Judging(policy, states, seen, recorded, earlier or {}, repeats)
    repository.append_events(conn, judging.rows(subs))
    verdicts, event_rows = judging.verdicts, judging.event_rows
    if not careful:
        _recheck_rejections(conn, verdicts, seen)
    if forward:
        # The Segment outbox: one pending row per appended event, in this same transaction.
        outbox.enqueue(conn, event_rows)
    # A rebuilt account's head row is missing: it is written even if nothing moved it.
    appended = {a for a, s in states.items() if before.get(a) != s.version}
    moved = [s for a, s in states.items() if a in rebuilt or a in appended]
    if deferred is None:
        repository.write_heads(conn, [head_row(s, recorded) for s in moved])
    if snapshot_every:
        due = [
            s
            for s in moved
            if s.version // snapshot_every > before.get(s.account, 0) // snapshot_every
        ]
        repository.write_snapshots(conn, policy.fingerprint, due, recorded)
    if quarantine:
        _quarantine(conn, subs, verdicts, recorded, earlier)
    return Outcome(verdicts, moved, recorded, found_stored, frozenset(rebuilt - appended))


@dataclass(slots=True)
class _Judging:
    """One submission being judged: the states it moves, its verdicts and its event rows."""

    policy: Policy
    states: dict[str, AccountState]
    seen: set[str]
    recorded: datetime
    #: By position in the submission: lines a run of the same file rejected, and why.
    earlier: dict[int, tuple[str, str]] = field(default_factory=dict)
    #: By position: the line came earlier in this submission too, at the position given.
    repeats: dict[int, int] = field(default_factory=dict)
    verdicts: list[Verdict] = field(default_factory=list)
    event_rows: list[tuple[Any, ...]] = field(default_factory=list)

    def rows(self, subs: Sequence[Submission]) -> Iterator[tuple[Any, ...]]:
        """Judge ``subs`` in order, yielding each accepted event's row as it is decided.

        A generator so that the store can write one row while the next is judged;
        a failure here aborts the write, and the transaction with it.
        """
        policy, states, seen, verdicts = self.policy, self.states, self.seen, self.verdicts
        initial = policy.initial

        def load(account: str) -> AccountState:
            state = states.get(account)
            return state if state is not None else AccountState(account, initial)

        earlier, repeats = self.earlier, self.repeats
        for position, sub in enumerate(subs):
            if earlier and position in earlier:
                code, reason = earlier[position]
                verdicts.append(_as_before(sub, code, reason, _field_at_fault(policy, sub, code)))
                continue
            if repeats and position in repeats:
                first = verdicts[repeats[position]]
                if first.code is not None and first.reason is not None:
                    verdicts.append(_as_before(sub, first.code, first.reason, first.field))
                    continue
            if isinstance(sub.item, Malformed):
                verdicts.append(malformed(sub.item.reason))
                continue
            verdict, new = judge(policy, sub.item, load, seen.__contains__)
            verdicts.append(verdict)
            if new is not None:
                assert verdict.event is not None
                states[new.account] = new
                payload = payload_text(sub.item, sub.raw if sub.whole_line else None)
                row = event_row(verdict.event, new.version, payload, self.recorded)
                self.event_rows.append(row)
                if verdict.message_id is not None:
                    seen.add(verdict.message_id)
                yield row


def _load_states(
    conn: Connection, policy: Policy, cache: HeadCache, accounts: list[str], careful: bool
) -> tuple[dict[str, AccountState], set[str]]:
    """Current states of ``accounts``, and which of them were rebuilt from events."""
    versions = repository.head_versions(conn, accounts)
    cached = cache.get(versions)
    states = {a: s for a, s in cached.items() if s.version == versions[a]}
    stale = [a for a in versions if a not in states]
    if stale:
        states.update(repository.head_states(conn, stale))
    rebuilt: set[str] = set()
    if careful:
        headless = [a for a in accounts if a not in versions]
        for account in repository.stored_versions(conn, headless):
            state = load_account(conn, policy, account)
            if state is not None:
                states[account] = state
                rebuilt.add(account)
    return states, rebuilt


def _recheck_rejections(conn: Connection, verdicts: list[Verdict], seen: set[str]) -> None:
    """Rejections that a stored event would explain: stored duplicates, lost head rows.

    A rule rejection of a message whose messageId is already stored means this
    input repeats stored input (a re-run, or a resumed ingest): it is judged
    again carefully, where the stored messageIds are duplicates and the lines an
    earlier run rejected keep their rejection. ``account_unknown`` for an account
    that has events means its head row was lost: judged again carefully too.
    """
    suspects = [
        v.message_id
        for v in verdicts
        if v.code is not None
        and v.event is not None
        and v.message_id is not None
        and v.message_id not in seen
    ]
    if suspects and repository.accepted_ids(conn, list(dict.fromkeys(suspects))):
        raise NeedsCare
    unknown = list({v.account for v in verdicts if v.code == ACCOUNT_UNKNOWN and v.account})
    if unknown and repository.stored_versions(conn, unknown):
        raise NeedsCare


def _message_ids(subs: Sequence[Submission]) -> list[str]:
    ids = (message_id_of(s.item) for s in subs if not isinstance(s.item, Malformed))
    return list(dict.fromkeys(m for m in ids if m is not None and is_storable_key(m)))


def _quarantine(
    conn: Connection,
    subs: Sequence[Submission],
    verdicts: list[Verdict],
    recorded: datetime,
    earlier: Mapping[int, object] | None,
) -> None:
    """Quarantine the rejections, each line of a file once.

    ``earlier`` holds the positions :func:`_rejected_before` found quarantined already,
    when it looked every line up; else (None) the quarantine is asked here.
    """
    rows = [
        _quarantine_row(sub, verdict, recorded)
        for position, (sub, verdict) in enumerate(zip(subs, verdicts, strict=True))
        if verdict.code is not None and (earlier is None or position not in earlier)
    ]
    rows = _once_per_line(rows)
    digests = [r["digest"] for r in rows if r["digest"] is not None]
    if digests and earlier is None:
        known = repository.quarantined(conn, digests)
        rows = [r for r in rows if r["digest"] is None or r["digest"] not in known]
    repository.quarantine_rows(conn, rows)


def _once_per_line(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``rows`` without the later rows of a line already among them.

    The same file given twice to one ingest (``f.jsonl ./f.jsonl``) brings each of
    its lines twice into one submission; its rejected lines then had two rows with
    one digest, which the unique index refused, and the ingest failed as though it
    had lost a race, however often it was run. A line is quarantined once.
    """
    seen: set[str] = set()
    kept = []
    for row in rows:
        digest = row["digest"]
        if digest is not None:
            if digest in seen:
                continue
            seen.add(digest)
        kept.append(row)
    return kept


#: The quarantine's ``source`` column holds this many characters.
MAX_SOURCE_CHARS = 1024


def _key_or_none(key: str | None) -> str | None:
    return key if key is None or is_storable_key(key) else None


def _fitting(source: str, limit: int) -> str:
    """A source name that fits its column: a path too long keeps its end (the file name)."""
    return source if len(source) <= limit else "…" + source[-(limit - 1) :]


def _kept_raw(sub: Submission) -> bytes:
    """The bytes the quarantine keeps of ``sub``: its line without the line ending."""
    return sub.raw.rstrip(b"\r\n") if sub.whole_line or isinstance(sub.item, Malformed) else sub.raw


def _digest(sub: Submission, raw: bytes) -> str | None:
    """What recognises a line of a file judged again: its source, place and bytes.

    None for what no later run can read again as it was: messages given from Python, and
    standard input or a pipe. The same bytes at the same line of the next ``ingest -``
    are other input, and had been given the rejection an unrelated earlier run gave them.
    """
    if sub.source == API or not sub.rereadable:
        return None
    key = f"{sub.source}\0{sub.line}\0{sub.index}\0".encode() + raw
    return hashlib.sha256(key).hexdigest()


def _rejected_before(
    conn: Connection, subs: Sequence[Submission]
) -> tuple[dict[int, tuple[str, str]], dict[int, int]]:
    """Positions of the lines of a file that an earlier run rejected, with its code and
    reason; and positions of lines that came earlier in ``subs``, with that position.

    Asked only when the submission is known to repeat input (a re-run, a resumed
    ingest, a file given twice): judged again against the state that the first
    reading went on to build, such a line could be accepted out of its place in the
    file (a ``Signed In`` rejected before the user's ``Signed Up``), which one
    reading would never do.
    """
    digests = {i: d for i, sub in enumerate(subs) if (d := _digest(sub, _kept_raw(sub)))}
    if not digests:
        return {}, {}
    found = repository.quarantined(conn, list(dict.fromkeys(digests.values())))
    first: dict[str, int] = {}
    repeats: dict[int, int] = {}
    for position, digest in digests.items():
        if (earliest := first.setdefault(digest, position)) != position:
            repeats[position] = earliest
    return {i: found[d] for i, d in digests.items() if d in found}, repeats


def _as_before(sub: Submission, code: str, reason: str, at_fault: str | None) -> Verdict:
    """The rejection an earlier run gave ``sub``, as the verdict of this one.

    ``at_fault`` is the field the rejection named, when it is known here.
    """
    if isinstance(sub.item, Malformed):
        return Verdict(REJECTED, code, reason, "line")
    name = sub.item.get("event")
    return Verdict(
        REJECTED,
        code,
        reason,
        at_fault,
        message_id_of(sub.item),
        name if isinstance(name, str) else None,
        sub.account,
    )


def _field_at_fault(policy: Policy, sub: Submission, code: str) -> str | None:
    """The field an envelope rejection named: the quarantine keeps no field, but an
    envelope check depends on the message alone, so checking it again names the field."""
    if isinstance(sub.item, Malformed):
        return None
    parsed = parse_event(sub.item, policy.catalog)
    return parsed.field if isinstance(parsed, EnvelopeError) and parsed.code == code else None


def _quarantine_row(sub: Submission, verdict: Verdict, recorded: datetime) -> dict[str, Any]:
    raw = _kept_raw(sub)
    digest = _digest(sub, raw)
    return {
        "received_at": recorded,
        "source": _fitting(sub.source, MAX_SOURCE_CHARS),
        "line": sub.line,
        "batch_index": sub.index,
        "code": verdict.code,
        # PostgreSQL's text holds no NUL character; a reason may quote a key that has one.
        "reason": verdict.reason and verdict.reason.replace("\0", "\\u0000"),
        # A key its column cannot hold (rejected as ``invalid_key``) stays in ``raw`` only.
        "account": _key_or_none(verdict.account),
        "message_id": _key_or_none(verdict.message_id),
        "event": verdict.event_name,
        "raw": raw,
        "digest": digest,
    }
