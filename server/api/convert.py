"""Conversions between proto messages and domain records."""

from __future__ import annotations

import enum
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from google.protobuf import duration_pb2, timestamp_pb2
from sms.v1 import common_pb2, message_pb2, template_pb2

from server.domain.errors import InvalidArgument
from server.domain.models import MessageState, StatusEvent, Template

E = TypeVar("E", bound=enum.IntEnum)


def enum_value(kind: type[E], value: int, unknown: E) -> E:
    """A proto enum number as the domain enum; numbers this server does not know
    (a newer client) become ``unknown``, which validation then refuses."""
    try:
        return kind(value)
    except ValueError:
        return unknown


def timestamp(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(value.astimezone(UTC))
    return ts


def from_timestamp(value: timestamp_pb2.Timestamp, field: str) -> datetime:
    """A request's Timestamp as an aware datetime; one outside the range a Timestamp
    may hold (years 1 to 9999, nanos 0 to 999,999,999) is the caller's mistake."""
    try:
        return value.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError):
        raise InvalidArgument.field(
            field,
            "must be a valid timestamp: from 0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z, "
            "with nanos from 0 to 999,999,999",
        ) from None


def validity(value: duration_pb2.Duration) -> timedelta:
    """A request's validity as a timedelta; one no timedelta holds is out of range."""
    try:
        return value.ToTimedelta()
    except (ValueError, OverflowError):
        raise InvalidArgument.field("validity", "must be from 1 minute to 72 hours") from None


def message_state(state: MessageState) -> message_pb2.MessageState:
    return message_pb2.MessageState(
        id=state.id,
        to_number=state.to_number,
        status=common_pb2.MessageStatus.ValueType(int(state.status)),
        error_code=state.error_code,
        provider=state.provider,
        updated_at=timestamp(state.updated_at),
        reference=state.reference,
        metadata=state.metadata,
    )


def status_event(event: StatusEvent) -> message_pb2.MessageStatusEvent:
    return message_pb2.MessageStatusEvent(
        event_id=event.event_id,
        message_id=event.message_id,
        to_number=event.to_number,
        status=common_pb2.MessageStatus.ValueType(int(event.status)),
        error_code=event.error_code,
        batch_id=event.batch_id or "",
        occurred_at=timestamp(event.occurred_at),
        reference=event.reference,
        metadata=event.metadata,
    )


def template(t: Template) -> template_pb2.Template:
    return template_pb2.Template(
        id=t.id,
        code=t.code,
        content=t.content,
        use_type=common_pb2.UseType.ValueType(int(t.use_type)),
        variables=list(t.variables),
        status=template_pb2.TEMPLATE_STATUS_ACTIVE,
        create_time=timestamp(t.created_at),
    )
