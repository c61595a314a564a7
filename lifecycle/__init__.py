"""lifecycle: keep B2B SaaS account lifecycle data honest before it reaches Segment.

The public API is re-exported here; every other module path is an
implementation detail. Start with :class:`Gate` (in memory) or
:class:`Lifecycle` (with an event store).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lifecycle.decide import Rejection, Verdict, decide
from lifecycle.envelope import Event
from lifecycle.errors import (
    ConcurrencyError,
    InputError,
    LifecycleError,
    PolicyError,
    RelayError,
    SchemaError,
    StoreError,
)
from lifecycle.gate import Gate
from lifecycle.policy import Guard, Policy, Refusal, Rule
from lifecycle.rules import DEFAULT_POLICY
from lifecycle.spec import DATE, REJECTION_CODES, SPEC_EVENTS, STRING, EventSpec, PropertyType
from lifecycle.state import AccountState, TrialState, UserState, with_user

if TYPE_CHECKING:
    from lifecycle.relay import Relay
    from lifecycle.service import Lifecycle, QuarantinedMessage
    from lifecycle.store.repository import StoredEvent

__version__ = "0.1.0"

# The store (SQLAlchemy, Alembic) is imported on first use, so that the pure core and
# `lifecycle check` start without it.
_LAZY = {
    "Lifecycle": "lifecycle.service",
    "QuarantinedMessage": "lifecycle.service",
    "Relay": "lifecycle.relay",
    "StoredEvent": "lifecycle.store.repository",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'lifecycle' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


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
    "Lifecycle",
    "LifecycleError",
    "Policy",
    "PolicyError",
    "PropertyType",
    "QuarantinedMessage",
    "Refusal",
    "Rejection",
    "Relay",
    "RelayError",
    "Rule",
    "SchemaError",
    "StoreError",
    "StoredEvent",
    "TrialState",
    "UserState",
    "Verdict",
    "decide",
    "with_user",
]
