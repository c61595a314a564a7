"""Test helpers for code that uses lifecycle: Hypothesis strategies of messages and histories.

Needs ``hypothesis`` (installed with the ``dev`` extra)::

    from hypothesis import given
    from lifecycle import Gate
    from lifecycle.testing import illegal_histories, legal_histories, messages

See :mod:`lifecycle.testing.strategies` for what each strategy draws.
"""

from __future__ import annotations

from lifecycle.testing.strategies import Message, illegal_histories, legal_histories, messages

__all__ = ["Message", "illegal_histories", "legal_histories", "messages"]
