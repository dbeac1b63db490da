"""The body of a webhook delivery: the proto3 JSON of a WebhookEvent with its one
payload (a message status change, a batch status change, a verification outcome, an
inbound message, or a suppression a recipient's keyword changed)."""

from __future__ import annotations

from google.protobuf import json_format
from sms.v1 import common_pb2, webhook_pb2

from server.api import convert
from server.api.inbound_service import inbound_message
from server.domain.account_events import (
    BatchStatusChange,
    InboundReceived,
    KeywordSuppression,
    VerificationOutcome,
)
from server.domain.models import StatusEvent


def batch_status_event(change: BatchStatusChange) -> webhook_pb2.BatchStatusEvent:
    return webhook_pb2.BatchStatusEvent(
        task_id=change.batch_id,
        status=common_pb2.BatchStatus.ValueType(int(change.status)),
        total=change.total,
        sent=change.sent,
        delivered=change.delivered,
        failed=change.failed,
        occurred_at=convert.timestamp(change.occurred_at),
        reference=change.reference,
        metadata=change.metadata,
    )


def verification_event(outcome: VerificationOutcome) -> webhook_pb2.VerificationEvent:
    return webhook_pb2.VerificationEvent(
        verify_id=outcome.verify_id,
        state=common_pb2.VerificationState.ValueType(int(outcome.state)),
        mobile=outcome.mobile,
        message_id=outcome.message_id,
        scene=outcome.scene,
        occurred_at=convert.timestamp(outcome.occurred_at),
        reference=outcome.reference,
        metadata=outcome.metadata,
    )


Event = StatusEvent | BatchStatusChange | VerificationOutcome | InboundReceived | KeywordSuppression


def webhook_event(event: Event) -> webhook_pb2.WebhookEvent:
    message = webhook_pb2.WebhookEvent(
        id=str(event.event_id), occurred_at=convert.timestamp(event.occurred_at)
    )
    if isinstance(event, StatusEvent):
        message.type = webhook_pb2.EVENT_TYPE_MESSAGE_STATUS
        message.message_status.CopyFrom(convert.status_event(event))
    elif isinstance(event, BatchStatusChange):
        message.type = webhook_pb2.EVENT_TYPE_BATCH_STATUS
        message.batch_status.CopyFrom(batch_status_event(event))
    elif isinstance(event, InboundReceived):
        message.type = webhook_pb2.EVENT_TYPE_INBOUND_MESSAGE
        message.inbound_message.CopyFrom(inbound_message(event.message))
    elif isinstance(event, KeywordSuppression):
        message.type = webhook_pb2.EVENT_TYPE_SUPPRESSION
        message.suppression.CopyFrom(
            webhook_pb2.SuppressionEvent(
                mobile=event.mobile,
                suppressed=event.suppressed,
                inbound_message_id=event.inbound_message_id,
                occurred_at=convert.timestamp(event.occurred_at),
            )
        )
    else:
        message.type = webhook_pb2.EVENT_TYPE_VERIFICATION
        message.verification.CopyFrom(verification_event(event))
    return message


def event_body(event: Event) -> bytes:
    return json_format.MessageToJson(webhook_event(event), indent=None).encode()
