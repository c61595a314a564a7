"""The Segment B2B SaaS spec as data: event names, aliases, semantic properties.

This module is the catalog the rest of the library reads. It knows nothing of
states or rules (see :mod:`lifecycle.policy`), only what the spec says an event
looks like. Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from enum import Enum
from types import MappingProxyType


class PropertyType(Enum):
    """The two property types the spec uses."""

    STRING = "String"
    DATE = "Date"


STRING = PropertyType.STRING
DATE = PropertyType.DATE


@dataclass(frozen=True, slots=True)
class EventSpec:
    """One lifecycle event: its canonical name, aliases and typed semantic properties.

    Properties the spec does not name are allowed whatever their type; only the
    ones listed here are type-checked (rule ``invalid_property``).
    """

    name: str
    properties: Mapping[str, PropertyType] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()
    description: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "properties", MappingProxyType(dict(self.properties)))


ACCOUNT_CREATED = "Account Created"
ACCOUNT_DELETED = "Account Deleted"
SIGNED_UP = "Signed Up"
SIGNED_IN = "Signed In"
SIGNED_OUT = "Signed Out"
INVITE_SENT = "Invite Sent"
ACCOUNT_ADDED_USER = "Account Added User"
ACCOUNT_REMOVED_USER = "Account Removed User"
TRIAL_STARTED = "Trial Started"
TRIAL_ENDED = "Trial Ended"

_TRIAL_PROPERTIES = {"trial_start_date": DATE, "trial_end_date": DATE, "trial_plan_name": STRING}

#: The ten events of the B2B SaaS spec, in the spec's order.
SPEC_EVENTS: tuple[EventSpec, ...] = (
    EventSpec(ACCOUNT_CREATED, {"account_name": STRING}, description="a new account is created"),
    EventSpec(ACCOUNT_DELETED, {"account_name": STRING}, description="an account is deleted"),
    EventSpec(
        SIGNED_UP,
        {
            "type": STRING,
            "first_name": STRING,
            "last_name": STRING,
            "email": STRING,
            "phone": STRING,
            "username": STRING,
            "title": STRING,
        },
        aliases=("User Signed Up",),
        description="a user signs up",
    ),
    EventSpec(
        SIGNED_IN, {"username": STRING}, aliases=("User Signed In",), description="a user signs in"
    ),
    EventSpec(
        SIGNED_OUT,
        {"username": STRING},
        aliases=("User Signed Out",),
        description="a user signs out",
    ),
    EventSpec(
        INVITE_SENT,
        {
            "invitee_email": STRING,
            "invitee_first_name": STRING,
            "invitee_last_name": STRING,
            "invitee_role": STRING,
        },
        description="a user invites another person",
    ),
    EventSpec(ACCOUNT_ADDED_USER, {"role": STRING}, description="a user is added to the account"),
    EventSpec(ACCOUNT_REMOVED_USER, {}, description="a user is removed from the account"),
    EventSpec(TRIAL_STARTED, _TRIAL_PROPERTIES, description="a trial starts"),
    EventSpec(TRIAL_ENDED, _TRIAL_PROPERTIES, description="a trial ends"),
)


# Rejection codes: a stable public interface. Never rename one; a new rule gets a new code.
MALFORMED_JSON = "malformed_json"
MISSING_USER = "missing_user"
MISSING_GROUP_ID = "missing_group_id"
INVALID_KEY = "invalid_key"
INVALID_TIMESTAMP = "invalid_timestamp"
INVALID_PROPERTY = "invalid_property"
MESSAGE_TOO_LARGE = "message_too_large"
ACCOUNT_UNKNOWN = "account_unknown"
ACCOUNT_EXISTS = "account_exists"
ACCOUNT_DELETED_CODE = "account_deleted"
TRIAL_ALREADY_STARTED = "trial_already_started"
TRIAL_NOT_ACTIVE = "trial_not_active"
TRIAL_DATES_INVERTED = "trial_dates_inverted"
TRIAL_MISMATCH = "trial_mismatch"
USER_UNKNOWN = "user_unknown"
USER_ALREADY_MEMBER = "user_already_member"
USER_NOT_MEMBER = "user_not_member"
USER_ALREADY_SIGNED_UP = "user_already_signed_up"
NOT_SIGNED_IN = "not_signed_in"

#: The 19 rejection codes of the default policy, in check order.
REJECTION_CODES: tuple[str, ...] = (
    MALFORMED_JSON,
    MISSING_USER,
    MISSING_GROUP_ID,
    INVALID_KEY,
    INVALID_TIMESTAMP,
    INVALID_PROPERTY,
    MESSAGE_TOO_LARGE,
    ACCOUNT_UNKNOWN,
    ACCOUNT_EXISTS,
    ACCOUNT_DELETED_CODE,
    TRIAL_ALREADY_STARTED,
    TRIAL_NOT_ACTIVE,
    TRIAL_DATES_INVERTED,
    TRIAL_MISMATCH,
    USER_UNKNOWN,
    USER_ALREADY_MEMBER,
    USER_NOT_MEMBER,
    USER_ALREADY_SIGNED_UP,
    NOT_SIGNED_IN,
)

#: Codes decided before any state is read (parsing and the envelope).
ENVELOPE_CODES: tuple[str, ...] = REJECTION_CODES[:7]

#: The most characters a key (the user, ``context.groupId``, ``messageId``) may have:
#: the event store indexes them, and an index needs a bound on every backend.
MAX_KEY_CHARS = 255


#: The instants an envelope ``timestamp`` may name: those every backend stores (MariaDB's
#: DATETIME holds the years 1000 to 9999) and that convert to UTC without overflowing.
EARLIEST_TIMESTAMP = datetime(1000, 1, 1, tzinfo=UTC)
LATEST_TIMESTAMP = datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)


def storable_instant(moment: datetime) -> bool:
    """True when an aware ``moment`` lies between the two instants above."""
    return EARLIEST_TIMESTAMP <= moment <= LATEST_TIMESTAMP


def parse_datetime(value: str) -> datetime | None:
    """Parse an ISO-8601 date-time into an aware datetime, or None if it is not one.

    A date-time needs a time part; a naive one is taken as UTC. A lower-case ``t``
    or ``z`` is read as its capital, as RFC 3339 allows. Used for the envelope
    ``timestamp``.
    """
    # Python's parser takes any character between the date and the time.
    if len(value) < 11 or value[(at := 10 if value[4] == "-" else 8)] not in "Tt ":
        return None
    # It also reads a fraction of the hour or minute (``04.5``, ``04:09.5``, which
    # ISO-8601 reads as 04:30 and 04:09:30) as a fraction of a second.
    early = value[at + 3 : at + 7]
    if "." in early or "," in early:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        if not ("t" in value or "z" in value):
            return None
        try:
            parsed = datetime.fromisoformat(value.upper())
        except ValueError:
            return None
    if not _iso_tail(value):
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _iso_tail(value: str) -> bool:
    """Whether the end of a date-time ``fromisoformat`` took is ISO-8601 in shape too.

    Python's parser also takes a space before the offset, a ``.`` with no digits
    after it and an offset with seconds (``...47.Z``, ``...47 +01:00:30``): none of
    them is ISO-8601. Looked at by position, on every message: a regular expression
    cost three times the parse.
    """
    last = value[-1]
    if last == "Z" or last == "z":
        return value[-2] in _DIGITS
    # The offset starts at its sign; what comes before it is the time's last digit.
    sign = max(value.rfind("+"), value.rfind("-", 11))
    if sign < 0:
        return last in _DIGITS
    if value[sign - 1] not in _DIGITS or len(value) - sign not in (3, 5, 6):
        return False
    # An offset's minutes run 00 to 59: Python carries ``+05:99`` into ``+06:39``.
    return len(value) - sign == 3 or value[-2] in "012345"


_DIGITS = frozenset("0123456789")


def date_instant(value: str) -> tuple[datetime, Decimal] | None:
    """A Date property as an instant to compare, to the last digit of its fraction.

    A ``datetime`` keeps microseconds and Python's parser drops the digits after
    them; trial dates 100 ns apart, or one written to the nanosecond by another
    system, compared equal. The digits dropped come second in the key.
    """
    parsed = parse_date(value)
    if parsed is None:
        return None
    beyond = past_microseconds(value)
    return parsed, Decimal(f"0.{beyond}") if beyond else _NOTHING


def past_microseconds(value: str) -> str:
    """The digits of ``value``'s fraction of a second that a ``datetime`` drops (those
    after the sixth), without trailing zeros: equal instants written to other lengths
    give the same."""
    fraction = _FRACTION.search(value)
    return fraction.group(1)[6:].rstrip("0") if fraction is not None else ""


_FRACTION = re.compile(r"[.,](\d+)")
_NOTHING = Decimal(0)


def parse_date(value: str) -> datetime | None:
    """Parse a spec Date property: an ISO-8601 date-time, or a date meaning midnight UTC.

    A date alone is extended (``2018-08-28``, ``2018-W35-2``) or basic
    (``20180828``, ``2018W352``).
    """
    if len(value) == 10 or (len(value) == 8 and value[4:5] != "-"):
        # Python reads "2018-W35" as a date too (day 1 of that week); ISO-8601 does not.
        try:
            day = date.fromisoformat(value)
        except ValueError:
            return None
        return datetime(day.year, day.month, day.day, tzinfo=UTC)
    return parse_datetime(value)
