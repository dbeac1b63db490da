"""sms.v1.MessageService."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
from sms.v1 import common_pb2, message_pb2, message_pb2_grpc

from server.api import convert
from server.api.context import current_caller
from server.domain.messaging import Messaging, SendCommand
from server.domain.models import UseType
from server.status.watch import StatusWatcher

Context = grpc.aio.ServicerContext[Any, Any]
ENCODED_EVENTS_KEPT = 16_384


class MessageServicer(message_pb2_grpc.MessageServiceServicer):
    def __init__(self, messaging: Messaging, watcher: StatusWatcher) -> None:
        self._messaging = messaging
        self._watcher = watcher
        # Serialized events by event id (ids of this gateway's database never repeat,
        # events never change). Every watching stream of an account sends the same
        # event: it is built and serialized once, not once per stream (profiled: with
        # 100 streams an account that was a tenth of the server's time). Emptied when
        # full, which only costs a rebuild.
        self._encoded: dict[int, bytes] = {}

    async def SendMessage(
        self, request: message_pb2.SendMessageRequest, context: Context
    ) -> message_pb2.SendMessageResponse:
        content = request.WhichOneof("content")
        result = await self._messaging.send(
            current_caller(),
            SendCommand(
                mobile=request.mobile,
                use_type=convert.enum_value(UseType, request.use_type, UseType.UNSPECIFIED),
                text=request.text if content == "text" else None,
                template_id=request.template_id if content == "template_id" else None,
                data=dict(request.data),
                request_id=request.request_id,
                send_at=convert.from_timestamp(request.send_at, "send_at")
                if request.HasField("send_at")
                else None,
                reference=request.reference,
                metadata=dict(request.metadata),
                validity=convert.validity(request.validity)
                if request.HasField("validity")
                else None,
                smart_encoding=request.smart_encoding,
            ),
        )
        return message_pb2.SendMessageResponse(
            id=result.id,
            to_number=result.to_number,
            status=common_pb2.MessageStatus.ValueType(int(result.status)),
            segments=result.segments,
        )

    async def GetMessageStatus(
        self, request: message_pb2.GetMessageStatusRequest, context: Context
    ) -> message_pb2.GetMessageStatusResponse:
        found, missing = await self._messaging.get_status(current_caller(), list(request.ids))
        return message_pb2.GetMessageStatusResponse(
            messages=[convert.message_state(s) for s in found], not_found_ids=missing
        )

    # Yields each MessageStatusEvent already serialized (one encoding shared by every
    # stream that sends it); the interceptor's serializer passes bytes through.
    async def WatchMessageStatus(  # type: ignore[override]
        self, request: message_pb2.WatchMessageStatusRequest, context: Context
    ) -> AsyncIterator[bytes]:
        caller = current_caller()
        async for event in self._watcher.watch(
            caller.account_id, list(request.ids), request.after_event_id
        ):
            encoded = self._encoded.get(event.event_id)
            if encoded is None:
                if len(self._encoded) >= ENCODED_EVENTS_KEPT:
                    self._encoded.clear()
                encoded = convert.status_event(event).SerializeToString()
                self._encoded[event.event_id] = encoded
            yield encoded
