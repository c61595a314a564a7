"""Histories with accepted and rejected events, and the checks every delivery test makes."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lifecycle.relay import Backoff, Relay
from lifecycle.service import Lifecycle
from tests.relay.fake_segment import FakeSegment
from tests.store.helpers import account_history, interleave, msg

#: Waits short enough for a test: first retry after 10-20 ms.
FAST = Backoff(base=0.02, cap=0.2)


@dataclass
class Stored:
    """What a history left: accepted ids with their (account, version), and rejected ids."""

    accepted: dict[str, tuple[str, int]] = field(default_factory=dict)
    rejected: set[str] = field(default_factory=set)


def illegal(account: str) -> list[dict[str, Any]]:
    """Messages the default policy rejects for an account that exists."""
    return [
        msg("Account Created", f"{account}-u0", account),
        msg("Signed In", "stranger", account),
        msg("Trial Ended", f"{account}-u0", "no-such-account"),
    ]


def submit_history(
    store: Lifecycle, accounts: int = 4, *, seed: int = 1, prefix: str = "acct"
) -> Stored:
    """Submit interleaved legal histories plus illegal messages; return what was decided."""
    histories = [account_history(f"{prefix}_{n}", users=2, sessions=2) for n in range(accounts)]
    messages = interleave(histories, seed)
    for n in range(accounts):
        messages[len(messages) * (n + 1) // (accounts + 1) : 0] = illegal(f"{prefix}_{n}")
    stored = Stored()
    for start in range(0, len(messages), 7):
        chunk = messages[start : start + 7]
        for message, verdict in zip(chunk, store.submit_many(chunk), strict=True):
            if verdict.verdict == "accepted":
                stored.accepted[message["messageId"]] = ("", 0)
            else:
                stored.rejected.add(message["messageId"])
    for event in store.events():
        assert event.message_id is not None
        stored.accepted[event.message_id] = (event.account, event.version)
    return stored


def relay_for(url: str, server: FakeSegment, **options: Any) -> Relay:
    """A relay to ``server`` with test-sized waits."""
    options.setdefault("backoff", FAST)
    options.setdefault("poll_interval", 0.02)
    options.setdefault("timeout", 5.0)
    return Relay(url, write_key=server.write_key, host=server.url, **options)


def assert_delivered(
    server: FakeSegment, stored: Stored, *, duplicates: bool = True, parked: set[str] = frozenset()
) -> None:
    """Every accepted event arrived (bar the parked ones), no rejected one, in per-account order.

    A message may arrive more than once only when ``duplicates``, and then always with
    the same messageId and the same content.
    """
    ids = server.message_ids()
    first = server.first_arrivals()
    arrived = {m["messageId"] for m in first}
    assert arrived == set(stored.accepted) - set(parked), "an accepted event is missing or extra"
    assert not arrived & stored.rejected, "a rejected message reached Segment"
    if not duplicates:
        assert len(ids) == len(set(ids)), "a message was sent twice in normal operation"
    copies: dict[str, dict[str, Any]] = {}
    for arrival in server.arrivals:
        message = arrival.message
        previous = copies.setdefault(message["messageId"], message)
        assert message == previous, "two copies of one messageId differ"
    versions: dict[str, list[int]] = {}
    for message in first:
        account, version = stored.accepted[message["messageId"]]
        assert message["context"]["groupId"] == account
        versions.setdefault(account, []).append(version)
    for account, seen in versions.items():
        assert seen == sorted(seen), f"{account} arrived out of order: {seen}"


def park_first(store: Lifecycle, url: str, server: FakeSegment, history: list[Any]) -> None:
    """Store the first event of ``history`` and have a relay park it (``server`` refuses
    it once; it takes it again afterwards)."""
    server.refuse(history[0]["messageId"])
    store.submit(history[0])
    with relay_for(url, server) as relay:
        assert relay.run().parked == 1
    server.refused_ids.clear()


def wait_for_request(server: FakeSegment, before: int) -> None:
    """Wait (up to 10 s) until ``server`` has more than ``before`` requests."""
    deadline = time.monotonic() + 10
    while len(server.requests) == before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(server.requests) > before, "the relay sent nothing"


def while_a_relay_sends(url: str, server: FakeSegment, during: Callable[[Relay], object]) -> None:
    """A first relay sends (slowly) what it sees; while its request is in flight,
    ``during`` runs with a second relay; the first relay's run ends before this returns."""
    server.slow(1.5)
    before = len(server.requests)
    with relay_for(url, server) as first, relay_for(url, server) as second:
        sending = threading.Thread(target=first.run)
        sending.start()
        wait_for_request(server, before)
        during(second)
        sending.join()
