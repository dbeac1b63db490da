"""sms.v1.BatchService."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

import grpc
from sms.v1 import batch_pb2, batch_pb2_grpc, common_pb2

from server.api import convert
from server.api.batch_wire import LargeCreateBatch
from server.api.context import current_caller
from server.domain.batch_tasks import Batches, BatchRecord, CreateBatchCommand
from server.domain.models import UseType

Context = grpc.aio.ServicerContext[Any, Any]


def batch_message(b: BatchRecord) -> batch_pb2.Batch:
    return batch_pb2.Batch(
        task_id=b.id,
        status=common_pb2.BatchStatus.ValueType(b.status),
        total=b.total,
        sent=b.sent,
        delivered=b.delivered,
        failed=b.failed,
        created_at=convert.timestamp(b.created_at),
        updated_at=convert.timestamp(b.updated_at),
        reference=b.reference,
        metadata=b.metadata,
    )


class TemplateDataView(Mapping[str, Mapping[str, str]]):
    """``CreateBatchRequest.template_data`` read as number -> values, without a copy.

    A message-valued protobuf map creates an entry when a missing key is read, so
    every read checks the key first."""

    def __init__(self, data: Any) -> None:
        self._data = data

    def __getitem__(self, key: str) -> Mapping[str, str]:
        if key not in self._data:
            raise KeyError(key)
        values: Mapping[str, str] = self._data[key].values
        return values

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)


def command_of(request: batch_pb2.CreateBatchRequest | LargeCreateBatch) -> CreateBatchCommand:
    """The domain's command for a request; of a large one, its header and its bytes
    (a preparation process decodes its numbers and values)."""
    wire: bytes | None = None
    template_data: Mapping[str, Mapping[str, str]]
    # A CreateBatchHeader reads as a CreateBatchRequest (every field but one).
    message: batch_pb2.CreateBatchRequest
    if isinstance(request, LargeCreateBatch):
        wire, message = request.wire, request.header
        template_data = {}
    else:
        message = request
        template_data = TemplateDataView(request.template_data)
    source = message.WhichOneof("source")
    return CreateBatchCommand(
        use_type=convert.enum_value(UseType, message.use_type, UseType.UNSPECIFIED),
        # Views of the request, not copies: a refused large batch (no slot) costs
        # nothing more, and an accepted one is read a slice at a time.
        numbers=message.numbers,
        content=message.content if source == "content" else None,
        template_id=message.template_id if source == "template_id" else None,
        template_data=template_data,
        request_id=message.request_id,
        send_at=convert.from_timestamp(message.send_at, "send_at")
        if message.HasField("send_at")
        else None,
        reference=message.reference,
        metadata=dict(message.metadata),
        validity=convert.validity(message.validity) if message.HasField("validity") else None,
        smart_encoding=message.smart_encoding,
        wire=wire,
    )


class BatchServicer(batch_pb2_grpc.BatchServiceServicer):
    def __init__(self, batches: Batches) -> None:
        self._batches = batches

    async def CreateBatch(
        self, request: batch_pb2.CreateBatchRequest | LargeCreateBatch, context: Context
    ) -> batch_pb2.CreateBatchResponse:
        batch = await self._batches.create(current_caller(), command_of(request))
        return batch_pb2.CreateBatchResponse(
            task_id=batch.id,
            status=common_pb2.BatchStatus.ValueType(batch.status),
            accepted_count=batch.total,
            rejected=[batch_pb2.RejectedNumber(number=n, reason=r) for n, r in batch.rejected],
        )

    async def GetBatch(
        self, request: batch_pb2.GetBatchRequest, context: Context
    ) -> batch_pb2.Batch:
        return batch_message(await self._batches.get(current_caller(), request.task_id))

    async def ListBatchMessages(
        self, request: batch_pb2.ListBatchMessagesRequest, context: Context
    ) -> batch_pb2.ListBatchMessagesResponse:
        page = await self._batches.messages(
            current_caller(), request.task_id, request.page_size, request.page_token
        )
        rows = page.messages
        return batch_pb2.ListBatchMessagesResponse(
            messages=[
                batch_pb2.BatchMessage(
                    id=r.id,
                    to_number=r.to_number,
                    status=common_pb2.MessageStatus.ValueType(int(r.status)),
                    error_code=r.error_code,
                    send_time=convert.timestamp(r.sent_at),
                    reference=page.reference,
                    metadata=page.metadata,
                )
                for r in rows
            ],
            total_size=page.total_size,
            next_page_token=page.next_page_token,
        )

    async def WatchBatch(
        self, request: batch_pb2.WatchBatchRequest, context: Context
    ) -> AsyncIterator[batch_pb2.Batch]:
        async for batch in self._batches.watch(current_caller(), request.task_id):
            yield batch_message(batch)

    async def CancelBatch(
        self, request: batch_pb2.CancelBatchRequest, context: Context
    ) -> batch_pb2.Batch:
        return batch_message(await self._batches.cancel(current_caller(), request.task_id))
