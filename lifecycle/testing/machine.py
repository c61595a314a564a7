"""A Hypothesis state machine base for testing the code that emits lifecycle events.

Subclass :class:`LifecycleMachine`, give it ``@rule`` methods that drive your
own code (sign a user up, start a trial ...), and pass every message your code
emits to :meth:`LifecycleMachine.emit`. The machine keeps a reference
:class:`lifecycle.Gate`: a message it does not accept fails the run, and
Hypothesis shrinks the sequence of rules to the shortest one that shows it.
Override :meth:`LifecycleMachine.check_model` to compare your own model
with the reference state after every step.

Needs ``hypothesis``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

from hypothesis.stateful import RuleBasedStateMachine, invariant

from lifecycle.decide import Verdict
from lifecycle.gate import Gate
from lifecycle.messages import one_by_one
from lifecycle.policy import Policy
from lifecycle.rules import DEFAULT_POLICY
from lifecycle.state import AccountState
from lifecycle.testing._assertions import Given, judged, verdict_table


class LifecycleMachine(RuleBasedStateMachine):
    """Base class: every message a subclass emits must be accepted by the reference gate.

    Example (a sketch; ``app`` is your code)::

        class AppMachine(LifecycleMachine):
            @rule()
            def create(self):
                self.check_emitted(app.create_account("acct_1", "user_1"))

        TestApp = AppMachine.TestCase

    ``policy`` (a class attribute) is the policy the reference gate judges under.
    """

    policy: ClassVar[Policy] = DEFAULT_POLICY

    def __init__(self) -> None:
        super().__init__()
        self.gate = Gate(self.policy)
        self.emitted: list[Given] = []
        self.verdicts: list[Verdict] = []

    def emit(self, message: Given) -> Verdict:
        """Judge one emitted message; fail with every message so far unless it is accepted.

        JSON text holding a batch object is judged item by item, each recorded and
        checked; the verdict returned is the last item's.
        """
        __tracebackhide__ = True  # pytest shows the caller's line, not this helper's
        for item, verdict in judged(self.gate, message):
            self.emitted.append(item)
            self.verdicts.append(verdict)
            if not verdict.accepted:
                raise AssertionError(
                    f"emitted message #{len(self.emitted) - 1} was not accepted: "
                    f"{verdict.verdict} {verdict.code or ''}".rstrip()
                    + "\n"
                    + verdict_table(self.emitted, self.verdicts)
                )
        return verdict

    def check_emitted(self, messages: Iterable[Given]) -> list[Verdict]:
        """Judge messages in order with :meth:`emit`; returns their verdicts."""
        return [self.emit(m) for m in one_by_one(messages, "check_emitted", "use emit for one")]

    def state(self, account: str) -> AccountState | None:
        """The reference state of ``account`` (None if nothing of it was accepted)."""
        return self.gate.state(account)

    def check_model(self) -> None:
        """Override to compare your own model with :meth:`state` after every step."""

    @invariant()
    def lifecycle_invariants(self) -> None:
        """Runs :meth:`check_model` after every step."""
        self.check_model()
