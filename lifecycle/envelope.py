"""From a decoded Segment message to a typed lifecycle :class:`Event`, or the reason why not.

Steps 2 and 3 of the check order live here: is the message a lifecycle event at
all (else it is *ignored*), and is its envelope sound (``missing_user``,
``missing_group_id``, ``invalid_key``, ``invalid_timestamp``, ``invalid_property``,
``message_too_large``).
Nothing here reads state. Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from lifecycle._frozen import fast_init
from lifecycle.messages import kind_of
from lifecycle.spec import (
    DATE,
    INVALID_KEY,
    INVALID_PROPERTY,
    INVALID_TIMESTAMP,
    MAX_KEY_CHARS,
    MESSAGE_TOO_LARGE,
    MISSING_GROUP_ID,
    MISSING_USER,
    EventSpec,
    PropertyType,
    parse_date,
    parse_datetime,
    storable_instant,
)
from lifecycle.wire import MAX_MESSAGE_BYTES, MAX_MESSAGE_ID_CHARS, oversize


@fast_init
@dataclass(frozen=True, slots=True)
class Event:
    """A lifecycle event whose envelope passed every check.

    ``name`` is the canonical spec name (``User Signed In`` becomes
    ``Signed In``); ``sent_name`` is the name as it was sent. ``message`` is the
    original decoded message, kept so that what is stored and forwarded is what
    was sent; treat it as read-only. :attr:`occurred` is ``timestamp`` parsed.
    """

    name: str
    sent_name: str
    account: str
    user: str
    message_id: str | None
    timestamp: str | None
    properties: Mapping[str, Any]
    message: Mapping[str, Any]
    #: ``timestamp`` as the envelope parsed it, so that storing the event does not parse
    #: it again; None until asked for where the event was built otherwise (a replay).
    _occurred: datetime | None = field(default=None, compare=False, repr=False)

    @property
    def occurred(self) -> datetime | None:
        """``timestamp`` as an aware datetime; None when the event carried none.

        The same for an event judged live and for one rebuilt by a replay, which
        parses it only when an effect asks: a replay of events nothing reads it of
        does not pay for it.
        """
        if self._occurred is None and self.timestamp is not None:
            object.__setattr__(self, "_occurred", parse_datetime(self.timestamp))
        return self._occurred


@dataclass(frozen=True, slots=True)
class EnvelopeError:
    """Why a lifecycle message failed an envelope check: a code, a field and a reason."""

    code: str
    field: str
    reason: str


#: Sentinel returned for messages that are not lifecycle events.
IGNORED = None


def catalog_index(events: tuple[EventSpec, ...]) -> dict[str, EventSpec]:
    """Map every canonical name and alias to its :class:`EventSpec`."""
    index: dict[str, EventSpec] = {}
    for spec in events:
        for name in (spec.name, *spec.aliases):
            index[name] = spec
    return index


def event_name(message: Mapping[str, Any]) -> str | None:
    """The ``event`` of a track call, or None when the message is not a track call."""
    kind = message.get("type")
    name = message.get("event")
    if kind == "track" or (kind is None and name is not None):
        return name if isinstance(name, str) else None
    return None


def message_id_of(message: Mapping[str, Any]) -> str | None:
    """The de-duplication key: a non-empty string ``messageId``, else None."""
    mid = message.get("messageId")
    return mid if isinstance(mid, str) and mid else None


def group_id_of(message: Mapping[str, Any]) -> str | None:
    """``context.groupId`` when it is a non-empty string, else None."""
    context = message.get("context")
    if isinstance(context, dict):
        gid = context.get("groupId")
        if isinstance(gid, str) and gid:
            return gid
    return None


def user_of(message: Mapping[str, Any]) -> str | None:
    """``userId`` when it is a non-empty string, else ``anonymousId`` likewise, else None."""
    uid = message.get("userId")
    if isinstance(uid, str) and uid:
        return uid
    aid = message.get("anonymousId")
    if isinstance(aid, str) and aid:
        return aid
    return None


def parse_event(
    message: Mapping[str, Any], catalog: Mapping[str, EventSpec]
) -> Event | EnvelopeError | None:
    """Classify and validate one decoded message.

    Returns None when the message is not a lifecycle event (it is ignored), an
    :class:`EnvelopeError` for the first failed envelope check, else the
    :class:`Event`.
    """
    sent = event_name(message)
    if sent is None:
        return IGNORED
    spec = catalog.get(sent)
    if spec is None:
        return IGNORED
    user = user_of(message)
    account = group_id_of(message)
    if user is None:
        where = f"{sent} for {_shown(account)}" if account is not None else sent
        return EnvelopeError(
            MISSING_USER, "userId", f"{where}: neither userId nor anonymousId is a non-empty string"
        )
    if account is None:
        return EnvelopeError(
            MISSING_GROUP_ID,
            "context.groupId",
            f"{sent} by {_shown(user)}: context.groupId must be a non-empty string",
        )
    message_id = message_id_of(message)
    storable = is_storable_key(user) and is_storable_key(account)
    if (
        not (storable and (message_id is None or _is_sendable_id(message_id)))
        and (bad := _invalid_key(message, user, account, message_id)) is not None
    ):
        field, why = bad
        return EnvelopeError(
            INVALID_KEY, field, f"{sent} for {_shown(account)} by {_shown(user)}: {field} {why}"
        )
    timestamp = message.get("timestamp")
    occurred = None
    if timestamp is not None and (
        not isinstance(timestamp, str) or (occurred := parse_datetime(timestamp)) is None
    ):
        return EnvelopeError(
            INVALID_TIMESTAMP,
            "timestamp",
            f"{sent} for {account} by {user}: timestamp {_value(timestamp)} is not an ISO-8601"
            " date-time",
        )
    if occurred is not None and not storable_instant(occurred):
        return EnvelopeError(
            INVALID_TIMESTAMP,
            "timestamp",
            f"{sent} for {account} by {user}: timestamp {timestamp!r} is outside the years "
            "1000 to 9999 (UTC)",
        )
    properties = message.get("properties")
    if properties is None:
        properties = {}
    elif not isinstance(properties, dict):
        return EnvelopeError(
            INVALID_PROPERTY,
            "properties",
            f"{sent} for {account} by {user}: properties must be an object, "
            f"got {_value(properties)}",
        )
    for name, kind in spec.properties.items():
        value = properties.get(name)
        if value is not None and not _has_type(value, kind):
            return EnvelopeError(
                INVALID_PROPERTY,
                f"properties.{name}",
                f"{sent} for {account} by {user}: properties.{name} must be "
                f"{_describe(kind)}, got {_value(value)}",
            )
    if (size := oversize(message)) is not None:
        return EnvelopeError(
            MESSAGE_TOO_LARGE,
            "message",
            f"{sent} for {account} by {user}: the message is {size:,} bytes as Segment's client"
            f" library writes it, more than the {MAX_MESSAGE_BYTES:,} Segment takes",
        )
    return Event(
        spec.name,
        sent,
        account,
        user,
        message_id,
        timestamp,
        properties,
        message,
        occurred,
    )


def is_storable_key(key: str) -> bool:
    """True when the event store can index ``key``: see :func:`_invalid_key`.

    The store looks keys up before the messages are judged; one that would fail
    (``invalid_key``) must not reach a query, where PostgreSQL refuses a NUL.
    """
    return (
        len(key) <= MAX_KEY_CHARS
        and "\0" not in key
        # A lone surrogate (undecodable bytes of a command-line argument or a file name)
        # is no UTF-8: no stored row holds one, and no driver can send one.
        and (key.isascii() or _SURROGATE.search(key) is None)
    )


_SURROGATE = re.compile("[\ud800-\udfff]")


def _is_sendable_id(message_id: str) -> bool:
    """True when Segment keeps ``message_id`` whole and the store can index it."""
    return len(message_id) <= MAX_MESSAGE_ID_CHARS and "\0" not in message_id


def _invalid_key(
    message: Mapping[str, Any], user: str, account: str, message_id: str | None
) -> tuple[str, str] | None:
    """The field of the first key the event store cannot index, and why; or None.

    A key may have at most :data:`MAX_KEY_CHARS` characters and no NUL character
    (PostgreSQL's text cannot hold one). A ``messageId`` may have at most the
    :data:`MAX_MESSAGE_ID_CHARS` Segment keeps: past them it would take the event
    under another id, and de-duplication on it would no longer hold.
    """
    user_field = "userId" if message.get("userId") == user else "anonymousId"
    keys = ((user_field, user), ("context.groupId", account), ("messageId", message_id))
    for name, key in keys:
        if key is None:
            continue
        if name == "messageId" and len(key) > MAX_MESSAGE_ID_CHARS:
            return name, (
                f"is {len(key)} characters, more than the {MAX_MESSAGE_ID_CHARS} Segment keeps"
                " of a messageId"
            )
        if len(key) > MAX_KEY_CHARS:
            return name, f"is {len(key)} characters, more than the {MAX_KEY_CHARS} a key may have"
        if "\0" in key:
            return name, "contains a NUL character (U+0000), which a key may not"
    return None


def _shown(key: str) -> str:
    """A key as a reason shows it: NUL written out, and a long one cut to 40 characters."""
    key = key.replace("\0", "\\u0000")
    return key if len(key) <= 40 else key[:40] + "…"


def _value(value: object) -> str:
    """A value a reason quotes, in JSON's words: a string quoted (cut to 40 characters), a
    number, ``true``, ``false`` or ``null`` as JSON writes them, anything else by its
    kind. Python's names (``int``, ``True``) and a 100 KB string quoted whole had made
    reasons that were wrong or unreadable."""
    if isinstance(value, str):
        return repr(_shown(value))
    if value is None or isinstance(value, bool):
        return "null" if value is None else str(value).lower()
    if isinstance(value, (int, float)):
        # A huge int from Python has no decimal text at all past 4,300 digits.
        text = repr(value) if not isinstance(value, int) or abs(value) < 10**40 else ""
        return text if 0 < len(text) <= 40 else "a number"
    return kind_of(value)


def _has_type(value: object, kind: PropertyType) -> bool:
    if not isinstance(value, str):
        return False
    return kind is not DATE or parse_date(value) is not None


def _describe(kind: PropertyType) -> str:
    return "an ISO-8601 date string" if kind is DATE else "a string"
