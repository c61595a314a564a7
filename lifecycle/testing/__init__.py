"""Test helpers for code that uses lifecycle: strategies, model-based cases, a state machine.

* :mod:`lifecycle.testing.strategies`: Hypothesis strategies of messages and histories;
* ``mutations`` and ``Mutation``: mutated legal histories and their verdicts;
* ``deliveries`` and ``Delivery``: a legal history batched, redelivered and among
  ignored calls, with the verdict of each message;
* :mod:`lifecycle.testing.model`: deterministic cases from the policy's graph;
* :mod:`lifecycle.testing.machine`: a state machine base for code that emits events;
* :mod:`lifecycle.testing.plugin`: pytest fixtures (loaded automatically).

The strategies, mutations and the state machine need ``hypothesis`` (the
``testing`` extra) and import it only when first used; the model-based cases and
:func:`assert_accepted` need nothing beyond lifecycle::

    from hypothesis import given
    from lifecycle import Gate
    from lifecycle.testing import illegal_histories, legal_histories, messages
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import TYPE_CHECKING, Any

from lifecycle.testing._assertions import assert_accepted, verdict_table
from lifecycle.testing.model import (
    RefusalCase,
    StatePath,
    TransitionCase,
    refusal_cases,
    shortest_paths,
    transition_cases,
)

if TYPE_CHECKING:
    from lifecycle.testing._deliveries import Delivery, deliveries
    from lifecycle.testing._mutations import Mutation, mutations
    from lifecycle.testing.machine import LifecycleMachine
    from lifecycle.testing.strategies import (
        Message,
        illegal_histories,
        legal_histories,
        messages,
    )

__all__ = [
    "RefusalCase",
    "StatePath",
    "TransitionCase",
    "assert_accepted",
    "refusal_cases",
    "shortest_paths",
    "transition_cases",
    "verdict_table",
]
if importlib.util.find_spec("hypothesis") is not None:
    # Without Hypothesis, `from lifecycle.testing import *` takes what works without it.
    __all__ += [
        "Delivery",
        "LifecycleMachine",
        "Message",
        "Mutation",
        "deliveries",
        "illegal_histories",
        "legal_histories",
        "messages",
        "mutations",
    ]

# Names that need Hypothesis, and the module each lives in: imported on first use.
_LAZY = {
    "Delivery": "_deliveries",
    "deliveries": "_deliveries",
    "LifecycleMachine": "machine",
    "Message": "strategies",
    "Mutation": "_mutations",
    "illegal_histories": "strategies",
    "legal_histories": "strategies",
    "messages": "strategies",
    "mutations": "_mutations",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
