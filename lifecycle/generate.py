"""Realistic, deterministic Segment B2B SaaS histories, for benchmarks and load tests.

:func:`generate` simulates a product's event stream: many accounts live at once
(created over time; most start a trial and most trials end; a few accounts are
deleted), several users per account (founders sign up, colleagues are invited
or added with a role, a few are removed), and mostly sessions: about three
messages in four are ``Signed In`` or ``Signed Out``.

Every message is judged as it is produced, by the :func:`~lifecycle.decide.judge`
a :class:`~lifecycle.gate.Gate` runs, and comes out with its verdict and code,
so a file of expected verdicts can be written beside the history. With
``illegal_rate=0`` every message is accepted; with ``illegal_rate=R`` about
``R`` of the messages are deliberate violations of many kinds (an unknown or
deleted account, a second trial, a sign-out while signed out, an unknown user,
a redelivered messageId, a bad timestamp, a property of the wrong type, ...).

Deterministic: the same arguments give the same messages, byte for byte once
serialized, because the only source of randomness is ``random.Random(seed)``.
Memory is bounded by the number of accounts, never by the number of events.
Unlike a gate, which keeps every accepted messageId, the generator keeps only
the most recent ones: its messageIds are fresh random UUIDs and only recent
messages are ever sent again. It also forgets a deleted account once no message
will name it again. The verdicts are still the ones a gate judging the whole
history would give. Pure: no I/O.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, NamedTuple

from lifecycle.decide import ACCEPTED, DUPLICATE, VerdictKind, judge
from lifecycle.policy import Policy
from lifecycle.rules import ACTIVE, CREATED, DEFAULT_POLICY, DELETED, TRIAL
from lifecycle.spec import (
    ACCOUNT_ADDED_USER,
    ACCOUNT_CREATED,
    ACCOUNT_DELETED,
    ACCOUNT_DELETED_CODE,
    ACCOUNT_EXISTS,
    ACCOUNT_REMOVED_USER,
    ACCOUNT_UNKNOWN,
    INVALID_KEY,
    INVALID_PROPERTY,
    INVALID_TIMESTAMP,
    INVITE_SENT,
    MAX_KEY_CHARS,
    MISSING_GROUP_ID,
    MISSING_USER,
    NOT_SIGNED_IN,
    SIGNED_IN,
    SIGNED_OUT,
    SIGNED_UP,
    TRIAL_ALREADY_STARTED,
    TRIAL_DATES_INVERTED,
    TRIAL_ENDED,
    TRIAL_MISMATCH,
    TRIAL_NOT_ACTIVE,
    TRIAL_STARTED,
    USER_ALREADY_MEMBER,
    USER_ALREADY_SIGNED_UP,
    USER_NOT_MEMBER,
    USER_UNKNOWN,
)
from lifecycle.state import AccountState

Message = dict[str, Any]


class GeneratedMessage(NamedTuple):
    """One generated message and the verdict lifecycle gives it.

    ``message`` is a fresh, JSON-ready Segment track message. ``verdict`` and
    ``code`` are what a :class:`~lifecycle.gate.Gate` says, judging the
    messages in the order they were generated. ``injected`` names the violation
    deliberately injected (the rejection code aimed at, or ``"duplicate"``),
    None for a message meant to be legal. A tuple, because a million of them
    are made per benchmark run.
    """

    message: Message
    verdict: VerdictKind
    code: str | None
    injected: str | None

    def expectation(self) -> dict[str, Any]:
        """The expected-verdict record of this message (for a sidecar file)."""
        return {
            "messageId": self.message.get("messageId"),
            "verdict": self.verdict,
            "code": self.code,
        }


def generate(
    *,
    accounts: int,
    events: int,
    seed: int = 0,
    illegal_rate: float = 0.0,
    policy: Policy = DEFAULT_POLICY,
) -> Iterator[GeneratedMessage]:
    """Yield ``events`` messages of an interleaved history over ``accounts`` accounts.

    Accounts are created over the first 70% of the stream (all ``accounts`` of
    them when ``events`` allows). Each message is judged under ``policy`` before
    it is yielded; the simulation only moves on from what was accepted, so
    the history stays coherent even around rejected messages.

    >>> [g.message["event"] for g in generate(accounts=1, events=3)]
    ['Account Created', 'Signed Up', 'Account Added User']
    """
    if accounts < 1:
        raise ValueError(f"accounts={accounts!r} must be at least 1")
    if events < 0:
        raise ValueError(f"events={events!r} must not be negative")
    if not 0.0 <= illegal_rate <= 1.0:
        raise ValueError(f"illegal_rate={illegal_rate!r} must be between 0 and 1")
    if seed < 0:  # Python's generator seeds with the absolute value: -1 gave what 1 gives
        raise ValueError(f"seed={seed!r} must not be negative")
    return _Simulation(accounts, events, seed, illegal_rate, policy).run()


# -- what the simulation knows --------------------------------------------------------------

_START = datetime(2024, 3, 4, 8, 0, tzinfo=UTC)
_DAY_MS = 86_400_000
_MEAN_GAP_MS = 2_500

_FIRST_NAMES = (
    "Peter", "Joanna", "Samir", "Michael", "Milton", "Bill", "Ada", "Grace", "Alan", "Barbara",
    "Edsger", "Margaret", "José", "Zoë", "Priya", "Wei", "Fatima", "Olusegun", "Ingrid", "Kenji",
)  # fmt: skip
_LAST_NAMES = (
    "Gibbons", "Nagheenanajar", "Bolton", "Waddams", "Lumbergh", "Lovelace", "Hopper", "Turing",
    "Liskov", "Dijkstra", "Hamilton", "Núñez", "O'Brien", "Okafor", "Larsen", "Tanaka", "Chen",
)  # fmt: skip
_COMPANY_WORDS = (
    "Initech", "Globex", "Hooli", "Acme", "Umbrella", "Vandelay", "Stark", "Wayne", "Cyberdyne",
    "Soylent", "Wonka", "Tyrell", "Massive", "Aperture", "Oscorp", "Pied Piper", "Dunder",
)  # fmt: skip
_COMPANY_SUFFIXES = ("", " Inc", " Labs", " Group", " Systems", " Partners", " & Co")
_TITLES = ("Mr", "Ms", "Dr", "Engineer", "CTO", "Designer", "Product Manager", "Founder")
_ROLES = ("Admin", "Member", "Member", "Member", "Viewer", "Billing")
_PLANS = ("Starter", "Team", "Business", "Enterprise")
_TRIAL_DAYS = (7, 14, 14, 30)
_BASE36 = "0123456789abcdefghijklmnopqrstuvwxyz"
# Redeliveries resend one of the last _RECENT accepted messages, so remembering the last
# _REMEMBERED_IDS accepted messageIds is enough to judge them; account_deleted
# violations name one of the last _REMEMBERED_DELETIONS deleted accounts.
_RECENT = 64
_REMEMBERED_IDS = 1024
_REMEMBERED_DELETIONS = 256

# A random 128-bit number becomes a version-4, RFC 4122 variant UUID.
_UUID_KEEP = ((1 << 128) - 1) ^ ((0xF << 76) | (0x3 << 62))
_UUID_SET = (0x4 << 76) | (0x2 << 62)

# Object-Action spellings, used by the accounts whose sources prefer them.
_OBJECT_ACTION = {SIGNED_UP: "User Signed Up", SIGNED_IN: "User Signed In",
                  SIGNED_OUT: "User Signed Out"}  # fmt: skip

# Of the messages that are not onboarding or lifecycle steps, what a step of a chosen
# account is: cumulative probabilities, the rest being a session (sign in or out).
_P_LIFECYCLE = 0.1
_P_INVITE = _P_LIFECYCLE + 0.08
_P_ADD = _P_INVITE + 0.03
_P_REMOVE = _P_ADD + 0.004
# Given a lifecycle step: how likely an account bound to be deleted is deleted now, and a
# running trial (bound to end) ends now.
_P_DELETE = 0.25
_P_END_TRIAL = 0.7


class _User:
    """A user within one account, as the simulation (and lifecycle) sees it."""

    __slots__ = (
        "email", "first", "id", "last", "pending", "role", "signed_in", "signed_up", "username",
    )  # fmt: skip

    def __init__(self, uid: str, first: str, last: str, email: str, username: str) -> None:
        self.id = uid
        self.first = first
        self.last = last
        self.email = email
        self.username = username
        self.signed_up = False
        self.role: str | None = None
        self.signed_in = False
        self.pending = 0  # queued onboarding steps

    @property
    def known(self) -> bool:
        return self.signed_up or self.role is not None


class _Account:
    """An account: its status, members, trial and the steps it still has to take."""

    __slots__ = (
        "deletes", "domain", "ends_trial", "id", "index", "members", "name", "object_action",
        "queued", "size", "status", "todo", "trial_plan", "trial_start", "trials",
    )  # fmt: skip

    def __init__(self, aid: str, name: str, domain: str) -> None:
        self.id = aid
        self.name = name
        self.domain = domain
        self.status = ""
        self.index = -1  # position in the live list
        self.members: list[_User] = []  # every user known to the account
        self.size = 1  # how many users the account grows to
        self.todo: deque[tuple[str, _User, str]] = deque()  # (event, user, argument)
        self.queued = False  # in the onboarding queue
        self.trials = False
        self.ends_trial = False
        self.deletes = False
        self.object_action = False
        self.trial_plan = ""
        self.trial_start = ""


class _Simulation:
    """The state of one :func:`generate` run."""

    def __init__(
        self, accounts: int, events: int, seed: int, illegal_rate: float, policy: Policy
    ) -> None:
        self.rng = random.Random(seed)
        self.policy = policy
        self.states: dict[str, AccountState] = {}  # what lifecycle knows of each account
        self.accepted: set[str] = set()  # the most recently accepted messageIds ...
        self.accepted_order: deque[str] = deque()  # ... oldest first
        self.accounts = accounts
        self.events = events
        self.illegal_rate = illegal_rate
        # Account i is created at message i * spacing (or as soon as possible after it).
        self.spacing = 0.7 * events / accounts
        self.created = 0
        self.live: list[_Account] = []
        self.onboarding: deque[_Account] = deque()  # accounts with pending steps
        self.deleted: deque[str] = deque()  # recently deleted account ids, oldest first
        self.recent: deque[Message] = deque(maxlen=_RECENT)  # recently accepted messages
        self.now_ms = int(_START.timestamp() * 1000)
        self.minute = -1
        self.minute_text = ""

    def run(self) -> Iterator[GeneratedMessage]:
        rng = self.rng
        illegal_rate = self.illegal_rate
        for n in range(self.events):
            due = self.created < self.accounts and (
                n >= self.created * self.spacing or not self.live
            )
            # A violation may come instead of a due creation: with as many accounts as
            # events, every message was a creation and no rate gave a single violation.
            if due and not (self.live and illegal_rate and rng.random() < illegal_rate):
                yield self.create_account()
            elif not self.live:
                raise ValueError(
                    f"policy {self.policy.name!r} accepted none of the {self.accounts} "
                    "Account Created messages: there is no account to go on with"
                )
            elif due or (illegal_rate and rng.random() < illegal_rate):
                yield self.inject()
            else:
                yield self.step()

    # -- values -----------------------------------------------------------------------------

    def tick(self) -> str:
        """Advance the clock and return the new time as Segment writes it."""
        self.now_ms += 1 + int(self.rng.random() * 2 * _MEAN_GAP_MS)
        minute, ms = divmod(self.now_ms, 60_000)
        if minute != self.minute:  # several messages a minute share the prefix
            self.minute = minute
            self.minute_text = datetime.fromtimestamp(minute * 60, UTC).strftime("%Y-%m-%dT%H:%M:")
        return f"{self.minute_text}{ms // 1000:02d}.{ms % 1000:03d}Z"

    def message_id(self) -> str:
        h = f"{self.rng.getrandbits(128) & _UUID_KEEP | _UUID_SET:032x}"
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"

    def token(self, width: int) -> str:
        n = self.rng.getrandbits(5 * width + 8)
        out = []
        for _ in range(width):
            n, digit = divmod(n, 36)
            out.append(_BASE36[digit])
        return "".join(out)

    def new_user(self, account: _Account) -> _User:
        rng = self.rng
        first, last = rng.choice(_FIRST_NAMES), rng.choice(_LAST_NAMES)
        handle = f"{first[0]}{last}".lower().replace("'", "")
        suffix = str(rng.randrange(10, 100)) if rng.random() < 0.3 else ""
        return _User(
            self.token(10),
            first,
            last,
            f"{first.lower()}.{last.lower().replace(' ', '')}{suffix}@{account.domain}",
            f"{handle}{suffix}",
        )

    def date_property(self, ms: int, date_only: bool) -> str:
        instant = datetime.fromtimestamp(ms / 1000, UTC)
        if date_only:
            return instant.date().isoformat()
        return instant.strftime("%Y-%m-%dT%H:%M:%SZ")

    # -- sending ----------------------------------------------------------------------------

    def build(self, account: _Account, event: str, user: str, properties: Message) -> Message:
        """One message of ``account`` at the next instant."""
        if account.object_action:
            event = _OBJECT_ACTION.get(event, event)
        return {
            "type": "track",
            "event": event,
            "userId": user,
            "messageId": self.message_id(),
            "timestamp": self.tick(),
            "context": {"groupId": account.id},
            "properties": properties,
        }

    def send(
        self,
        account: _Account,
        event: str,
        user: str,
        properties: Message,
        injected: str | None = None,
    ) -> GeneratedMessage:
        """Build one message and judge it."""
        return self.judge(self.build(account, event, user, properties), injected)

    def judge(self, message: Message, injected: str | None) -> GeneratedMessage:
        verdict, new = judge(self.policy, message, self.load, self.accepted.__contains__)
        if new is not None:
            self.states[new.account] = new
            self.recent.append(message)
            if verdict.message_id is not None:
                self.accepted.add(verdict.message_id)
                self.accepted_order.append(verdict.message_id)
                if len(self.accepted_order) > _REMEMBERED_IDS:
                    self.accepted.discard(self.accepted_order.popleft())
        return GeneratedMessage(message, verdict.verdict, verdict.code, injected)

    def load(self, account: str) -> AccountState:
        state = self.states.get(account)
        return state if state is not None else AccountState(account, self.policy.initial)

    # -- the account lifecycle ----------------------------------------------------------------

    def create_account(self) -> GeneratedMessage:
        rng = self.rng
        word = rng.choice(_COMPANY_WORDS)
        name = word + rng.choice(_COMPANY_SUFFIXES)
        account = _Account(f"acct_{self.token(10)}", name, word.lower().replace(" ", "") + ".com")
        account.size = min(40, 1 + int(rng.expovariate(1 / 5)))
        account.trials = rng.random() < 0.65
        account.ends_trial = rng.random() < 0.85
        account.deletes = rng.random() < 0.05
        account.object_action = rng.random() < 0.1
        founder = self.new_user(account)
        self.created += 1
        out = self.send(account, ACCOUNT_CREATED, founder.id, {"account_name": name})
        if out.verdict == ACCEPTED:
            account.status = CREATED
            account.index = len(self.live)
            self.live.append(account)
            self.plan(account, founder, (SIGNED_UP, "organic"), (ACCOUNT_ADDED_USER, "Owner"))
        return out

    def plan(self, account: _Account, user: _User, *steps: tuple[str, str]) -> None:
        """Queue a newcomer's next steps (each an event and its argument), then a sign in."""
        for event, argument in (*steps, (SIGNED_IN, "")):
            account.todo.append((event, user, argument))
            user.pending += 1
        if not account.queued:
            account.queued = True
            self.onboarding.append(account)

    def next_planned(self, account: _Account) -> GeneratedMessage:
        event, user, argument = account.todo.popleft()
        user.pending -= 1
        if event == SIGNED_UP:
            return self.sign_up(account, user, argument)
        if event == ACCOUNT_ADDED_USER:
            return self.add_user(account, user, argument)
        return self.sign_in(account, user)

    def step(self) -> GeneratedMessage:
        """The next legal message: an onboarding step, a lifecycle step, or a session."""
        rng = self.rng
        onboarding = self.onboarding
        while onboarding and rng.random() < 0.4:
            account = onboarding.popleft()
            account.queued = False
            if account.status == DELETED or not account.todo:
                continue
            out = self.next_planned(account)
            if account.todo:
                account.queued = True
                onboarding.append(account)
            return out
        account = self.live[int(rng.random() * len(self.live))]
        if account.todo:
            return self.next_planned(account)
        if not account.members:  # the policy refused its founder's onboarding: another one
            founder = self.new_user(account)
            self.plan(account, founder, (SIGNED_UP, "organic"), (ACCOUNT_ADDED_USER, "Owner"))
            return self.next_planned(account)
        members = account.members
        r = rng.random()
        if r < _P_LIFECYCLE:
            lifecycle_step = self.lifecycle(account)
            if lifecycle_step is not None:
                return lifecycle_step
        elif r < _P_INVITE:
            if len(members) < account.size:
                return self.invite(account)
        elif r < _P_ADD:
            if len(members) < account.size:  # an admin adds them; they sign up afterwards
                user = self.new_user(account)
                out = self.add_user(account, user, rng.choice(_ROLES))
                if out.verdict == ACCEPTED:
                    self.plan(account, user, (SIGNED_UP, "invited"))
                return out
        elif r < _P_REMOVE and len(members) > 1:
            user = members[1 + int(rng.random() * (len(members) - 1))]
            if not user.pending:
                return self.remove_user(account, user)
        return self.session(account)

    def lifecycle(self, account: _Account) -> GeneratedMessage | None:
        if account.deletes and len(self.live) > 1 and self.rng.random() < _P_DELETE:
            return self.delete(account)
        if account.status == CREATED and account.trials:
            return self.start_trial(account)
        if account.status == TRIAL and account.ends_trial and self.rng.random() < _P_END_TRIAL:
            return self.end_trial(account)
        return None

    def start_trial(self, account: _Account) -> GeneratedMessage:
        rng = self.rng
        date_only = rng.random() < 0.3
        plan = rng.choice(_PLANS)
        start = self.date_property(self.now_ms, date_only)
        end = self.date_property(self.now_ms + rng.choice(_TRIAL_DAYS) * _DAY_MS, date_only)
        user = rng.choice(account.members).id
        properties = {"trial_start_date": start, "trial_end_date": end, "trial_plan_name": plan}
        out = self.send(account, TRIAL_STARTED, user, properties)
        if out.verdict == ACCEPTED:
            account.status = TRIAL
            account.trial_plan, account.trial_start = plan, start
        return out

    def end_trial(self, account: _Account) -> GeneratedMessage:
        # Trials end early or late: the end date is the day it actually ended.
        end = self.date_property(self.now_ms, len(account.trial_start) == 10)
        properties = {
            "trial_start_date": account.trial_start,
            "trial_end_date": max(end, account.trial_start),
            "trial_plan_name": account.trial_plan,
        }
        out = self.send(account, TRIAL_ENDED, self.rng.choice(account.members).id, properties)
        if out.verdict == ACCEPTED:
            account.status = ACTIVE
        return out

    def delete(self, account: _Account) -> GeneratedMessage:
        user = account.members[0].id
        out = self.send(account, ACCOUNT_DELETED, user, {"account_name": account.name})
        if out.verdict == ACCEPTED:
            account.status = DELETED
            last = self.live.pop()
            if last is not account:
                self.live[account.index] = last
                last.index = account.index
            self.deleted.append(account.id)
            if len(self.deleted) > _REMEMBERED_DELETIONS:  # never named again: forget it
                del self.states[self.deleted.popleft()]
        return out

    # -- users ------------------------------------------------------------------------------

    def join(self, account: _Account, user: _User) -> None:
        if not user.known:
            account.members.append(user)

    def sign_up(self, account: _Account, user: _User, how: str) -> GeneratedMessage:
        properties = {
            "type": how,
            "first_name": user.first,
            "last_name": user.last,
            "email": user.email,
            "username": user.username,
        }
        if self.rng.random() < 0.5:
            properties["phone"] = (
                f"{self.rng.randrange(200, 1000)}-555-{self.rng.randrange(10_000):04d}"
            )
        if self.rng.random() < 0.3:
            properties["title"] = self.rng.choice(_TITLES)
        out = self.send(account, SIGNED_UP, user.id, properties)
        if out.verdict == ACCEPTED:
            self.join(account, user)
            user.signed_up = True
        return out

    def add_user(self, account: _Account, user: _User, role: str) -> GeneratedMessage:
        out = self.send(account, ACCOUNT_ADDED_USER, user.id, {"role": role})
        if out.verdict == ACCEPTED:
            self.join(account, user)
            user.role = role
        return out

    def remove_user(self, account: _Account, user: _User) -> GeneratedMessage:
        out = self.send(account, ACCOUNT_REMOVED_USER, user.id, {})
        if out.verdict == ACCEPTED:
            account.members.remove(user)
            user.signed_up, user.role, user.signed_in = False, None, False
        return out

    def invite(self, account: _Account) -> GeneratedMessage:
        rng = self.rng
        sender = rng.choice(account.members)
        invitee = self.new_user(account)
        role = rng.choice(_ROLES)
        properties = {
            "invitee_email": invitee.email,
            "invitee_first_name": invitee.first,
            "invitee_last_name": invitee.last,
            "invitee_role": role,
        }
        out = self.send(account, INVITE_SENT, sender.id, properties)
        if out.verdict == ACCEPTED and rng.random() < 0.75:
            self.plan(account, invitee, (SIGNED_UP, "invited"), (ACCOUNT_ADDED_USER, role))
        return out

    def sign_in(self, account: _Account, user: _User) -> GeneratedMessage:
        out = self.send(account, SIGNED_IN, user.id, {"username": user.username})
        if out.verdict == ACCEPTED:
            user.signed_in = True
        return out

    def session(self, account: _Account) -> GeneratedMessage:
        user = self.rng.choice(account.members)
        if user.signed_in and self.rng.random() < 0.9:
            out = self.send(account, SIGNED_OUT, user.id, {"username": user.username})
            if out.verdict == ACCEPTED:
                user.signed_in = False
            return out
        return self.sign_in(account, user)

    # -- violations -------------------------------------------------------------------------

    def inject(self) -> GeneratedMessage:
        """A message that must not be accepted, of a kind the chosen account makes possible."""
        rng = self.rng
        account = self.live[int(rng.random() * len(self.live))]
        kinds = [MISSING_USER, MISSING_GROUP_ID, INVALID_KEY, INVALID_TIMESTAMP, INVALID_PROPERTY,
                 ACCOUNT_UNKNOWN, ACCOUNT_EXISTS, USER_UNKNOWN, USER_NOT_MEMBER]  # fmt: skip
        if self.recent:
            kinds.append(DUPLICATE)
        if self.deleted:
            kinds.append(ACCOUNT_DELETED_CODE)
        status = account.status
        if status in (TRIAL, ACTIVE):
            kinds.append(TRIAL_ALREADY_STARTED)
        if status in (CREATED, ACTIVE):
            kinds.append(TRIAL_NOT_ACTIVE)
        if status == CREATED:
            kinds.append(TRIAL_DATES_INVERTED)
        if status == TRIAL:
            kinds.append(TRIAL_MISMATCH)
        members = account.members
        if any(u.role is not None for u in members):
            kinds.append(USER_ALREADY_MEMBER)
        if any(u.signed_up for u in members):
            kinds.append(USER_ALREADY_SIGNED_UP)
        if any(not u.signed_in for u in members):
            kinds.append(NOT_SIGNED_IN)
        return self.violation(rng.choice(kinds), account)

    def violation(self, kind: str, account: _Account) -> GeneratedMessage:
        rng = self.rng
        members = account.members
        someone = rng.choice(members) if members else self.new_user(account)
        signed_in = {"username": someone.username}
        if kind == DUPLICATE:  # a redelivery: the same message, sent again
            return self.judge(dict(rng.choice(self.recent)), kind)
        if kind in (MISSING_USER, MISSING_GROUP_ID, INVALID_KEY, INVALID_TIMESTAMP):
            message = self.build(account, SIGNED_IN, someone.id, signed_in)
            if kind == MISSING_USER:
                message["userId"] = rng.choice(("", None))
            elif kind == MISSING_GROUP_ID:
                message["context"] = rng.choice(({}, {"groupId": ""}, {"groupId": 42}))
            elif kind == INVALID_KEY:  # an id pasted twice over, or a whole URL
                message["userId"] = someone.id * (MAX_KEY_CHARS // len(someone.id) + 1)
            else:
                message["timestamp"] = rng.choice(
                    (message["timestamp"][:10] + "T25:00:00Z", "31/12/2024 10:00", 1712345678)
                )
            return self.judge(message, kind)
        if kind == INVALID_PROPERTY:
            choice = rng.random()
            if choice < 0.4:
                return self.send(account, SIGNED_IN, someone.id, {"username": 1234}, kind)
            if choice < 0.7:
                return self.send(account, ACCOUNT_ADDED_USER, someone.id, {"role": ["Admin"]}, kind)
            properties = {"trial_start_date": "next monday", "trial_plan_name": "Team"}
            return self.send(account, TRIAL_STARTED, someone.id, properties, kind)
        if kind == ACCOUNT_UNKNOWN:
            stranger = _Account(f"acct_{self.token(10)}", "", "")
            return self.send(stranger, SIGNED_IN, someone.id, signed_in, kind)
        if kind == ACCOUNT_DELETED_CODE:
            gone = _Account(rng.choice(self.deleted), "", "")
            return self.send(gone, SIGNED_IN, someone.id, signed_in, kind)
        if kind == ACCOUNT_EXISTS:
            properties = {"account_name": account.name}
            return self.send(account, ACCOUNT_CREATED, someone.id, properties, kind)
        if kind in (USER_UNKNOWN, USER_NOT_MEMBER):
            stranger_user = self.new_user(account)
            event = SIGNED_IN if kind == USER_UNKNOWN else ACCOUNT_REMOVED_USER
            properties = {"username": stranger_user.username} if kind == USER_UNKNOWN else {}
            return self.send(account, event, stranger_user.id, properties, kind)
        if kind == TRIAL_ALREADY_STARTED:
            properties = {"trial_start_date": self.date_property(self.now_ms, False),
                          "trial_plan_name": rng.choice(_PLANS)}  # fmt: skip
            return self.send(account, TRIAL_STARTED, someone.id, properties, kind)
        if kind == TRIAL_NOT_ACTIVE:
            properties = {"trial_end_date": self.date_property(self.now_ms, False)}
            return self.send(account, TRIAL_ENDED, someone.id, properties, kind)
        if kind == TRIAL_DATES_INVERTED:
            properties = {
                "trial_start_date": self.date_property(self.now_ms, False),
                "trial_end_date": self.date_property(self.now_ms - 3 * _DAY_MS, False),
                "trial_plan_name": rng.choice(_PLANS),
            }
            return self.send(account, TRIAL_STARTED, someone.id, properties, kind)
        if kind == TRIAL_MISMATCH:
            plan = next(p for p in _PLANS if p != account.trial_plan)
            properties = {"trial_start_date": account.trial_start, "trial_plan_name": plan}
            return self.send(account, TRIAL_ENDED, someone.id, properties, kind)
        if kind == USER_ALREADY_MEMBER:
            user = rng.choice([u for u in members if u.role is not None])
            return self.send(account, ACCOUNT_ADDED_USER, user.id, {"role": "Admin"}, kind)
        if kind == USER_ALREADY_SIGNED_UP:
            user = rng.choice([u for u in members if u.signed_up])
            properties = {"type": "organic", "email": user.email, "username": user.username}
            return self.send(account, SIGNED_UP, user.id, properties, kind)
        if kind == NOT_SIGNED_IN:
            user = rng.choice([u for u in members if not u.signed_in])
            return self.send(account, SIGNED_OUT, user.id, {"username": user.username}, kind)
        raise AssertionError(f"no violation of kind {kind!r}")
