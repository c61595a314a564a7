"""lifecycle: keep B2B SaaS account lifecycle data honest before it reaches Segment.

The public API is re-exported here; every other module path is an
implementation detail. Start with :class:`Gate` (in memory) or
:class:`Lifecycle` (with an event store).
"""

from __future__ import annotations

from lifecycle.decide import Rejection, Verdict, decide
from lifecycle.envelope import Event
from lifecycle.errors import (
    ConcurrencyError,
    InputError,
    LifecycleError,
    PolicyError,
    SchemaError,
    StoreError,
)
from lifecycle.gate import Gate
from lifecycle.policy import Guard, Policy, Refusal, Rule
from lifecycle.rules import DEFAULT_POLICY
from lifecycle.spec import DATE, REJECTION_CODES, SPEC_EVENTS, STRING, EventSpec, PropertyType
from lifecycle.state import AccountState, TrialState, UserState

__version__ = "0.1.0"

__all__ = [
    "DATE",
    "DEFAULT_POLICY",
    "REJECTION_CODES",
    "SPEC_EVENTS",
    "STRING",
    "AccountState",
    "ConcurrencyError",
    "Event",
    "EventSpec",
    "Gate",
    "Guard",
    "InputError",
    "LifecycleError",
    "Policy",
    "PolicyError",
    "PropertyType",
    "Refusal",
    "Rejection",
    "Rule",
    "SchemaError",
    "StoreError",
    "TrialState",
    "UserState",
    "Verdict",
    "decide",
]
