"""BatchService calls the batch tests share."""

from __future__ import annotations

from sms.v1 import batch_pb2, common_pb2

from tests.e2e.conftest import Client, wait_for

S = common_pb2


def numbers(n: int, start: int = 0) -> list[str]:
    return [f"+86138{i:08d}" for i in range(start, start + n)]


async def create(client: Client, **fields: object) -> batch_pb2.CreateBatchResponse:
    fields.setdefault("use_type", S.USE_TYPE_NOTIFICATION)
    return await client.batches.CreateBatch(
        batch_pb2.CreateBatchRequest(**fields),  # type: ignore[arg-type]
        metadata=client.metadata,
    )


async def get(client: Client, task_id: str) -> batch_pb2.Batch:
    return await client.batches.GetBatch(
        batch_pb2.GetBatchRequest(task_id=task_id), metadata=client.metadata
    )


async def final(client: Client, task_id: str, within: float = 30) -> batch_pb2.Batch:
    result: list[batch_pb2.Batch] = []

    async def done() -> bool:
        batch = await get(client, task_id)
        result[:] = [batch]
        return batch.status in (
            S.BATCH_STATUS_SUCCEEDED,
            S.BATCH_STATUS_FAILED,
            S.BATCH_STATUS_CANCELLED,
        )

    await wait_for(done, within=within, interval=0.1)
    return result[0]
