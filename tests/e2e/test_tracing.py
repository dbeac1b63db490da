"""OpenTelemetry: a SendMessage is one trace from the gRPC call through its database
queries; the dispatch of that message is a span around the provider's HTTP request;
log lines carry the trace id. Spans are kept in memory to be read back."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import logging
from collections.abc import AsyncIterator

import grpc
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from sms.v1 import common_pb2, message_pb2

from server.app import Gateway
from server.emulators.common import RunningEmulator
from server.logs import JsonFormatter
from server.routes_file import RouteSpec, RoutingConfig
from server.tracing import TracingConfigError, mode_from_env
from tests.conftest import DatabaseFactory
from tests.e2e.conftest import FAST, Running, final_state, wait_for
from tests.e2e.emulated import sky, start_skynoo

CN = "+8613800138000"


@pytest.fixture
async def traced(
    databases: DatabaseFactory,
) -> AsyncIterator[tuple[Running, InMemorySpanExporter, str]]:
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    emulators: list[RunningEmulator] = []
    emulator = await start_skynoo(emulators, delivery_delay=0.1)
    settings = dataclasses.replace(
        FAST,
        database_url=await databases.new(migrate=False),
        routing=RoutingConfig((sky(emulator),), (RouteSpec(("sky",)),)),
        poll_interval_seconds=0.2,
    )
    gateway = Gateway(settings, tracer_provider=provider)
    await gateway.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{gateway.grpc_port}")
    try:
        yield Running(gateway, channel), spans, emulator.base_url
    finally:
        await channel.close()
        await gateway.stop()
        await emulator.stop()


def by_trace(spans: list[ReadableSpan], trace_id: int) -> list[ReadableSpan]:
    return [s for s in spans if s.context is not None and s.context.trace_id == trace_id]


async def test_a_send_is_traced_from_the_call_to_the_provider(
    traced: tuple[Running, InMemorySpanExporter, str],
) -> None:
    running, exporter, provider_url = traced
    client = await running.client()
    logs = io.StringIO()
    handler = logging.StreamHandler(logs)
    handler.setFormatter(JsonFormatter())
    logging.getLogger("server").addHandler(handler)
    previous = logging.getLogger("server").level
    logging.getLogger("server").setLevel(logging.DEBUG)
    try:
        reply = await client.messages.SendMessage(
            message_pb2.SendMessageRequest(
                mobile=CN, use_type=common_pb2.USE_TYPE_NOTIFICATION, text="Traced."
            ),
            metadata=client.metadata,
        )
        state = await final_state(client, reply.id)
    finally:
        logging.getLogger("server").removeHandler(handler)
        logging.getLogger("server").setLevel(previous)
    assert state.status == common_pb2.MESSAGE_STATUS_DELIVERED

    spans = list(exporter.get_finished_spans())
    [call] = [s for s in spans if s.name == "/sms.v1.MessageService/SendMessage"]
    assert call.kind == SpanKind.SERVER
    assert call.context is not None
    in_call = by_trace(spans, call.context.trace_id)
    queries = [s for s in in_call if s.kind == SpanKind.CLIENT and s is not call]
    assert queries, "the INSERT of the message is a span inside the call's trace"
    assert all(s.attributes and "db.system" in str(dict(s.attributes)) for s in queries)

    async def dispatched() -> bool:
        return any(
            s.name == "dispatch" and s.attributes and s.attributes["smsgw.message_id"] == reply.id
            for s in exporter.get_finished_spans()
        )

    await wait_for(dispatched, within=5)
    spans = list(exporter.get_finished_spans())
    [dispatch] = [
        s
        for s in spans
        if s.name == "dispatch" and s.attributes and s.attributes["smsgw.message_id"] == reply.id
    ]
    assert dispatch.context is not None
    http = [
        s
        for s in by_trace(spans, dispatch.context.trace_id)
        if s.kind == SpanKind.CLIENT
        and s.parent is not None
        and s.parent.span_id == dispatch.context.span_id
    ]
    assert http, "the provider's HTTP request is a child of the dispatch span"
    urls = [
        str((s.attributes or {}).get("http.url") or (s.attributes or {}).get("url.full"))
        for s in http
    ]
    assert any(u.startswith(provider_url.rstrip("/")) for u in urls), urls
    assert not any("?" in u for u in urls)  # no query strings (signatures) in spans

    # The DEBUG line written while accepting the message names the call's trace.
    accepted = [
        json.loads(line)
        for line in logs.getvalue().splitlines()
        if json.loads(line).get("message_id") == reply.id and "accepted" in line
    ]
    assert accepted and accepted[0]["trace_id"] == format(call.context.trace_id, "032x")


def test_tracing_mode_is_checked() -> None:
    assert mode_from_env({}) == "off"
    assert mode_from_env({"SMSGW_TRACING": "OTLP"}) == "otlp"
    with pytest.raises(TracingConfigError):
        mode_from_env({"SMSGW_TRACING": "jaeger"})


async def test_without_tracing_nothing_is_instrumented(gw: Running) -> None:
    import asyncpg

    assert not hasattr(asyncpg.Connection.execute, "__wrapped__")
    await asyncio.sleep(0)
