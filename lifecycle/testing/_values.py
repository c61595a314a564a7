"""Realistic values for generated messages: ids, names, emails, plans and ISO-8601 dates.

Values are chosen by property name where the spec's names say what they hold
(``email``, ``role``, ``trial_plan_name`` ...) and by property type otherwise,
so that a custom event gets sensible values for free. Every strategy here
shrinks towards its first, most ordinary value.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta, timezone
from functools import cache
from typing import Any

from hypothesis import strategies as st

from lifecycle.spec import DATE, EventSpec, PropertyType, parse_date

FIRST_NAMES = ("Ada", "Grace", "Alan", "Barbara", "Edsger", "Margaret", "José", "Zoë")
LAST_NAMES = ("Lovelace", "Hopper", "Turing", "Liskov", "Dijkstra", "Hamilton", "Núñez", "O'Brien")
COMPANIES = ("Acme Inc", "Globex", "Initech", "Umbrella Corp", "Hooli", "Stark Industries")
DOMAINS = ("example.com", "example.org", "acme.test")
ROLES = ("Admin", "Member", "Owner", "Viewer", "Billing")
PLANS = ("Pro", "Starter", "Business", "Enterprise")
SIGN_UP_TYPES = ("organic", "invited", "referral", "sso")
TITLES = ("Engineer", "CTO", "Designer", "Product Manager", "Founder")

#: A value no generated legal message uses, so that it always differs from what was sent.
OTHER_PLAN = "Legacy (discontinued)"

#: Date-time layouts of a generated ISO-8601 value, the first being Segment's own.
DATETIME_LAYOUTS = ("segment", "seconds", "offset", "naive")
#: Layouts of a spec Date property: a date-time, or a date meaning midnight UTC.
DATE_LAYOUTS = ("date", *DATETIME_LAYOUTS)

_EARLIEST = datetime(2019, 1, 1)
_LATEST = datetime(2027, 12, 31)


def format_instant(instant: datetime, layout: str) -> str:
    """``instant`` (an aware datetime) written in one ISO-8601 layout.

    Every layout keeps the instant (milliseconds included) except ``date``,
    which writes the day only, meaning midnight UTC.
    """
    instant = instant.astimezone(UTC)
    spec = "milliseconds" if instant.microsecond else "seconds"
    if layout == "date":
        return instant.date().isoformat()
    if layout == "segment":
        return instant.strftime("%Y-%m-%dT%H:%M:%S.") + f"{instant.microsecond // 1000:03d}Z"
    if layout == "seconds":
        return instant.isoformat(timespec=spec).replace("+00:00", "Z")
    if layout == "offset":
        return instant.astimezone(timezone(timedelta(hours=2))).isoformat(timespec=spec)
    if layout == "naive":
        return instant.replace(tzinfo=None).isoformat(timespec=spec)
    raise ValueError(f"unknown layout {layout!r}")


def rewrite_date(value: str, pick: int) -> str:
    """The same instant as the Date ``value``, in one of the layouts that keep it."""
    instant = parse_date(value)
    if instant is None:
        return value
    same = [
        w for layout in DATE_LAYOUTS if parse_date(w := format_instant(instant, layout)) == instant
    ]
    return same[pick % len(same)]


@cache
def instants() -> st.SearchStrategy[datetime]:
    """Aware UTC datetimes between 2019 and 2027, whole milliseconds."""
    return st.datetimes(_EARLIEST, _LATEST).map(
        lambda d: d.replace(microsecond=d.microsecond // 1000 * 1000, tzinfo=UTC)
    )


@cache
def date_strings(*, layouts: tuple[str, ...] = DATE_LAYOUTS) -> st.SearchStrategy[str]:
    """ISO-8601 dates and date-times, in the given layouts."""
    return st.builds(format_instant, instants(), st.sampled_from(layouts))


@cache
def timestamps() -> st.SearchStrategy[str]:
    """Envelope ``timestamp`` values: ISO-8601 date-times (never a bare date)."""
    return date_strings(layouts=DATETIME_LAYOUTS)


def _emails() -> st.SearchStrategy[str]:
    return st.builds(
        lambda first, last, domain: f"{first}.{last}@{domain}".lower().replace("'", ""),
        st.sampled_from(FIRST_NAMES[:6]),
        st.sampled_from(LAST_NAMES[:6]),
        st.sampled_from(DOMAINS),
    )


def _by_name(name: str) -> st.SearchStrategy[str] | None:
    """Realistic strings for a property whose name says what it holds."""
    if "email" in name:
        return _emails()
    if name.endswith("first_name"):
        return st.sampled_from(FIRST_NAMES)
    if name.endswith("last_name"):
        return st.sampled_from(LAST_NAMES)
    if name.endswith("role"):
        return st.sampled_from(ROLES)
    if "plan" in name:
        return st.sampled_from(PLANS)
    if name == "phone":
        return st.integers(100, 199).map(lambda n: f"+1-555-0{n}")
    if name == "username":
        return st.sampled_from(FIRST_NAMES[:6]).map(lambda first: first.lower())
    if name == "title":
        return st.sampled_from(TITLES)
    if name == "type":
        return st.sampled_from(SIGN_UP_TYPES)
    if name.endswith("name"):
        return st.sampled_from(COMPANIES)
    return None


def _free_text() -> st.SearchStrategy[str]:
    return st.text(min_size=1, max_size=12)


@cache
def property_values(name: str, kind: PropertyType) -> st.SearchStrategy[str]:
    """A valid value of the spec property ``name``: realistic when the name is known."""
    if kind is DATE:
        return date_strings()
    realistic = _by_name(name)
    if realistic is None:
        return st.one_of(st.sampled_from(("alpha", "beta", "gamma")), _free_text())
    return st.one_of(realistic, realistic, _free_text())


def first_value(name: str, kind: PropertyType, position: int = 0) -> str:
    """A fixed, readable valid value of a property (Dates increase with ``position``)."""
    if kind is DATE:
        return format_instant(
            datetime(2024, 1, 1, tzinfo=UTC) + timedelta(days=30 * position), "date"
        )
    if "email" in name:
        return "ada.lovelace@example.com"
    if name.endswith("first_name"):
        return FIRST_NAMES[0]
    if name.endswith("last_name"):
        return LAST_NAMES[0]
    if name.endswith("role"):
        return ROLES[0]
    if "plan" in name:
        return PLANS[0]
    if name.endswith("name"):
        return COMPANIES[0]
    return "alpha"


#: Properties the spec does not name, with values of any JSON type (all allowed).
EXTRA_PROPERTIES: Mapping[str, st.SearchStrategy[Any]] = {
    "seats": st.integers(1, 500),
    "source": st.sampled_from(("web", "ios", "android", "api")),
    "is_sso": st.booleans(),
    "tags": st.lists(st.sampled_from(("beta", "eu", "vip")), max_size=2, unique=True),
    "discount": st.none() | st.floats(0, 1, allow_nan=False).map(lambda x: round(x, 2)),
}


def full_properties(spec: EventSpec) -> dict[str, str]:
    """Every spec property of ``spec`` with a fixed valid value; Dates in increasing order."""
    dates = 0
    out: dict[str, str] = {}
    for name, kind in spec.properties.items():
        out[name] = first_value(name, kind, dates)
        if kind is DATE:
            dates += 1
    return out
