"""Example-based tests of the default rules: every code, the check order, the edge cases."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from lifecycle import REJECTION_CODES, AccountState, Gate, Lifecycle, TrialState, UserState, Verdict
from lifecycle.spec import SPEC_EVENTS, STRING, parse_datetime
from lifecycle.wire import MAX_MESSAGE_BYTES, as_sent, sent_size

ACCT = "acct_1"
USER = "u1"


def track(
    event: str,
    user: str | None = USER,
    account: str | None = ACCT,
    *,
    mid: str | None = None,
    **properties: Any,
) -> dict[str, Any]:
    """A track call of ``event`` by ``user`` on ``account`` with the given properties."""
    message: dict[str, Any] = {"type": "track", "event": event}
    if user is not None:
        message["userId"] = user
    if account is not None:
        message["context"] = {"groupId": account}
    if mid is not None:
        message["messageId"] = mid
    if properties:
        message["properties"] = properties
    return message


def gate_after(*messages: dict[str, Any]) -> Gate:
    """A default gate that has accepted every one of ``messages`` (or the test fails)."""
    gate = Gate()
    for message in messages:
        verdict = gate.submit(message)
        assert verdict.verdict == "accepted", verdict
    return gate


def state_of(gate: Gate, account: str = ACCT) -> AccountState:
    """The state of ``account`` in ``gate``, which must have accepted an event of it."""
    state = gate.state(account)
    assert state is not None, f"no accepted event for {account}"
    return state


CREATED = (track("Account Created"),)
MEMBER = CREATED + (track("Signed Up"),)
SIGNED_IN = MEMBER + (track("Signed In"),)
TRIAL = MEMBER + (
    track(
        "Trial Started",
        trial_plan_name="Business",
        trial_start_date="2018-08-28",
        trial_end_date="2018-09-28",
    ),
)
ACTIVE = TRIAL + (track("Trial Ended"),)
DELETED = CREATED + (track("Account Deleted"),)

# One case per code: the history the gate has accepted, the message, the exact reason.
CODE_CASES: list[tuple[str, tuple[dict[str, Any], ...], dict[str, Any], str]] = [
    (
        "missing_user",
        CREATED,
        track("Signed In", user=None),
        "Signed In for acct_1: neither userId nor anonymousId is a non-empty string",
    ),
    (
        "missing_group_id",
        CREATED,
        track("Signed In", account=None),
        "Signed In by u1: context.groupId must be a non-empty string",
    ),
    (
        "invalid_key",
        CREATED,
        track("Signed In", account="acct_" + "9" * 251),
        "Signed In for acct_99999999999999999999999999999999999… by u1: context.groupId is 256 "
        "characters, more than the 255 a key may have",
    ),
    (
        "invalid_timestamp",
        MEMBER,
        {**track("Signed In"), "timestamp": "yesterday"},
        "Signed In for acct_1 by u1: timestamp 'yesterday' is not an ISO-8601 date-time",
    ),
    (
        "invalid_property",
        CREATED,
        track("Trial Started", trial_end_date=42),
        "Trial Started for acct_1 by u1: properties.trial_end_date must be an ISO-8601 date "
        "string, got 42",
    ),
    (
        "message_too_large",
        MEMBER,
        track("Signed In", note="é" * 5_500),
        "Signed In for acct_1 by u1: the message is 33,214 bytes as Segment's client library "
        "writes it, more than the 32,768 Segment takes",
    ),
    (
        "account_unknown",
        (),
        track("Signed In"),
        "Signed In for acct_1 by u1: the account was never created",
    ),
    (
        "account_exists",
        TRIAL,
        track("Account Created"),
        "Account Created for acct_1 by u1: the account already exists (account is trial)",
    ),
    (
        "account_deleted",
        DELETED,
        track("Signed In"),
        "Signed In for acct_1 by u1: the account was deleted",
    ),
    (
        "trial_already_started",
        ACTIVE,
        track("Trial Started"),
        "Trial Started for acct_1 by u1: an account gets one trial and it was already started "
        "(account is active)",
    ),
    (
        "trial_not_active",
        CREATED,
        track("Trial Ended"),
        "Trial Ended for acct_1 by u1: no trial is running (account is created)",
    ),
    (
        "trial_dates_inverted",
        CREATED,
        track("Trial Started", trial_start_date="2018-09-01", trial_end_date="2018-08-01"),
        "Trial Started for acct_1 by u1: trial_end_date 2018-08-01 is before trial_start_date "
        "2018-09-01",
    ),
    (
        "trial_mismatch",
        TRIAL,
        track("Trial Ended", trial_plan_name="Team"),
        "Trial Ended for acct_1 by u1: trial_plan_name 'Team' differs from the started trial's "
        "'Business'",
    ),
    (
        "user_unknown",
        MEMBER,
        track("Signed In", user="u7"),
        "Signed In for acct_1 by u7: user u7 is unknown (expected Signed Up or Account Added "
        "User first)",
    ),
    (
        "user_already_member",
        CREATED + (track("Account Added User", role="Owner"),),
        track("Account Added User", role="Admin"),
        "Account Added User for acct_1 by u1: user u1 is already a member (role 'Owner')",
    ),
    (
        "user_not_member",
        MEMBER,
        track("Account Removed User", user="u7"),
        "Account Removed User for acct_1 by u7: user u7 is not a member (expected Signed Up or "
        "Account Added User first)",
    ),
    (
        "user_already_signed_up",
        MEMBER,
        track("Signed Up"),
        "Signed Up for acct_1 by u1: user u1 already signed up",
    ),
    (
        "not_signed_in",
        MEMBER,
        track("Signed Out"),
        "Signed Out for acct_1 by u1: user u1 is not signed in (expected Signed In first)",
    ),
]


def test_every_code_has_a_case() -> None:
    """The per-code cases below, plus malformed_json, cover exactly the 19 public codes."""
    covered = ["malformed_json"] + [code for code, *_ in CODE_CASES]
    assert sorted(covered) == sorted(REJECTION_CODES)
    assert len(REJECTION_CODES) == 19


def test_malformed_json() -> None:
    """A line that is not JSON is rejected as malformed_json with a reason saying why."""
    (verdict,) = Gate().submit_line(b"{not json")
    assert (verdict.verdict, verdict.code, verdict.field) == ("rejected", "malformed_json", "line")
    assert verdict.reason is not None
    assert verdict.reason.startswith("not valid JSON (")


@pytest.mark.parametrize("ending", [b"", b"\n", b"\r\n"])
def test_a_line_cut_short_says_so_where_the_user_can_see_it(ending: bytes) -> None:
    """Parsed with its line ending, a string cut short was "unexpected control character in
    string", and an object cut short ended on "line 2 column 1", a line no one wrote."""
    for cut, reason in [
        (b'{"event":"Signed', "unexpected end of data: line 1 column 17 (char 16)"),
        (b'{"event":1', "unexpected end of data: line 1 column 11 (char 10)"),
    ]:
        (verdict,) = Gate().submit_line(cut + ending)
        assert verdict.reason == f"not valid JSON ({reason})"


def test_malformed_json_for_a_non_object() -> None:
    """A JSON value that is not an object is malformed_json, naming what it was instead."""
    assert [v.reason for v in Gate().submit_line(b'["Signed In"]')] == [
        "not a JSON object (got an array)"
    ]
    assert [v.code for v in Gate().submit_line(b'"Signed In"')] == ["malformed_json"]


@pytest.mark.parametrize(
    ("line", "kind"),
    [(b"true", "a boolean"), (b"null", "null"), (b"1.5", "a number"), (b'"x"', "a string")],
)
def test_malformed_json_names_the_kind_of_every_json_value(line: bytes, kind: str) -> None:
    """The reason names the JSON kind the line holds instead of an object, in JSON's words."""
    assert [v.reason for v in Gate().submit_line(line)] == [f"not a JSON object (got {kind})"]


@pytest.mark.parametrize(
    ("code", "history", "message", "reason"), CODE_CASES, ids=[c[0] for c in CODE_CASES]
)
def test_rejection_code(
    code: str, history: tuple[dict[str, Any], ...], message: dict[str, Any], reason: str
) -> None:
    """Each rule rejects with its code and a reason naming account, user and expectation."""
    gate = gate_after(*history)
    before = gate.state(ACCT)
    verdict = gate.submit(message)
    assert (verdict.verdict, verdict.code, verdict.reason) == ("rejected", code, reason)
    assert gate.state(ACCT) == before


# -- check order --------------------------------------------------------------------------


def test_missing_user_wins_over_missing_group_id() -> None:
    """With neither a user nor an account, the code is missing_user."""
    assert Gate().submit({"event": "Signed In"}).code == "missing_user"


def test_missing_group_id_wins_over_invalid_timestamp() -> None:
    """With no account and a bad timestamp, the code is missing_group_id."""
    message = {**track("Signed In", account=None), "timestamp": "soon"}
    assert Gate().submit(message).code == "missing_group_id"


def test_missing_group_id_wins_over_invalid_key() -> None:
    """A user key too long and no account: the code is missing_group_id."""
    assert Gate().submit(track("Signed In", user="u" * 300, account=None)).code == (
        "missing_group_id"
    )


def test_invalid_key_wins_over_invalid_timestamp() -> None:
    """A messageId too long and a bad timestamp: the code is invalid_key."""
    message = {**track("Signed In", mid="m" * 256), "timestamp": "soon"}
    verdict = Gate().submit(message)
    assert (verdict.code, verdict.field) == ("invalid_key", "messageId")


def _at_most_255(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _at_most_255(v) for k, v in value.items()}
    return value[:255] if isinstance(value, str) else value


@pytest.mark.parametrize(
    ("keys", "field"),
    [
        ({"userId": "ü" * 256}, "userId"),
        ({"userId": "", "anonymousId": "a" * 256}, "anonymousId"),
        ({"userId": "u1", "anonymousId": "a" * 256}, None),  # the anonymousId is not the key
        ({"context": {"groupId": "acct_" + "1" * 251}}, "context.groupId"),
        ({"messageId": 7 * 10**300}, None),  # not a string: no messageId at all
    ],
)
def test_invalid_key_checks_the_length_of_the_keys_lifecycle_uses(
    keys: dict[str, Any], field: str | None
) -> None:
    """Each key (the user, the account) may have 255 characters, not 256."""
    gate = gate_after(track("Account Created"), track("Signed Up"))
    verdict = gate.submit({**track("Signed In"), **keys})
    if field is None:
        assert verdict.accepted, verdict
    else:
        assert (verdict.code, verdict.field) == ("invalid_key", field)
        assert f"{field} is 256 characters, more than the 255 a key may have" in str(verdict.reason)
    longest = {k: _at_most_255(v) for k, v in keys.items()}
    # 255 characters pass this check (the verdict is then the account's or user's rules').
    assert gate.submit({**track("Signed In"), **longest}).code != "invalid_key"


@pytest.mark.parametrize("length", [101, 256, 1000])
def test_a_message_id_may_have_the_100_characters_segment_keeps(length: int) -> None:
    """A messageId may have 100 characters, not 101: Segment keeps no more, and would take
    the event under another id. The relay had parked such an event after the gate accepted
    it, and sent the account's next events without it."""
    gate = gate_after(track("Account Created"), track("Signed Up"))
    verdict = gate.submit({**track("Signed In"), "messageId": "m" * length})
    assert (verdict.code, verdict.field) == ("invalid_key", "messageId")
    assert verdict.reason == (
        f"Signed In for acct_1 by u1: messageId is {length} characters, more than the 100"
        " Segment keeps of a messageId"
    )
    assert gate.submit({**track("Signed In"), "messageId": "m" * 100}).accepted


@pytest.mark.parametrize(
    ("keys", "field", "shown"),
    [
        ({"userId": "u\0"}, "userId", "acct_1 by u\\u0000"),
        ({"userId": None, "anonymousId": "\0"}, "anonymousId", "acct_1 by \\u0000"),
        ({"context": {"groupId": "acct\x001"}}, "context.groupId", "acct\\u00001 by u1"),
        ({"messageId": "m\0"}, "messageId", "acct_1 by u1"),
    ],
)
def test_invalid_key_refuses_a_nul_character(keys: dict[str, Any], field: str, shown: str) -> None:
    """PostgreSQL's text holds no NUL: a key with one is refused on every backend alike,
    and the reason writes the NUL out."""
    gate = gate_after(track("Account Created"))
    verdict = gate.submit({**track("Signed Up"), **keys})
    assert (verdict.code, verdict.field, verdict.reason) == (
        "invalid_key",
        field,
        f"Signed Up for {shown}: {field} contains a NUL character (U+0000), which a key may not",
    )


def test_invalid_timestamp_wins_over_invalid_property() -> None:
    """With a bad timestamp and a badly typed property, the code is invalid_timestamp."""
    message = {**track("Signed In", username=5), "timestamp": "soon"}
    assert Gate().submit(message).code == "invalid_timestamp"


def test_envelope_errors_come_before_duplicate() -> None:
    """A message reusing an accepted messageId but with a broken envelope gets the envelope code."""
    gate = gate_after(track("Account Created", mid="m1"))
    assert gate.submit(track("Account Created", account=None, mid="m1")).code == (
        "missing_group_id"
    )
    assert gate.submit(track("Account Created", mid="m1")).verdict == "duplicate"


def test_duplicate_comes_before_account_checks() -> None:
    """An accepted messageId resent for an unknown account is a duplicate, not account_unknown."""
    gate = gate_after(track("Account Created", mid="m1"))
    verdict = gate.submit(track("Signed In", account="acct_2", mid="m1"))
    assert (verdict.verdict, verdict.code, verdict.account) == ("duplicate", None, "acct_2")
    assert gate.state("acct_2") is None


def test_account_checks_come_before_event_rules() -> None:
    """An event on an unknown or deleted account gets the account code, whatever else is wrong."""
    inverted = {"trial_start_date": "2018-09-01", "trial_end_date": "2018-08-01"}
    assert Gate().submit(track("Trial Started", **inverted)).code == "account_unknown"
    assert gate_after(*DELETED).submit(track("Signed Out", user="u7")).code == "account_deleted"


def test_account_created_on_a_deleted_account() -> None:
    """Re-creating a deleted account is account_deleted, not account_exists."""
    verdict = gate_after(*DELETED).submit(track("Account Created"))
    assert (verdict.code, verdict.reason) == (
        "account_deleted",
        "Account Created for acct_1 by u1: the account was deleted",
    )


def test_trial_ended_checks_trial_active_before_dates() -> None:
    """Trial Ended with inverted dates outside a trial is trial_not_active."""
    message = track("Trial Ended", trial_start_date="2018-09-01", trial_end_date="2018-08-01")
    assert gate_after(*CREATED).submit(message).code == "trial_not_active"


def test_trial_ended_checks_dates_before_mismatch() -> None:
    """Trial Ended with inverted dates and another plan is trial_dates_inverted."""
    message = track(
        "Trial Ended",
        trial_plan_name="Team",
        trial_start_date="2018-09-01",
        trial_end_date="2018-08-01",
    )
    assert gate_after(*TRIAL).submit(message).code == "trial_dates_inverted"


def test_trial_ended_start_date_mismatch() -> None:
    """Trial Ended naming another start instant than Trial Started is trial_mismatch."""
    verdict = gate_after(*TRIAL).submit(track("Trial Ended", trial_start_date="2018-08-29"))
    assert (verdict.code, verdict.reason) == (
        "trial_mismatch",
        "Trial Ended for acct_1 by u1: trial_start_date 2018-08-29 differs from the started "
        "trial's 2018-08-28",
    )


def test_signed_out_checks_user_known_before_signed_in() -> None:
    """Signed Out by a user the account does not know is user_unknown, not not_signed_in."""
    assert gate_after(*CREATED).submit(track("Signed Out")).code == "user_unknown"


# -- ignored messages ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "message",
    [
        {"type": "identify", "userId": USER, "traits": {"email": "a@example.com"}},
        {"type": "group", "userId": USER, "groupId": ACCT},
        {"type": "page", "userId": USER, "name": "Pricing"},
        {"type": "identify", "event": "Account Created", "userId": USER},
        track("Order Completed"),
        track("signed in"),
        track("ACCOUNT CREATED"),
        {"type": "track", "userId": USER, "context": {"groupId": ACCT}},
        {"event": 42, "userId": USER, "context": {"groupId": ACCT}},
    ],
    ids=[
        "identify",
        "group",
        "page",
        "identify-with-event",
        "other-track",
        "lowercase",
        "uppercase",
        "track-without-event",
        "non-string-event",
    ],
)
def test_non_lifecycle_messages_are_ignored(message: dict[str, Any]) -> None:
    """Messages that are not lifecycle track calls are ignored and change nothing."""
    gate = Gate()
    verdict = gate.submit(message)
    assert (verdict.verdict, verdict.code, verdict.reason) == ("ignored", None, None)
    assert len(gate) == 0


def test_ignored_messages_skip_validation() -> None:
    """An ignored message is not validated: no user and no account is still just ignored."""
    verdict = Gate().submit({"type": "track", "event": "Order Completed", "messageId": "m9"})
    assert verdict == Verdict("ignored", message_id="m9", event_name="Order Completed")


@pytest.mark.parametrize(
    ("event", "shown"),
    [("Order Completed", "Order Completed"), (42, None)],
    ids=["other-event", "non-string-event"],
)
def test_an_ignored_verdict_says_what_the_message_said(event: object, shown: str | None) -> None:
    """An ignored verdict keeps the messageId, the groupId and the event name as sent, so that
    a verdict lines up with its message; an event that is not a string is no name at all."""
    message = {"type": "track", "event": event, "userId": USER, "context": {"groupId": ACCT}}
    verdict = Gate().submit({**message, "messageId": "m9"})
    assert verdict == Verdict("ignored", message_id="m9", event_name=shown, account=ACCT)
    assert verdict.to_dict()["event"] == shown


def test_absent_type_with_event_is_a_track_call() -> None:
    """A message with an event and no type is a track call and is judged."""
    message = track("Account Created")
    del message["type"]
    assert Gate().submit(message).verdict == "accepted"


def test_null_type_with_event_is_a_track_call() -> None:
    """A null type counts as absent: the message is judged as a track call."""
    message = {**track("Signed In"), "type": None}
    assert Gate().submit(message).code == "account_unknown"


# -- aliases, absent values, property types -----------------------------------------------


@pytest.mark.parametrize(
    ("alias", "history"),
    [
        ("User Signed Up", CREATED),
        ("User Signed In", MEMBER),
        ("User Signed Out", SIGNED_IN),
    ],
)
def test_object_action_aliases(alias: str, history: tuple[dict[str, Any], ...]) -> None:
    """An Object-Action alias is judged as its short name and keeps the name as sent."""
    gate = gate_after(*history)
    verdict = gate.submit(track(alias))
    assert (verdict.verdict, verdict.event_name) == ("accepted", alias)
    assert verdict.event is not None
    assert verdict.event.name == alias.removeprefix("User ")


def test_a_duplicate_of_an_alias_keeps_the_name_as_sent() -> None:
    """A duplicate names its event as it was sent, like an acceptance or a rejection does."""
    gate = gate_after(*MEMBER, track("User Signed In", mid="m1"))
    verdict = gate.submit(track("User Signed In", mid="m1"))
    assert (verdict.verdict, verdict.event_name) == ("duplicate", "User Signed In")


def test_alias_and_short_name_share_state() -> None:
    """User Signed In signs the user in: a following Signed Out is accepted."""
    gate = gate_after(*MEMBER, track("User Signed In"))
    assert state_of(gate).user(USER).signed_in is True
    assert gate.submit(track("Signed Out")).verdict == "accepted"


def test_alias_rejections_use_the_sent_name() -> None:
    """A rejected alias names the event as it was sent in the reason."""
    verdict = gate_after(*CREATED).submit(track("User Signed Out"))
    assert verdict.reason == (
        "User Signed Out for acct_1 by u1: user u1 is unknown "
        "(expected Signed Up or Account Added User first)"
    )


def test_null_properties_and_timestamp_count_as_absent() -> None:
    """A null properties object, null property values and a null timestamp are all absent."""
    gate = gate_after(*CREATED)
    assert gate.submit({**track("Signed Up"), "properties": None, "timestamp": None}).accepted
    trial = track("Trial Started", trial_plan_name=None, trial_start_date=None)
    assert gate.submit(trial).accepted
    assert state_of(gate).trial == TrialState()


def test_anonymous_id_when_user_id_is_empty_or_null() -> None:
    """An empty or null userId falls back to anonymousId as the user key."""
    gate = gate_after(*CREATED)
    assert gate.submit({**track("Signed Up", user=""), "anonymousId": "anon_1"}).accepted
    verdict = gate.submit(
        {**track("Signed In", user=None), "userId": None, "anonymousId": "anon_1"}
    )
    assert verdict.accepted
    assert state_of(gate).user("anon_1") == UserState(signed_up=True, signed_in=True)


@pytest.mark.parametrize(
    "timestamp",
    [
        "2024-01-01T09:00:00Z",
        "2024-01-01T09:00:00.123+02:00",
        "2024-01-01T09:00:00",
        "2024-01-01T09:00:00.123456789Z",  # nanoseconds, as Go and Java clients send
        "2024-01-01t09:00:00.5z",  # RFC 3339 allows lower case
        "2024-01-01 09:00:00+02:00",  # and a space between date and time
        "2024-01-01T09:00:00,5+0200",  # a decimal comma, an offset without colon
        "20240101T090000Z",  # the basic format
        "2024-W01-1T09:00Z",  # a week date
    ],
)
def test_valid_timestamps(timestamp: str) -> None:
    """ISO-8601 date-times, with or without an offset, are valid timestamps."""
    gate = gate_after(*CREATED)
    verdict = gate.submit({**track("Signed Up"), "timestamp": timestamp})
    assert verdict.accepted
    assert verdict.event is not None and verdict.event.occurred is not None
    assert verdict.event.occurred.utcoffset() is not None


@pytest.mark.parametrize("timestamp", ["2024-01-01", "2024-13-01T00:00:00Z", "", 1704099600])
def test_invalid_timestamps(timestamp: object) -> None:
    """A date without a time, an impossible date, an empty string or a number is invalid."""
    verdict = gate_after(*CREATED).submit({**track("Signed Up"), "timestamp": timestamp})
    assert (verdict.code, verdict.field) == ("invalid_timestamp", "timestamp")


@pytest.mark.parametrize(
    "timestamp",
    [
        "2024-01-01x09:00:00Z",
        "2024-01-01\u00e909:00:00Z",
        "2024-01-01\x0009:00:00Z",
        "2024-01-01T09:00:00.Z",
        "2024-01-01T09:00:00 Z",
        "2024-01-01T09:00:00 +01:00",
        "2024-01-01T09:00:00+01:00:30",
        "2024-01-01T09:00:00+01:00:00.5",
    ],
)
def test_timestamps_only_python_would_parse(timestamp: str) -> None:
    """Shapes Python's ``fromisoformat`` takes and ISO-8601 does not are invalid_timestamp:
    another separator than ``T`` or a space, an empty fraction, a space before the
    offset, an offset with seconds."""
    verdict = gate_after(*CREATED).submit({**track("Signed Up"), "timestamp": timestamp})
    assert (verdict.code, verdict.field) == ("invalid_timestamp", "timestamp")


@pytest.mark.parametrize(
    "timestamp",
    [
        "2024-01-01T09:00:00+05:99",  # Python reads +06:39
        "2024-01-01T09:00:00+05:60",  # Python reads +06:00
        "2024-01-01T09:00:00-00:75",  # Python reads -01:15
        "20240101T090000+0099",  # Python reads +01:39
    ],
)
def test_timestamps_with_an_offset_of_sixty_minutes_or_more(timestamp: str) -> None:
    """An offset's minutes run 00 to 59 (ISO-8601, RFC 3339 `time-minute`): Python's
    ``fromisoformat`` carries 99 minutes into the hour and stores another instant."""
    verdict = gate_after(*CREATED).submit({**track("Signed Up"), "timestamp": timestamp})
    assert (verdict.code, verdict.field) == ("invalid_timestamp", "timestamp")


def test_date_property_with_an_offset_of_sixty_minutes_or_more() -> None:
    """A Date property's offset has minutes 00 to 59 too: ``+05:75`` is no date."""
    message = track("Trial Started", trial_start_date="2018-08-28T00:00:00+05:75")
    verdict = gate_after(*CREATED).submit(message)
    assert (verdict.code, verdict.field) == ("invalid_property", "properties.trial_start_date")


@pytest.mark.parametrize(
    "timestamp",
    [
        "0001-01-01T00:00:00+01:00",  # before year 1 in UTC: cannot even be converted
        "9999-12-31T23:59:59-05:00",  # after year 9999 in UTC
        "0999-12-31T23:59:59.999999Z",
        "1000-01-01T00:30:00+01:00",
    ],
)
def test_timestamps_outside_the_storable_years(timestamp: str) -> None:
    """An instant outside the years 1000 to 9999 (UTC) is invalid_timestamp, saying so."""
    verdict = gate_after(*CREATED).submit({**track("Signed Up"), "timestamp": timestamp})
    assert (verdict.code, verdict.field, verdict.reason) == (
        "invalid_timestamp",
        "timestamp",
        f"Signed Up for acct_1 by u1: timestamp {timestamp!r} is outside the years "
        "1000 to 9999 (UTC)",
    )


@pytest.mark.parametrize("timestamp", ["1000-01-01T00:00:00Z", "9999-12-31T23:59:59.999999Z"])
def test_timestamps_at_the_ends_of_the_storable_years(timestamp: str) -> None:
    assert gate_after(*CREATED).submit({**track("Signed Up"), "timestamp": timestamp}).accepted


def test_properties_must_be_an_object() -> None:
    """A properties value that is not an object is invalid_property."""
    verdict = gate_after(*CREATED).submit({**track("Signed Up"), "properties": ["x"]})
    assert (verdict.code, verdict.field, verdict.reason) == (
        "invalid_property",
        "properties",
        "Signed Up for acct_1 by u1: properties must be an object, got an array",
    )


@pytest.mark.parametrize(
    ("given", "shown"),
    [({"timestamp": True}, "timestamp true is not"),
     ({"timestamp": None, "properties": 5}, "properties must be an object, got 5"),
     ({"properties": "x" * 100_000}, "properties must be an object, got 'xxxxxxxx"),
     ({"properties": {"username": {"a": 1}}}, "username must be a string, got an object"),
     ({"properties": {"username": None}}, None),
     ({"properties": {"username": False}}, "properties.username must be a string, got false"),
     ({"properties": {"username": "é" * 5_000 + "x"}}, None),
     ({"timestamp": datetime(2024, 1, 1)}, "timestamp a datetime is not"),
     ({"properties": 10**5000}, "properties must be an object, got a number")],
)  # fmt: skip
def test_reasons_quote_values_in_json_words_and_briefly(
    given: dict[str, Any], shown: str | None
) -> None:
    """Reasons said `got int`, `timestamp True` (Python's names), and quoted a 100 KB value
    whole. They name JSON kinds and values, and cut a long string to 40 characters."""
    verdict = gate_after(*CREATED).submit({**track("Signed Up"), **given})
    if shown is None:
        assert verdict.accepted
        return
    assert verdict.reason is not None and shown in verdict.reason
    assert len(verdict.reason) < 200


def test_string_property_must_be_a_string() -> None:
    """A String property sent as a number is invalid_property naming that property."""
    verdict = gate_after(*CREATED).submit(track("Account Added User", role=1))
    assert (verdict.code, verdict.field) == ("invalid_property", "properties.role")


@pytest.mark.parametrize(
    "value",
    ["next week", "2018-08-28x00:00", "2018-240", "2018-08-28T00:00 Z", "2018-W35", "2018-08"],
)
def test_date_property_must_be_a_date(value: str) -> None:
    """A Date property that is not an ISO-8601 date is invalid_property."""
    verdict = gate_after(*CREATED).submit(track("Trial Started", trial_start_date=value))
    assert (verdict.code, verdict.field) == ("invalid_property", "properties.trial_start_date")


@pytest.mark.parametrize("value", ["2018-08-28", "20180828", "2018-W35-2", "2018W352"])
def test_date_property_dates_alone(value: str) -> None:
    """A date alone, extended or basic, calendar or week date, is midnight UTC of that day."""
    gate = gate_after(*CREATED)
    message = track("Trial Started", trial_start_date=value, trial_end_date="2018-08-27")
    assert gate.submit(message).code == "trial_dates_inverted"


def test_unknown_properties_of_any_type_are_allowed() -> None:
    """Properties the spec does not name are accepted whatever their type."""
    extras = {"seats": 5, "tags": ["a"], "meta": {"k": None}, "flag": True, "ratio": 0.5}
    assert gate_after(*CREATED).submit(track("Signed Up", **extras)).accepted


def test_date_only_is_midnight_utc() -> None:
    """A date-only trial_start_date equals the same day at midnight UTC (no trial_mismatch)."""
    gate = gate_after(*TRIAL)
    assert gate.submit(track("Trial Ended", trial_start_date="2018-08-28T00:00:00Z")).accepted


def test_start_dates_compare_as_instants() -> None:
    """A start date in another offset naming the same instant is not a mismatch."""
    gate = gate_after(*TRIAL)
    assert gate.submit(track("Trial Ended", trial_start_date="2018-08-28T02:00:00+02:00")).accepted


def test_date_only_end_before_start_instant() -> None:
    """A date-only end date is compared as midnight UTC against a start date-time."""
    message = track(
        "Trial Started", trial_start_date="2018-08-28T12:00:00Z", trial_end_date="2018-08-28"
    )
    assert gate_after(*CREATED).submit(message).code == "trial_dates_inverted"


def test_trial_ended_may_change_the_end_date() -> None:
    """Trial Ended with another trial_end_date is accepted and the state records the new date."""
    gate = gate_after(*TRIAL, track("Trial Ended", trial_end_date="2018-09-10"))
    state = state_of(gate)
    assert state.status == "active"
    assert state.trial is not None
    assert (state.trial.start_date, state.trial.end_date, state.trial.ended) == (
        "2018-08-28",
        "2018-09-10",
        True,
    )


# -- de-duplication -----------------------------------------------------------------------


def test_duplicate_of_an_accepted_message() -> None:
    """A message whose messageId was accepted is a duplicate and changes no state."""
    gate = gate_after(*CREATED, track("Signed Up", mid="m1"))
    before = gate.state(ACCT)
    verdict = gate.submit(track("Signed Up", mid="m1"))
    assert verdict == Verdict("duplicate", message_id="m1", event_name="Signed Up", account=ACCT)
    assert gate.state(ACCT) == before


def test_rejected_message_id_may_be_resent() -> None:
    """A messageId that was rejected is judged afresh when sent again, and accepted once legal."""
    gate = gate_after(*CREATED)
    assert gate.submit(track("Signed In", mid="m1")).code == "user_unknown"
    assert gate.submit(track("Signed Up")).accepted
    assert gate.submit(track("Signed In", mid="m1")).verdict == "accepted"
    assert gate.submit(track("Signed In", mid="m1")).verdict == "duplicate"


def test_message_without_id_is_never_a_duplicate() -> None:
    """Without a messageId there is no de-duplication: the same Signed In twice is accepted."""
    gate = gate_after(*MEMBER)
    assert [gate.submit(track("Signed In")).verdict for _ in range(2)] == ["accepted"] * 2


# -- users --------------------------------------------------------------------------------


def test_account_created_does_not_make_its_sender_known() -> None:
    """The user who created the account must still sign up before signing in."""
    assert gate_after(*CREATED).submit(track("Signed In")).code == "user_unknown"


def test_user_known_in_one_account_is_unknown_in_another() -> None:
    """Knowing a user in acct_1 does not make it known in acct_2."""
    gate = gate_after(*MEMBER, track("Account Created", account="acct_2"))
    verdict = gate.submit(track("Signed In", account="acct_2"))
    assert (verdict.code, verdict.account) == ("user_unknown", "acct_2")


def test_account_removed_user_clears_everything() -> None:
    """Account Removed User clears signed_up, role and signed_in: the user is unknown again."""
    gate = gate_after(
        *SIGNED_IN, track("Account Added User", role="Admin"), track("Account Removed User")
    )
    assert state_of(gate).user(USER) == UserState()
    assert gate.submit(track("Signed In")).code == "user_unknown"
    assert gate.submit(track("Signed Up")).accepted
    assert gate.submit(track("Account Added User")).accepted


def test_a_user_known_only_by_signing_up_can_be_removed() -> None:
    """Account Removed User needs a known user, not a member with a role: a user who only
    signed up is removed, and unknown again."""
    gate = gate_after(*SIGNED_IN, track("Account Removed User"))
    assert state_of(gate).user(USER) == UserState()
    assert gate.submit(track("Signed Out")).code == "user_unknown"


#: The String properties of each event, as Segment's spec lists them: written out here, so
#: that one dropped from the catalog is a failing case, not a missing one.
SPEC_STRINGS = {
    "Account Created": ("account_name",),
    "Account Deleted": ("account_name",),
    "Signed Up": ("type", "first_name", "last_name", "email", "phone", "username", "title"),
    "Signed In": ("username",),
    "Signed Out": ("username",),
    "Invite Sent": ("invitee_email", "invitee_first_name", "invitee_last_name", "invitee_role"),
    "Account Added User": ("role",),
    "Trial Started": ("trial_plan_name",),
    "Trial Ended": ("trial_plan_name",),
}


def test_the_catalog_types_the_spec_s_string_properties() -> None:
    """The catalog has exactly the spec's String properties."""
    typed = {
        spec.name: tuple(name for name, kind in spec.properties.items() if kind == STRING)
        for spec in SPEC_EVENTS
    }
    assert {event: names for event, names in typed.items() if names} == SPEC_STRINGS


@pytest.mark.parametrize(
    ("event", "name"), [(event, name) for event, names in SPEC_STRINGS.items() for name in names]
)
def test_every_string_property_of_the_spec_must_be_a_string(event: str, name: str) -> None:
    """Each String property the spec names, sent as a number, is invalid_property naming it,
    before the account's state is looked at (none of these had a test of its own but
    `role`)."""
    verdict = Gate().submit(track(event, **{name: 5}))
    assert (verdict.code, verdict.field) == ("invalid_property", f"properties.{name}")


def test_an_empty_message_id_is_no_message_id() -> None:
    """An empty `messageId` is not a de-duplication key: two messages with one are both
    judged, and their verdicts carry no id."""
    gate = Gate()
    verdicts = [gate.submit(track(event, mid="")) for event in ("Account Created", "Signed Up")]
    assert [(v.verdict, v.message_id) for v in verdicts] == [("accepted", None)] * 2


def test_the_32_kb_limit_takes_a_message_of_exactly_32_kb() -> None:
    """A message of exactly 32,768 bytes as the client library writes it is accepted; one
    byte more is message_too_large."""
    message = {**track("Signed In", mid="m-1", pad=""), "timestamp": "2024-01-01T00:00:00Z"}

    def size(candidate: dict[str, Any]) -> int:
        return sent_size(as_sent(orjson.loads(orjson.dumps(candidate)), "m-1", "unused"))

    message["properties"]["pad"] = "x" * (MAX_MESSAGE_BYTES - size(message))
    assert size(message) == MAX_MESSAGE_BYTES
    assert gate_after(*MEMBER).submit(message).accepted
    message["properties"]["pad"] += "x"
    verdict = gate_after(*MEMBER).submit(message)
    assert (verdict.code, verdict.field) == ("message_too_large", "message")


def test_a_trial_may_end_on_the_day_it_started() -> None:
    """Equal trial dates are in order (only an end before the start is inverted), for
    Trial Started and for Trial Ended, a date alone being that day's midnight."""
    day = {"trial_start_date": "2018-08-28", "trial_end_date": "2018-08-28"}
    gate = gate_after(*CREATED, track("Trial Started", **day))
    ended = track(
        "Trial Ended", trial_start_date="2018-08-28T00:00:00Z", trial_end_date="2018-08-28"
    )
    assert gate.submit(ended).accepted


def test_account_added_user_role_defaults_to_empty() -> None:
    """Account Added User without a role sets the role to the empty string (a known user)."""
    gate = gate_after(*CREATED, track("Account Added User"), track("Signed In"))
    assert state_of(gate).user(USER) == UserState(role="", signed_in=True)


def test_signed_up_and_added_in_either_order() -> None:
    """Signed Up after Account Added User is legal, and so is the reverse."""
    gate = gate_after(
        *CREATED,
        track("Account Added User", role="Owner"),
        track("Signed Up"),
        track("Signed Up", user="u2"),
        track("Account Added User", user="u2", role="Viewer"),
    )
    state = state_of(gate)
    assert state.user(USER) == UserState(signed_up=True, role="Owner")
    assert state.user("u2") == UserState(signed_up=True, role="Viewer")


def test_signing_in_twice_is_legal() -> None:
    """Signed In while already signed in is accepted; one Signed Out then signs the user out."""
    gate = gate_after(*SIGNED_IN, track("Signed In"), track("Signed Out"))
    assert gate.submit(track("Signed Out")).code == "not_signed_in"


def test_invite_sent_needs_a_known_sender_only() -> None:
    """Invite Sent is accepted from a known sender whatever the invitee, refused from a stranger."""
    gate = gate_after(*MEMBER)
    assert gate.submit(track("Invite Sent", invitee_email="new@example.com")).accepted
    assert gate.submit(track("Invite Sent", user="u9")).code == "user_unknown"


def test_user_events_keep_the_account_status() -> None:
    """User events are allowed in trial and active and do not change the account's status."""
    gate = gate_after(*ACTIVE, track("Signed In"), track("Signed Out"))
    state = state_of(gate)
    assert (state.status, state.version) == ("active", 6)


def test_account_deleted_from_every_live_state() -> None:
    """Account Deleted is accepted from created, trial and active."""
    for history in (CREATED, TRIAL, ACTIVE):
        gate = gate_after(*history, track("Account Deleted"))
        assert state_of(gate).status == "deleted"


# -- batch lines ----------------------------------------------------------------------------


def test_batch_items_are_judged_in_order() -> None:
    """Each item of a batch line gets its own verdict, in order, seeing the ones before it."""
    line = orjson.dumps(
        {
            "batch": [
                track("Account Created", account=None),
                track("Signed In", account=None),
                track("Signed Up", account=None),
                track("Signed In", account=None),
            ],
            "context": {"groupId": ACCT},
        }
    )
    verdicts = Gate().submit_line(line)
    assert [(v.verdict, v.code, v.account) for v in verdicts] == [
        ("accepted", None, ACCT),
        ("rejected", "user_unknown", ACCT),
        ("accepted", None, ACCT),
        ("accepted", None, ACCT),
    ]


@pytest.mark.parametrize("as_text", [False, True], ids=["dict", "json-text"])
def test_submit_of_a_batch_judges_every_item_and_gives_the_first_verdict(as_text: bool) -> None:
    """Gate.submit of a batch judges all its items in order and returns the first one's verdict
    (the last one's would hide whether the batch's first event was taken)."""
    batch = {"batch": [track("Account Created"), track("Signed In"), track("Signed Up")]}
    gate = Gate()
    verdict = gate.submit(orjson.dumps(batch).decode() if as_text else batch)
    assert (verdict.verdict, verdict.event_name) == ("accepted", "Account Created")
    assert state_of(gate).user(USER) == UserState(signed_up=True)


@pytest.mark.parametrize("given", [track("Account Created"), '{"event": "Account Created"}'])
def test_submit_many_of_one_message_is_a_type_error(given: object) -> None:
    """submit_many of one message (a dict, or a line of text) is refused: iterating it would
    judge its keys, or its characters, one by one."""
    with pytest.raises(TypeError, match=r"^submit_many takes an iterable of messages"):
        Gate().submit_many(given)  # type: ignore[arg-type]


def test_batch_context_merges_with_item_keys_winning() -> None:
    """The batch's context is merged into each item, and an item's own context keys win."""
    gate = Gate()
    line = orjson.dumps(
        {
            "batch": [
                {"event": "Account Created", "userId": USER, "context": {"locale": "fr"}},
                {"event": "Account Created", "userId": USER, "context": {"groupId": "acct_2"}},
            ],
            "context": {"groupId": ACCT, "locale": "en"},
        }
    )
    verdicts = gate.submit_line(line)
    assert [(v.verdict, v.account) for v in verdicts] == [
        ("accepted", ACCT),
        ("accepted", "acct_2"),
    ]
    first = verdicts[0].event
    assert first is not None
    assert first.message["context"] == {"groupId": ACCT, "locale": "fr"}


def test_batch_integrations_merge_as_the_context_does() -> None:
    """A batch's top-level integrations are merged into each item as its context is, the
    item's own keys winning (as Segment's HTTP API does): what is stored and relayed."""
    line = orjson.dumps(
        {
            "batch": [
                {**track("Account Created", account=None), "integrations": {"Mixpanel": False}},
                track("Signed Up", account=None),
            ],
            "context": {"groupId": ACCT},
            "integrations": {"All": True, "Mixpanel": True},
        }
    )
    verdicts = Gate().submit_line(line)
    assert [v.verdict for v in verdicts] == ["accepted", "accepted"]
    assert [v.event.message["integrations"] for v in verdicts if v.event is not None] == [
        {"All": True, "Mixpanel": False},
        {"All": True, "Mixpanel": True},
    ]


def test_a_batch_that_is_not_an_array_is_a_message() -> None:
    """Only an array makes a line a batch: `{"batch": {...}}` is one message, judged as one
    (its keys were not taken for items)."""
    (verdict,) = Gate().submit_line(b'{"batch": {"a": 1, "b": 2}}')
    assert (verdict.verdict, verdict.code) == ("ignored", None)


def test_non_object_batch_items_are_malformed() -> None:
    """A batch item that is not an object is malformed_json; the other items are judged."""
    line = b'{"batch": [3, {"event": "Account Created", "userId": "u1"}, null],' + (
        b' "context": {"groupId": "acct_1"}}'
    )
    verdicts = Gate().submit_line(line)
    assert [(v.verdict, v.code, v.reason) for v in verdicts] == [
        ("rejected", "malformed_json", "batch item 0 is not a JSON object (got a number)"),
        ("accepted", None, None),
        ("rejected", "malformed_json", "batch item 2 is not a JSON object (got null)"),
    ]


def nested(depth: int) -> Any:
    """A value that nests ``depth`` arrays: ``[[...[1]...]]``."""
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


def test_messages_nested_past_the_depth_limit_are_malformed() -> None:
    """A message nesting objects and arrays more than 128 levels (itself included) is
    malformed_json, whatever the parser's own limit; brackets inside strings do not count;
    in a batch only the deep item is refused."""
    deepest_ok = track("Account Created", x=nested(126))  # message, properties, 126 arrays
    too_deep = track("Account Created", x=nested(127))
    brackets = track("Account Created", x="[{" * 500)
    gate = Gate()
    assert gate.submit_line(orjson.dumps(deepest_ok))[0].verdict == "accepted"
    for line in (orjson.dumps(too_deep), b'{"x": ' + b"[" * 2000 + b"]" * 2000 + b"}"):
        (verdict,) = gate.submit_line(line)
        assert (verdict.code, verdict.reason) == (
            "malformed_json",
            "nested more than 128 levels of objects and arrays deep",
        )
    assert Gate().submit_line(orjson.dumps(brackets).decode())[0].verdict == "accepted"
    batch = {"batch": [too_deep, deepest_ok], "context": {"groupId": "acct_2"}}
    assert [(v.verdict, v.code) for v in Gate().submit_line(orjson.dumps(batch))] == [
        ("rejected", "malformed_json"),
        ("accepted", None),
    ]


def test_a_batch_line_past_the_parsers_depth_is_refused_whole() -> None:
    """As docs/rules.md says: past the JSON parser's own limit (1,024 levels) the parser
    refuses the whole line, so a batch's other items are refused with it (and kept, in
    the quarantine's raw line). Below it only the deep item is."""
    good = orjson.dumps(track("Account Created"))
    for depth, expected in ((200, ["accepted", "rejected"]), (1100, ["rejected"])):
        deep = b'{"event": "Signed Up", "userId": "u1", "x": ' + b"[" * depth + b"]" * depth
        verdicts = Gate().submit_line(b'{"batch": [' + good + b", " + deep + b"}]}")
        assert [v.verdict for v in verdicts] == expected
        assert verdicts[-1].reason == "nested more than 128 levels of objects and arrays deep"


def test_spacing_does_not_make_a_message_too_large() -> None:
    """The 4 MiB limit counted a line's own spacing: the same message was refused on a line
    of its own and accepted in a batch. It counts compact JSON, and the store keeps that."""
    spaced = b'{"type": "track",' + b" " * (5 << 20) + orjson.dumps(track("Account Created"))[1:]
    for line in (spaced, b'{"batch": [' + spaced + b"]}"):
        assert [v.verdict for v in Gate().submit_line(line)] == ["accepted"]
    # Spacing does not let a message nested too deep through either.
    deep = spaced[:-1] + b', "x": ' + b"[" * 200 + b"]" * 200 + b"}"
    (verdict,) = Gate().submit_line(deep)
    assert verdict.reason == "nested more than 128 levels of objects and arrays deep"
    with Lifecycle("sqlite://") as store:
        assert [v.verdict for v in store.submit_line(spaced)] == ["accepted"]
        (event,) = store.events()
        assert len(event.payload) < 200


def test_messages_over_4_mib_are_malformed() -> None:
    """A message of more than 4 MiB of JSON is malformed_json, saying its size; a batch line
    may be larger as long as each of its items is not (the limit is per message)."""
    limit = 4 << 20
    # Calls lifecycle ignores: a lifecycle event that large is over Segment's 32 KB as well.
    at_limit = {"type": "identify", "userId": "u1", "traits": {"pad": ""}}
    at_limit["traits"]["pad"] = "x" * (limit - len(orjson.dumps(at_limit)))
    assert len(orjson.dumps(at_limit)) == limit
    over = {**at_limit, "traits": {"pad": at_limit["traits"]["pad"] + "é"}}
    for ending in (b"", b"\n", b"\r\n"):  # the line ending is not part of the message
        line = orjson.dumps(at_limit) + ending
        assert Gate().submit_line(line)[0].verdict == "ignored"
        assert Gate().submit_line(line.decode())[0].verdict == "ignored"
    (verdict,) = Gate().submit_line(orjson.dumps(over).decode())  # str: counted in bytes
    assert (verdict.code, verdict.reason) == (
        "malformed_json",
        f"the message is {limit + 2:,} bytes, more than the {limit:,} (4 MiB) a message may have",
    )
    small = [{**at_limit, "traits": {"pad": "x" * 300_000}} for n in range(20)]
    batch = {"batch": [track("Account Created"), *small, over]}
    verdicts = Gate().submit_line(orjson.dumps(batch))
    assert [v.verdict for v in verdicts] == ["accepted"] + ["ignored"] * 20 + ["rejected"]
    assert verdicts[-1].code == "malformed_json"


def test_a_message_longer_as_compact_json_than_as_written_is_measured_as_compact_json() -> None:
    """The 4 MiB limit counts compact JSON, as the store writes a batch item. A number written
    short (`9e15`) is written back 4.5 times as long (`9000000000000000.0`): such a message
    on a line under 4 MiB was taken (here `ignored`) alone or in a batch of one, and was
    `malformed_json` in a batch line over 4 MiB, where every item is measured."""
    numbers = b",".join([b"9e15"] * 250_000)
    message = b'{"type": "identify", "userId": "u1", "traits": {"xs": [' + numbers + b"]}}"
    assert len(message) < 2 << 20 and len(orjson.dumps(orjson.loads(message))) > 4 << 20
    one, four = (b'{"batch": [' + b", ".join([message] * n) + b"]}" for n in (1, 4))
    found = [[v.code for v in Gate().submit_line(line)] for line in (message, one, four)]
    assert found == [["malformed_json"], ["malformed_json"], ["malformed_json"] * 4]


def test_submit_line_of_a_single_message() -> None:
    """A line holding one message gives one verdict, accepting str or bytes."""
    gate = Gate()
    assert [v.verdict for v in gate.submit_line(orjson.dumps(track("Account Created")))] == [
        "accepted"
    ]
    assert [v.code for v in gate.submit_line(orjson.dumps(track("Account Created")).decode())] == [
        "account_exists"
    ]


# -- verdicts -------------------------------------------------------------------------------


def test_verdict_to_dict_for_a_rejection() -> None:
    """A rejected verdict's dict carries messageId, event, groupId, verdict, code and reason."""
    verdict = Gate().submit(track("User Signed In", mid="m5"))
    assert verdict.to_dict() == {
        "messageId": "m5",
        "event": "User Signed In",
        "groupId": ACCT,
        "verdict": "rejected",
        "code": "account_unknown",
        "reason": "User Signed In for acct_1 by u1: the account was never created",
    }


def test_verdict_to_dict_for_an_acceptance() -> None:
    """An accepted verdict's dict has no code and no reason keys."""
    assert Gate().submit(track("Account Created")).to_dict() == {
        "messageId": None,
        "event": "Account Created",
        "groupId": ACCT,
        "verdict": "accepted",
    }


def test_state_records_version_and_timestamps() -> None:
    """The state counts accepted events and keeps the first and latest timestamps."""
    gate = gate_after(
        {**track("Account Created"), "timestamp": "2024-01-01T08:59:00Z"},
        {**track("Signed Up"), "timestamp": "2024-01-01T09:00:00Z"},
        track("Signed In"),
    )
    gate.submit(track("Signed In", user="u7"))
    state = state_of(gate)
    assert (state.status, state.version, state.created_at, state.updated_at) == (
        "created",
        3,
        "2024-01-01T08:59:00Z",
        "2024-01-01T09:00:00Z",
    )


def test_created_at_is_only_the_first_event_s_timestamp() -> None:
    """created_at is the timestamp of the account's first event: when that had none, it stays
    None, and a later stamped event sets updated_at only (replay folds it the same way)."""
    gate = gate_after(
        track("Account Created"), {**track("Signed Up"), "timestamp": "2024-01-01T09:00:00Z"}
    )
    state = state_of(gate)
    assert (state.version, state.created_at, state.updated_at) == (2, None, "2024-01-01T09:00:00Z")


#: ISO-8601 date-times as the timestamp rule reads them (extended or basic calendar and
#: week dates; ``T``, ``t`` or a space before the time; ``.`` or ``,`` fractions of a
#: second, the only ones Python reads right).
_ISO_DATE_TIME = re.compile(
    r"\d{4}(?:-\d{2}-\d{2}|\d{4}|-W\d{2}-\d|W\d{3})[Tt ]"
    r"(?:\d{2}(?::\d{2}(?::\d{2}(?:[.,]\d+)?)?)?|\d{2}(?:\d{2}(?:\d{2}(?:[.,]\d+)?)?)?)"
    r"(?:[Zz]|[+-]\d{2}(?::?\d{2})?)?",
    re.ASCII,
)


def _python_parses(text: str) -> bool:
    try:
        datetime.fromisoformat(text.upper())
    except ValueError:
        return False
    return True


@given(
    st.sampled_from(["2018-08-28", "20180828", "2018-W35-2", "2018W352", "2018-02-30"]),
    st.sampled_from(["T", "t", " ", "x", "é", "\0", "-", ""]),
    st.sampled_from(["04", "04:09", "0409", "04:09:47", "040947", "04:09:4", "24:00", "04:0947"]),
    st.sampled_from(["", ".", ",", ".5", ",123", ".1234567", " ", ". 5"]),
    st.sampled_from(["", "Z", "z", " Z", "+01", "+0100", "+01:00", "-05:30", " +01:00"]),
    st.sampled_from(["", ":30", ":30.5", "0", " "]),
)
def test_timestamps_are_iso_8601_date_times(
    day: str, sep: str, time: str, fraction: str, offset: str, extra: str
) -> None:
    """A timestamp is valid exactly when it is an ISO-8601 date-time Python can read."""
    text = day + sep + time + fraction + offset + (extra if offset[-1:].isdigit() else "")
    expected = bool(_ISO_DATE_TIME.fullmatch(text)) and _python_parses(text)
    assert (parse_datetime(text) is not None) == expected


@pytest.mark.parametrize(
    ("value", "verdict"),
    [(b"1e999", "rejected"), (b'"\\udc00"', "rejected"), (b"1" * 40, "ignored")],
    ids=["infinite", "half-surrogate", "large-int"],
)
def test_json_no_writer_could_write_back_is_malformed(value: bytes, verdict: str) -> None:
    """As docs/rules.md says: a number past a double and half a surrogate pair are
    malformed_json, a large integer is not."""
    (judged,) = Gate().submit_line(b'{"type": "identify", "traits": {"x": ' + value + b"}}")
    assert (judged.verdict, judged.code) == (
        verdict,
        "malformed_json" if verdict == "rejected" else None,
    )
