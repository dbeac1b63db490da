"""An unexpected failure answers INTERNAL with only the request id, logged once."""

from __future__ import annotations

import logging

import grpc
import pytest
from sms.v1 import template_pb2

from tests.e2e.conftest import GatewayFactory


async def test_unexpected_error_is_internal_and_logged_once_with_request_id(
    start_gateway: GatewayFactory, caplog: pytest.LogCaptureFixture
) -> None:
    running = await start_gateway()
    client = await running.client()
    await running.gateway.pool.execute("DROP TABLE templates")  # break the server for real
    caplog.set_level(logging.ERROR)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await client.templates.GetTemplate(
            template_pb2.GetTemplateRequest(id=1),
            metadata=(*client.metadata, ("x-request-id", "req-abc-123")),
        )
    assert caught.value.code() == grpc.StatusCode.INTERNAL
    assert caught.value.details() == "internal error; request id req-abc-123"
    assert "templates" not in (caught.value.details() or "")
    records = [r for r in caplog.records if "req-abc-123" in r.getMessage()]
    assert len(records) == 1
    assert records[0].exc_info is not None
