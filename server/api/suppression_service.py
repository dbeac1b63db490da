"""sms.v1.SuppressionService."""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf import empty_pb2
from sms.v1 import common_pb2, suppression_pb2, suppression_pb2_grpc

from server.api import convert
from server.api.context import current_caller
from server.domain.suppression import Suppression, Suppressions

Context = grpc.aio.ServicerContext[Any, Any]


def _suppression(row: Suppression) -> suppression_pb2.Suppression:
    return suppression_pb2.Suppression(
        mobile=row.mobile,
        reason=suppression_pb2.SuppressionReason.ValueType(row.reason),
        use_types=[common_pb2.UseType.ValueType(t) for t in row.use_types],
        create_time=convert.timestamp(row.created_at),
    )


class SuppressionServicer(suppression_pb2_grpc.SuppressionServiceServicer):
    def __init__(self, suppressions: Suppressions) -> None:
        self._suppressions = suppressions

    async def AddSuppressions(
        self, request: suppression_pb2.AddSuppressionsRequest, context: Context
    ) -> suppression_pb2.AddSuppressionsResponse:
        rows = await self._suppressions.add(
            current_caller().account_id,
            list(request.mobiles),
            int(request.reason),
            [int(t) for t in request.use_types],
        )
        return suppression_pb2.AddSuppressionsResponse(suppressions=[_suppression(r) for r in rows])

    async def RemoveSuppression(
        self, request: suppression_pb2.RemoveSuppressionRequest, context: Context
    ) -> empty_pb2.Empty:
        await self._suppressions.remove(current_caller().account_id, request.mobile)
        return empty_pb2.Empty()

    async def GetSuppression(
        self, request: suppression_pb2.GetSuppressionRequest, context: Context
    ) -> suppression_pb2.Suppression:
        return _suppression(
            await self._suppressions.get(current_caller().account_id, request.mobile)
        )

    async def ListSuppressions(
        self, request: suppression_pb2.ListSuppressionsRequest, context: Context
    ) -> suppression_pb2.ListSuppressionsResponse:
        page = await self._suppressions.list(
            current_caller().account_id, request.page_size, request.page_token
        )
        return suppression_pb2.ListSuppressionsResponse(
            suppressions=[_suppression(r) for r in page.suppressions],
            next_page_token=page.next_page_token,
        )
