"""One legal step and its plainest message: shared by the strategies and the model cases.

Free of Hypothesis, so that the model-based cases import without it. Pure.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Step:
    """One legal event to send: canonical name, user and properties."""

    event: str
    user: str
    properties: Mapping[str, Any]


def plain_message(account: str, step: Step, message_id: str) -> dict[str, Any]:
    """``step`` as the plainest track message: no timestamp, properties only if any."""
    message: dict[str, Any] = {
        "type": "track",
        "event": step.event,
        "userId": step.user,
        "context": {"groupId": account},
    }
    if step.properties:
        message["properties"] = dict(step.properties)
    message["messageId"] = message_id
    return message
