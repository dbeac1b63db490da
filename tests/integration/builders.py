"""Test data builders shared by the integration tests."""

from __future__ import annotations

from datetime import UTC, datetime

from server.domain.messaging import new_message_id
from server.domain.models import NewMessage, Priority, UseType


def new_message(account_id: int, priority: Priority = Priority.SINGLE) -> NewMessage:
    return NewMessage(
        id=new_message_id(),
        account_id=account_id,
        to_number="+8613800138000",
        use_type=UseType.NOTIFICATION,
        body="hello",
        segments=1,
        priority=priority,
        not_before=datetime.now(UTC),
    )
