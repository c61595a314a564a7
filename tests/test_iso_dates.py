"""Trial dates compared as instants, to the last digit of their fractions: Python's parser
keeps microseconds and drops the digits after them."""

from __future__ import annotations

from typing import Any

from lifecycle import Gate

ACCT, USER = "acct_1", "u1"


def track(event: str, **extra: Any) -> dict[str, Any]:
    return {"type": "track", "event": event, "userId": USER, "context": {"groupId": ACCT}, **extra}


def trial(event: str, **properties: str) -> dict[str, Any]:
    return track(event, properties=properties)


def gate_after(*messages: dict[str, Any]) -> Gate:
    gate = Gate()
    for message in messages:
        verdict = gate.submit(message)
        assert verdict.accepted, verdict
    return gate


CREATED = (track("Account Created"),)


# -- Date properties compared as instants: a sub-microsecond difference is lost ----------


def test_trial_dates_inverted_by_less_than_a_microsecond() -> None:
    """RULES.md: `trial_dates_inverted` if both dates are present and `trial_end_date` is
    before `trial_start_date`. 100 ns before is before."""
    verdict = gate_after(*CREATED).submit(
        trial(
            "Trial Started",
            trial_start_date="2018-08-28T04:09:47.1234568Z",
            trial_end_date="2018-08-28T04:09:47.1234567Z",
        )
    )
    assert (verdict.verdict, verdict.code) == ("rejected", "trial_dates_inverted")


def test_trial_start_dates_differing_by_nanoseconds_mismatch() -> None:
    """RULES.md: `trial_mismatch` if `trial_start_date` is present in both and they differ
    (dates compared as instants). ...47.123456789Z and ...47.123456Z are two instants."""
    gate = gate_after(
        *CREATED, trial("Trial Started", trial_start_date="2018-08-28T04:09:47.123456789Z")
    )
    verdict = gate.submit(trial("Trial Ended", trial_start_date="2018-08-28T04:09:47.123456Z"))
    assert (verdict.verdict, verdict.code) == ("rejected", "trial_mismatch")
