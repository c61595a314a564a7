"""Property: any mix of submitting, relaying, pruning and backfilling sends nothing twice.

Pruning deletes delivered rows and backfill queues events without a row: the
watermark between them is what keeps a delivered event from being queued again.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lifecycle.relay import Relay
from lifecycle.service import Lifecycle
from tests.relay.fake_segment import FakeSegment
from tests.relay.helpers import relay_for
from tests.store.helpers import account_history, interleave, wipe

SETTINGS = settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

#: One step: submit the next n messages (with or without an outbox row), run the relay,
#: prune what was delivered, backfill, or make Segment refuse the i-th message for good.
Step = tuple[str, int]
STEPS = st.lists(
    st.one_of(
        st.tuples(st.sampled_from(["submit", "quiet"]), st.integers(1, 12)),
        st.tuples(st.sampled_from(["relay", "prune", "backfill"]), st.just(0)),
        st.tuples(st.just("refuse"), st.integers(0, 200)),
    ),
    max_size=12,
)


@pytest.fixture
def stores(db_url: str) -> Iterator[tuple[Lifecycle, Lifecycle]]:
    """One database, written with an outbox and without one (wiped by each example)."""
    with Lifecycle(db_url, create_schema=True) as loud, Lifecycle(db_url, outbox=False) as quiet:
        yield loud, quiet


@SETTINGS
@given(seed=st.integers(0, 10_000), steps=STEPS)
def test_prune_and_backfill_never_resend(
    stores: tuple[Lifecycle, Lifecycle], db_url: str, seed: int, steps: list[Step]
) -> None:
    loud, quiet = stores
    wipe(loud)
    stream = interleave([account_history(f"acct_{n}", users=2, sessions=1) for n in range(2)], seed)
    queued: list[dict[str, Any]] = []  # accepted with an outbox row, in order
    refused: set[str] = set()
    with FakeSegment() as segment, relay_for(db_url, segment) as relay:
        at = 0
        for step, n in steps:
            if step in ("submit", "quiet"):
                batch, at = stream[at : at + n], at + n
                store = loud if step == "submit" else quiet
                verdicts = store.submit_many(batch)
                if step == "submit":
                    queued += [m for m, v in zip(batch, verdicts, strict=True) if v.accepted]
            elif step == "refuse":
                mid = stream[n % len(stream)]["messageId"]
                segment.refuse(mid)
                refused.add(mid)
            else:
                _act(relay, step)
        relay.backfill()
        relay.run()
        assert relay.status().pending == 0
        assert relay.backfill() == 0, "a delivered or pruned event was offered again"

    sent = segment.message_ids()
    assert len(sent) == len(set(sent)), "an event reached Segment twice"
    stored = {e.message_id: (e.account, e.version) for e in loud.events()}
    assert set(sent) <= set(stored), "a message that was not accepted reached Segment"
    assert {m["messageId"] for m in queued} - refused <= set(sent), "a queued event was lost"
    order = [stored[mid] for mid in sent if mid in {m["messageId"] for m in queued}]
    for account in {a for a, _ in order}:
        versions = [v for a, v in order if a == account]
        assert versions == sorted(versions), f"{account}'s queued events arrived out of order"


def _act(relay: Relay, step: str) -> None:
    if step == "relay":
        relay.run()
    elif step == "prune":
        relay.prune(older_than=timedelta(0))
    else:
        relay.backfill()
