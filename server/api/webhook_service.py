"""sms.v1.WebhookService."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf import empty_pb2
from sms.v1 import webhook_pb2, webhook_pb2_grpc

from server.api import convert
from server.api.context import current_caller
from server.domain import webhook_signing
from server.domain.codes import CodeKeys
from server.domain.errors import FieldViolation, InvalidArgument, NotFound
from server.domain.fields import NUL_DESCRIPTION, storable
from server.domain.pagination import decode_page_token, encode_page_token, page_size
from server.http.webhook_url import check_url
from server.store.webhooks import DeliveryRow, PgWebhookStore, WebhookRow

Context = grpc.aio.ServicerContext[Any, Any]

# The event types an endpoint can subscribe to.
SUPPORTED_EVENT_TYPES = frozenset(
    {
        webhook_pb2.EVENT_TYPE_MESSAGE_STATUS,
        webhook_pb2.EVENT_TYPE_BATCH_STATUS,
        webhook_pb2.EVENT_TYPE_VERIFICATION,
        webhook_pb2.EVENT_TYPE_INBOUND_MESSAGE,
        webhook_pb2.EVENT_TYPE_SUPPRESSION,
    }
)
MAX_DESCRIPTION = 200
_INT64_MAX = 2**63 - 1


def _event_type_name(value: int) -> str:
    try:
        return webhook_pb2.EventType.Name(value)  # type: ignore[arg-type]
    except ValueError:
        return str(value)


def _webhook(row: WebhookRow, secret: str = "") -> webhook_pb2.Webhook:
    return webhook_pb2.Webhook(
        id=row.id,
        url=row.url,
        event_types=[webhook_pb2.EventType.ValueType(t) for t in row.event_types],
        secret=secret,
        disabled=row.disabled,
        create_time=convert.timestamp(row.created_at),
        description=row.description,
    )


def _delivery(row: DeliveryRow) -> webhook_pb2.WebhookDelivery:
    return webhook_pb2.WebhookDelivery(
        id=str(row.id),
        event_id=str(row.event_id),
        event_type=webhook_pb2.EventType.ValueType(row.event_type),
        attempts=row.attempts,
        last_http_status=row.last_http_status,
        state=webhook_pb2.DeliveryState.ValueType(row.state),
        next_attempt_time=convert.timestamp(row.next_attempt_at if row.state == 1 else None),
    )


class WebhookServicer(webhook_pb2_grpc.WebhookServiceServicer):
    def __init__(
        self,
        store: PgWebhookStore,
        keys: CodeKeys,
        *,
        allow_insecure: bool,
        on_created: Callable[[], None] | None = None,
    ) -> None:
        self._store = store
        self._keys = keys
        self._allow_insecure = allow_insecure
        # Told of each new endpoint (the gateway starts its delivery process then).
        self._on_created = on_created

    async def _own(self, webhook_id: int, field: str = "id") -> WebhookRow:
        row = await self._store.get(current_caller().account_id, webhook_id)
        if row is None:
            raise NotFound(f"webhook {webhook_id} not found", reason="WEBHOOK_NOT_FOUND")
        return row

    async def CreateWebhook(
        self, request: webhook_pb2.CreateWebhookRequest, context: Context
    ) -> webhook_pb2.Webhook:
        caller = current_caller()
        violations = []
        types = sorted(set(request.event_types))
        if not types:
            violations.append(FieldViolation("event_types", "at least one event type"))
        elif unsupported := [t for t in types if t not in SUPPORTED_EVENT_TYPES]:
            names = ", ".join(_event_type_name(t) for t in unsupported)
            violations.append(
                FieldViolation(
                    "event_types",
                    f"not available yet: {names}; EVENT_TYPE_MESSAGE_STATUS, "
                    "EVENT_TYPE_BATCH_STATUS, EVENT_TYPE_VERIFICATION, "
                    "EVENT_TYPE_INBOUND_MESSAGE and EVENT_TYPE_SUPPRESSION are delivered",
                )
            )
        if len(request.description) > MAX_DESCRIPTION:
            violations.append(
                FieldViolation("description", f"at most {MAX_DESCRIPTION} characters")
            )
        elif not storable(request.description):
            violations.append(FieldViolation("description", NUL_DESCRIPTION))
        if not storable(request.url):
            violations = [FieldViolation("url", NUL_DESCRIPTION), *violations]
        else:
            try:
                await check_url(request.url, allow_insecure=self._allow_insecure)
            except InvalidArgument as exc:
                violations = exc.violations + violations
        if violations:
            raise InvalidArgument(violations)
        secret = webhook_signing.new_secret()
        row = await self._store.create(
            caller.account_id,
            request.url,
            [int(t) for t in types],
            request.description,
            self._keys.seal(secret),
        )
        if self._on_created is not None:
            self._on_created()
        return _webhook(row, secret)

    async def GetWebhook(
        self, request: webhook_pb2.GetWebhookRequest, context: Context
    ) -> webhook_pb2.Webhook:
        return _webhook(await self._own(request.id))

    async def ListWebhooks(
        self, request: webhook_pb2.ListWebhooksRequest, context: Context
    ) -> webhook_pb2.ListWebhooksResponse:
        size = page_size(request.page_size)
        (after,) = decode_page_token(request.page_token, "webhooks", shape=(int,)) or (0,)
        rows = await self._store.list_page(current_caller().account_id, int(after), size + 1)
        more = len(rows) > size
        rows = rows[:size]
        return webhook_pb2.ListWebhooksResponse(
            webhooks=[_webhook(r) for r in rows],
            next_page_token=encode_page_token("webhooks", [rows[-1].id]) if more else "",
        )

    async def DeleteWebhook(
        self, request: webhook_pb2.DeleteWebhookRequest, context: Context
    ) -> empty_pb2.Empty:
        if not await self._store.delete(current_caller().account_id, request.id):
            raise NotFound(f"webhook {request.id} not found", reason="WEBHOOK_NOT_FOUND")
        return empty_pb2.Empty()

    async def ListWebhookDeliveries(
        self, request: webhook_pb2.ListWebhookDeliveriesRequest, context: Context
    ) -> webhook_pb2.ListWebhookDeliveriesResponse:
        size = page_size(request.page_size)
        scope = f"webhook-deliveries:{request.webhook_id}"
        (before,) = decode_page_token(request.page_token, scope, shape=(int,)) or (_INT64_MAX,)
        hook = await self._own(request.webhook_id, "webhook_id")
        rows = await self._store.deliveries_page(hook.id, int(before), size + 1)
        more = len(rows) > size
        rows = rows[:size]
        return webhook_pb2.ListWebhookDeliveriesResponse(
            deliveries=[_delivery(r) for r in rows],
            next_page_token=encode_page_token(scope, [rows[-1].id]) if more else "",
        )

    async def RedeliverWebhookEvents(
        self, request: webhook_pb2.RedeliverWebhookEventsRequest, context: Context
    ) -> webhook_pb2.RedeliverWebhookEventsResponse:
        violations = [
            FieldViolation(name, "required")
            for name in ("start_time", "end_time")
            if not request.HasField(name)
        ]
        if violations:
            raise InvalidArgument(violations)
        start = convert.from_timestamp(request.start_time, "start_time")
        end = convert.from_timestamp(request.end_time, "end_time")
        if end <= start:
            raise InvalidArgument.field("end_time", "must be after start_time")
        hook = await self._own(request.webhook_id, "webhook_id")
        count = await self._store.redeliver(hook.id, hook.account_id, start, end)
        return webhook_pb2.RedeliverWebhookEventsResponse(count=count)
