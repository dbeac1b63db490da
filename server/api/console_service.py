"""sms.v1.ConsoleService: the operator console's reads (server/domain/console.py)."""

from __future__ import annotations

from typing import Any

import grpc
from sms.v1 import common_pb2, console_pb2, console_pb2_grpc

from server.api import convert
from server.api.batch_service import batch_message
from server.api.context import current_caller
from server.domain.console import ConsoleMessage, ConsoleViews

Context = grpc.aio.ServicerContext[Any, Any]


def console_message(m: ConsoleMessage) -> console_pb2.ConsoleMessage:
    return console_pb2.ConsoleMessage(
        state=convert.message_state(m.state),
        account_id=m.account_id,
        batch_id=m.batch_id or "",
        create_time=convert.timestamp(m.created_at),
        send_time=convert.timestamp(m.sent_at),  # unset before the message is sent
        segments=m.state.segments,
        attempts=m.attempts,
        use_type=common_pb2.UseType.ValueType(int(m.use_type)),
    )


class ConsoleServicer(console_pb2_grpc.ConsoleServiceServicer):
    def __init__(self, views: ConsoleViews) -> None:
        self._views = views

    async def ListBatches(
        self, request: console_pb2.ListBatchesRequest, context: Context
    ) -> console_pb2.ListBatchesResponse:
        page = await self._views.batches(
            current_caller(), request.page_size, request.page_token, request.account_id
        )
        return console_pb2.ListBatchesResponse(
            batches=[
                console_pb2.ConsoleBatch(batch=batch_message(b.batch), account_id=b.account_id)
                for b in page.batches
            ],
            next_page_token=page.next_page_token,
        )

    async def SearchMessages(
        self, request: console_pb2.SearchMessagesRequest, context: Context
    ) -> console_pb2.SearchMessagesResponse:
        found = await self._views.search(
            current_caller(), request.query, request.page_size, request.account_id
        )
        return console_pb2.SearchMessagesResponse(messages=[console_message(m) for m in found])

    async def GetMessageHistory(
        self, request: console_pb2.GetMessageHistoryRequest, context: Context
    ) -> console_pb2.GetMessageHistoryResponse:
        message, events = await self._views.history(current_caller(), request.id)
        return console_pb2.GetMessageHistoryResponse(
            message=console_message(message), events=[convert.status_event(e) for e in events]
        )
