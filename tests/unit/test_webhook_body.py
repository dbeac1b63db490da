"""A message status change's webhook body, written directly, is the same JSON object
as protobuf's json_format makes of the WebhookEvent (what receivers parse)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from google.protobuf import json_format

from server.domain.models import MessageStatus, StatusEvent
from server.webhooks.events import status_event_body, webhook_event

MOMENTS = [
    datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC),  # no fraction
    datetime(2026, 3, 1, 12, 0, 0, 250_000, tzinfo=UTC),  # milliseconds
    datetime(2026, 3, 1, 12, 0, 0, 123_456, tzinfo=UTC),  # microseconds
    datetime(1999, 12, 31, 23, 59, 59, 1, tzinfo=timezone(timedelta(hours=8))),  # offset
]


@pytest.mark.parametrize("occurred_at", MOMENTS)
@pytest.mark.parametrize(
    "event",
    [
        StatusEvent(1, "m-1", 7, "+8613800138000", MessageStatus.PENDING, "", None, MOMENTS[0]),
        StatusEvent(
            2**40,
            "m-2",
            7,
            "+447911123456",
            MessageStatus.FAILED,
            "PROVIDER_REJECTED",
            "b-9",
            MOMENTS[0],
            reference="order «42» — ok",
            metadata={"k": "v", "ünï": '"quoted"\n', "": "empty key"},
        ),
        StatusEvent(3, "m-3", 7, "", MessageStatus.DELIVERED, "", "", MOMENTS[0], "ref"),
    ],
)
def test_direct_body_is_json_formats_object(event: StatusEvent, occurred_at: datetime) -> None:
    event = StatusEvent(**{**event.__dict__, "occurred_at": occurred_at})
    expected = json_format.MessageToJson(webhook_event(event), indent=None)
    body = status_event_body(event)
    assert json.loads(body) == json.loads(expected)
    assert body.isascii()  # non-ASCII escaped, as json_format writes it
