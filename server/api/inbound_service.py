"""sms.v1.InboundService: the account's inbound messages, listed and streamed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
from sms.v1 import inbound_pb2, inbound_pb2_grpc

from server.api import convert
from server.api.context import current_caller
from server.domain.inbound import InboundMessage, InboundMessages
from server.status.inbound_watch import InboundWatcher

Context = grpc.aio.ServicerContext[Any, Any]


def inbound_message(message: InboundMessage) -> inbound_pb2.InboundMessage:
    return inbound_pb2.InboundMessage(
        id=message.id,
        event_id=message.event_id,
        from_number=message.from_number,
        to=message.to_number,
        text=message.text,
        provider=message.provider,
        keyword=str(message.keyword),
        received_at=convert.timestamp(message.received_at),
        reply_to_message_id=message.reply_to_message_id,
    )


class InboundServicer(inbound_pb2_grpc.InboundServiceServicer):
    def __init__(self, messages: InboundMessages, watcher: InboundWatcher) -> None:
        self._messages = messages
        self._watcher = watcher

    async def ListInboundMessages(
        self, request: inbound_pb2.ListInboundMessagesRequest, context: Context
    ) -> inbound_pb2.ListInboundMessagesResponse:
        page = await self._messages.list(
            current_caller().account_id, request.page_size, request.page_token
        )
        return inbound_pb2.ListInboundMessagesResponse(
            inbound_messages=[inbound_message(m) for m in page.messages],
            next_page_token=page.next_page_token,
        )

    async def WatchInboundMessages(
        self, request: inbound_pb2.WatchInboundMessagesRequest, context: Context
    ) -> AsyncIterator[inbound_pb2.InboundMessage]:
        async for message in self._watcher.watch(
            current_caller().account_id, request.after_event_id
        ):
            yield inbound_message(message)
