"""From a decoded Segment message to a typed lifecycle :class:`Event`, or the reason why not.

Steps 2 and 3 of the check order live here: is the message a lifecycle event at
all (else it is *ignored*), and is its envelope sound (``missing_user``,
``missing_group_id``, ``key_too_long``, ``invalid_timestamp``, ``invalid_property``).
Nothing here reads state. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from lifecycle._frozen import fast_init
from lifecycle.spec import (
    DATE,
    EARLIEST_TIMESTAMP,
    INVALID_PROPERTY,
    INVALID_TIMESTAMP,
    KEY_TOO_LONG,
    LATEST_TIMESTAMP,
    MAX_KEY_CHARS,
    MISSING_GROUP_ID,
    MISSING_USER,
    EventSpec,
    PropertyType,
    parse_date,
    parse_datetime,
)


@fast_init
@dataclass(frozen=True, slots=True)
class Event:
    """A lifecycle event whose envelope passed every check.

    ``name`` is the canonical spec name (``User Signed In`` becomes
    ``Signed In``); ``sent_name`` is the name as it was sent. ``message`` is the
    original decoded message, kept so that what is stored and forwarded is what
    was sent; treat it as read-only. ``occurred`` is ``timestamp`` as the
    envelope parsed it (aware), so that storing the event does not parse it
    again; None when there is no timestamp or the event was built elsewhere. It is
    derived from ``timestamp``, so it takes no part in equality.
    """

    name: str
    sent_name: str
    account: str
    user: str
    message_id: str | None
    timestamp: str | None
    properties: Mapping[str, Any]
    message: Mapping[str, Any]
    occurred: datetime | None = field(default=None, compare=False, repr=False)


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
        where = f"{sent} for {account}" if account is not None else sent
        return EnvelopeError(
            MISSING_USER, "userId", f"{where}: neither userId nor anonymousId is a non-empty string"
        )
    if account is None:
        return EnvelopeError(
            MISSING_GROUP_ID,
            "context.groupId",
            f"{sent} by {user}: context.groupId must be a non-empty string",
        )
    message_id = message_id_of(message)
    if (too_long := _too_long_key(message, user, account, message_id)) is not None:
        return EnvelopeError(
            KEY_TOO_LONG,
            too_long,
            f"{sent} for {_clipped(account)} by {_clipped(user)}: {too_long} is "
            f"{len(_key_value(too_long, user, account, message_id))} characters, "
            f"more than the {MAX_KEY_CHARS} a key may have",
        )
    timestamp = message.get("timestamp")
    occurred = None
    if timestamp is not None and (
        not isinstance(timestamp, str) or (occurred := parse_datetime(timestamp)) is None
    ):
        return EnvelopeError(
            INVALID_TIMESTAMP,
            "timestamp",
            f"{sent} for {account} by {user}: timestamp {timestamp!r} is not an ISO-8601 date-time",
        )
    if occurred is not None and not EARLIEST_TIMESTAMP <= occurred <= LATEST_TIMESTAMP:
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
            f"got {type(properties).__name__}",
        )
    for name, kind in spec.properties.items():
        value = properties.get(name)
        if value is not None and not _has_type(value, kind):
            return EnvelopeError(
                INVALID_PROPERTY,
                f"properties.{name}",
                f"{sent} for {account} by {user}: properties.{name} must be "
                f"{_describe(kind)}, got {value!r}",
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


def _too_long_key(
    message: Mapping[str, Any], user: str, account: str, message_id: str | None
) -> str | None:
    """The field of the first key longer than :data:`MAX_KEY_CHARS`, or None."""
    if len(user) > MAX_KEY_CHARS:
        return "userId" if message.get("userId") == user else "anonymousId"
    if len(account) > MAX_KEY_CHARS:
        return "context.groupId"
    if message_id is not None and len(message_id) > MAX_KEY_CHARS:
        return "messageId"
    return None


def _key_value(field: str, user: str, account: str, message_id: str | None) -> str:
    if field == "context.groupId":
        return account
    return (message_id or "") if field == "messageId" else user


def _clipped(key: str) -> str:
    """A key short enough for a reason: its first 40 characters, then an ellipsis."""
    return key if len(key) <= 40 else key[:40] + "…"


def _has_type(value: object, kind: PropertyType) -> bool:
    if not isinstance(value, str):
        return False
    return kind is not DATE or parse_date(value) is not None


def _describe(kind: PropertyType) -> str:
    return "an ISO-8601 date string" if kind is DATE else "a string"
