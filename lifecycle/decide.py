"""The decision: one message and the account's state in, one verdict (and maybe a new state) out.

``decide`` is the pure core (Equinox's *decide* and *evolve* in one step): it
never reads anything but its arguments. ``judge`` runs the whole check order of
RULES.md around it, given two callables that say what the caller knows (the
account's state, whether a messageId was already accepted), so that the
in-memory gate and the database-backed :class:`lifecycle.Lifecycle` share
every rule. Pure: no I/O.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from typing import Any, Literal

from lifecycle._frozen import fast_init
from lifecycle.envelope import (
    EnvelopeError,
    Event,
    event_name,
    group_id_of,
    message_id_of,
    parse_event,
)
from lifecycle.errors import PolicyError
from lifecycle.policy import Policy, Refusal, Rule
from lifecycle.spec import MALFORMED_JSON
from lifecycle.state import AccountState

VerdictKind = Literal["accepted", "rejected", "duplicate", "ignored"]
ACCEPTED: VerdictKind = "accepted"
REJECTED: VerdictKind = "rejected"
DUPLICATE: VerdictKind = "duplicate"
IGNORED: VerdictKind = "ignored"


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why the account's rules refused an event: a stable code and a sentence."""

    code: str
    reason: str


@fast_init
@dataclass(frozen=True, slots=True)
class Verdict:
    """The outcome for one message.

    ``verdict`` is one of ``accepted``, ``rejected``, ``duplicate``,
    ``ignored``. A rejection carries a stable ``code``, a ``reason`` naming the
    account, the user and what was expected, and for envelope errors the
    ``field`` at fault. ``message_id``, ``event_name`` and ``account`` are what
    the message said, where it said it; ``event`` is the validated event when
    the envelope was sound.
    """

    verdict: VerdictKind
    code: str | None = None
    reason: str | None = None
    field: str | None = None
    message_id: str | None = None
    event_name: str | None = None
    account: str | None = None
    event: Event | None = dataclass_field(default=None, repr=False, compare=False)

    @property
    def accepted(self) -> bool:
        """True for an accepted message."""
        return self.verdict == ACCEPTED

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: messageId, event, groupId, verdict, and code and reason if any."""
        out: dict[str, Any] = {
            "messageId": self.message_id,
            "event": self.event_name,
            "groupId": self.account,
            "verdict": self.verdict,
        }
        if self.code is not None:
            out["code"] = self.code
            out["reason"] = self.reason
        return out


def decide(policy: Policy, state: AccountState, event: Event) -> AccountState | Rejection:
    """Apply ``event`` to ``state`` under ``policy``: the new state, or why not.

    Runs steps 5 and 6 of the check order (account, then the event's own rules)
    through the compiled table. ``state`` is never modified.
    """
    try:
        entry = policy.rule(state.status, event.name)
    except KeyError:
        raise foreign_state(policy, state) from None
    if isinstance(entry, Refusal):
        detail = entry.expected
        if state.status != policy.initial and state.status not in policy.final:
            detail = f"{detail} (account is {state.status})"
        return Rejection(
            entry.code, f"{event.sent_name} for {event.account} by {event.user}: {detail}"
        )
    for guard in entry.guards:
        try:
            failed = guard.check(state, event)
        except Exception as exc:
            raise _code_failed(f"guard {guard.name!r}", event, exc) from exc
        if failed is not None:
            return Rejection(
                guard.code, f"{event.sent_name} for {event.account} by {event.user}: {failed}"
            )
    return apply(entry, state, event)


def _code_failed(what: str, event: Event, exc: Exception) -> PolicyError:
    """The error for a policy's own guard or effect that raised instead of answering.

    It names the code and the event it failed on, and where it raised, so that the
    one line a command prints is enough to find the bug; a rejection would hide it.
    """
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" at {frames[-1].filename}:{frames[-1].lineno}" if frames else ""
    return PolicyError(
        f"{what} raised {type(exc).__name__}: {exc}{where}, on {event.sent_name}"
        f" for {event.account} by {event.user}"
    )


def malformed(reason: str) -> Verdict:
    """The verdict for input that is not a JSON object."""
    return Verdict(REJECTED, MALFORMED_JSON, reason, "line")


def judge(
    policy: Policy,
    message: Mapping[str, Any],
    load: Callable[[str], AccountState],
    seen: Callable[[str], bool],
) -> tuple[Verdict, AccountState | None]:
    """Run the check order on one decoded message.

    ``load(account)`` returns the account's current state (a fresh
    ``AccountState(account)`` for one never seen); ``seen(message_id)`` tells
    whether that messageId was already accepted. Returns the verdict and, for an
    accepted message, the account's new state.
    """
    parsed = parse_event(message, policy.catalog)
    if parsed is None:
        return Verdict(
            IGNORED, None, None, None, message_id_of(message), _name(message), group_id_of(message)
        ), None
    if isinstance(parsed, EnvelopeError):
        return (
            Verdict(
                REJECTED,
                parsed.code,
                parsed.reason,
                parsed.field,
                message_id_of(message),
                event_name(message),
                group_id_of(message),
            ),
            None,
        )
    mid = parsed.message_id
    if mid is not None and seen(mid):
        return Verdict(
            DUPLICATE, None, None, None, mid, parsed.sent_name, parsed.account, parsed
        ), None
    outcome = decide(policy, load(parsed.account), parsed)
    if isinstance(outcome, Rejection):
        return (
            Verdict(
                REJECTED,
                outcome.code,
                outcome.reason,
                None,
                mid,
                parsed.sent_name,
                parsed.account,
                parsed,
            ),
            None,
        )
    return Verdict(
        ACCEPTED, None, None, None, mid, parsed.sent_name, parsed.account, parsed
    ), outcome


def _name(message: Mapping[str, Any]) -> str | None:
    name = message.get("event")
    return name if isinstance(name, str) else None


def evolve(policy: Policy, state: AccountState, event: Event) -> AccountState:
    """Apply an event that was already accepted under ``policy``: no guard runs again.

    Replay uses this: a stored event passed every check when it was appended, so
    re-running the guards would only cost time. An event the policy does not know,
    or refuses in that state, means the history was written under another policy:
    :func:`foreign_history`.
    """
    entry = policy.table.get((state.status, event.name))
    if not isinstance(entry, Rule):
        raise foreign_history(policy, state, event.name)
    return apply(entry, state, event)


def foreign_history(policy: Policy, state: AccountState, name: str) -> PolicyError:
    """The error for a stored event that ``policy`` would not have accepted in ``state``.

    Replaying a store under a policy other than the one it was written under
    (``--policy`` forgotten, most often) must stop with this, not a ``KeyError``.
    """
    if name not in policy.catalog:
        why = f"{name} is not an event of policy {policy.name!r}"
    else:
        entry = policy.table.get((state.status, name))
        code = f" ({entry.code})" if isinstance(entry, Refusal) else ""
        why = f"policy {policy.name!r} refuses {name} in state {state.status!r}{code}"
    return PolicyError(
        f"{why}, yet account {state.account} stored it as event {state.version + 1}: the"
        " history was written under another policy; read it with that one (--policy)"
    )


def foreign_state(policy: Policy, state: AccountState) -> PolicyError:
    """The error for a stored account whose status ``policy`` does not have.

    A store written under a policy with more states, judged further under one
    without them (``--policy`` forgotten), must stop with this, not a ``KeyError``.
    """
    return PolicyError(
        f"account {state.account} is in state {state.status!r}, which policy"
        f" {policy.name!r} does not have: the store was written under another policy;"
        " use that one (--policy)"
    )


def apply(entry: Rule, state: AccountState, event: Event) -> AccountState:
    """The state after ``event`` moved the account along ``entry`` and ran its effects.

    ``version`` counts the event; ``created_at`` and ``updated_at`` take its
    ``timestamp`` when it has one. The one place both :func:`decide` and
    :func:`evolve` change a state.
    """
    users, trial = state.users, state.trial
    effects = entry.effects
    for effect in effects:
        try:
            users, trial = effect(state, event)
        except Exception as exc:
            name = getattr(effect, "__qualname__", repr(effect))
            raise _code_failed(f"effect {name}", event, exc) from exc
        if len(effects) > 1:  # later effects see what the earlier ones did
            state = AccountState(
                state.account, state.status, state.version, users, trial, state.created_at,
                state.updated_at,
            )  # fmt: skip
    ts = event.timestamp
    return AccountState(
        state.account,
        entry.dest,
        state.version + 1,
        users,
        trial,
        state.created_at if state.version else ts,
        ts if ts is not None else state.updated_at,
    )
