"""The state machine base: a subclass drives an app and every emitted event is checked."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import rule, run_state_machine_as_test

from lifecycle.testing import LifecycleMachine


class Accounts:
    """A small app under test: it emits a Segment event for each thing it does."""

    def __init__(self, *, buggy: bool = False) -> None:
        self.buggy = buggy
        self.accounts: set[str] = set()
        self.members: dict[str, set[str]] = {}

    def event(self, name: str, account: str, user: str) -> dict[str, Any]:
        return {"type": "track", "event": name, "userId": user, "context": {"groupId": account}}

    def create(self, account: str, user: str) -> list[dict[str, Any]]:
        if account in self.accounts:
            return []
        self.accounts.add(account)
        self.members[account] = set()
        return [self.event("Account Created", account, user)]

    def join(self, account: str, user: str) -> list[dict[str, Any]]:
        if account not in self.accounts or user in self.members[account]:
            return []
        self.members[account].add(user)
        out = [self.event("Signed Up", account, user), self.event("Signed In", account, user)]
        return out[::-1] if self.buggy and len(self.members[account]) > 1 else out


class AccountsMachine(LifecycleMachine):
    """Drives :class:`Accounts` and checks what it emits against the reference gate."""

    buggy = False

    def __init__(self) -> None:
        super().__init__()
        self.app = Accounts(buggy=self.buggy)

    @rule(account=st.sampled_from(["a1", "a2"]))
    def create(self, account: str) -> None:
        self.check_emitted(self.app.create(account, "founder"))

    @rule(
        account=st.sampled_from(["a1", "a2"]),
        user=st.sampled_from(["u1", "u2", "u3"]),
    )
    def join(self, account: str, user: str) -> None:
        self.check_emitted(self.app.join(account, user))

    def check_model(self) -> None:
        for account in self.app.accounts:
            state = self.state(account)
            assert state is not None and state.status == "created"


class BuggyAccountsMachine(AccountsMachine):
    """The same app with its second member signing in before signing up."""

    buggy = True


TestAccounts = AccountsMachine.TestCase
TestAccounts.settings = settings(max_examples=30, stateful_step_count=10, deadline=None)


def test_the_machine_finds_an_ordering_bug() -> None:
    """A Signed In sent before Signed Up fails the run with the verdict table."""
    with pytest.raises(AssertionError) as failure:
        run_state_machine_as_test(
            BuggyAccountsMachine,
            settings=settings(max_examples=200, deadline=None, database=None, print_blob=False),
        )
    text = str(failure.value)
    assert "was not accepted: rejected user_unknown" in text
    assert "Signed In" in text and "#  event" in text


class BatchSendingMachine(LifecycleMachine):
    """An app that sends its events as one Segment batch, with a bug in the middle."""

    @rule()
    def onboard(self) -> None:
        app = Accounts()
        events = app.create("acct_b", "u1") + app.join("acct_b", "u1")[::-1]
        self.emit(json.dumps({"batch": events}))


def test_the_machine_checks_every_item_of_an_emitted_batch() -> None:
    """A batch emitted as JSON text is judged item by item: only its first item was checked,
    so the Signed In before Signed Up inside it went unnoticed."""
    with pytest.raises(AssertionError) as failure:
        run_state_machine_as_test(
            BatchSendingMachine,
            settings=settings(max_examples=5, deadline=None, database=None, print_blob=False),
        )
    assert "emitted message #1 was not accepted: rejected user_unknown" in str(failure.value)


def test_check_emitted_refuses_one_message() -> None:
    """A dict was iterated by its keys, each judged malformed; now a TypeError says why."""
    machine = AccountsMachine()
    message = {"event": "Account Created", "userId": "u1", "context": {"groupId": "a1"}}
    with pytest.raises(TypeError, match=r"^check_emitted takes .*got a dict: use emit for one$"):
        machine.check_emitted(message)  # type: ignore[arg-type]
