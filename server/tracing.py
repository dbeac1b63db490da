"""OpenTelemetry tracing, off unless configured.

``SMSGW_TRACING=otlp`` exports spans over OTLP/HTTP to the collector the standard
``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) names;
``console`` writes them to stderr (for a look by hand). When on:

- every gRPC call is a server span (opentelemetry-instrumentation-grpc's aio server
  interceptor, placed before ours so that authentication and limits are inside it);
- every asyncpg query is a client span (statements only, never their values);
- every provider HTTP request is a client span (the URL without its query string,
  where some providers put signatures; no headers);
- each message the dispatcher hands to a provider is a ``dispatch`` span around that
  request, with the message id;
- log lines carry the ``trace_id`` and ``span_id`` of the span they were written in.

Instrumenting asyncpg and aiohttp patches those libraries for the whole process, so a
process has one ``Tracing`` at a time; ``close`` undoes it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from opentelemetry import trace

if TYPE_CHECKING:  # the SDK is imported only when tracing is on (start-up time)
    from opentelemetry.sdk.trace import TracerProvider

MODES = ("off", "otlp", "console")


class TracingConfigError(ValueError):
    pass


def mode_from_env(env: Mapping[str, str]) -> str:
    mode = env.get("SMSGW_TRACING", "off").strip().lower() or "off"
    if mode not in MODES:
        raise TracingConfigError(f"SMSGW_TRACING must be one of {', '.join(MODES)}, not {mode!r}")
    return mode


def provider_for(mode: str) -> TracerProvider | None:
    """A TracerProvider exporting as ``mode`` says, or None when tracing is off."""
    if mode == "off":
        return None
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    provider = TracerProvider(resource=Resource.create({"service.name": "smsgw"}))
    if mode == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    else:
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    return provider


@dataclass
class Tracing:
    """The instrumentation of one running gateway."""

    provider: TracerProvider
    owns_provider: bool = True  # shut it down on close (not one a test passed in)

    def start(self) -> None:
        from opentelemetry.instrumentation.aiohttp_client import AioHttpClientInstrumentor
        from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor

        AsyncPGInstrumentor().instrument(tracer_provider=self.provider)  # type: ignore[no-untyped-call]
        AioHttpClientInstrumentor().instrument(
            tracer_provider=self.provider, url_filter=_without_query
        )

    def server_interceptor(self) -> Any:
        from opentelemetry.instrumentation.grpc import aio_server_interceptor

        return aio_server_interceptor(tracer_provider=self.provider)  # type: ignore[no-untyped-call]

    def close(self) -> None:
        from opentelemetry.instrumentation.aiohttp_client import AioHttpClientInstrumentor
        from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor

        AsyncPGInstrumentor().uninstrument()  # type: ignore[no-untyped-call]
        AioHttpClientInstrumentor().uninstrument()
        if self.owns_provider:
            self.provider.shutdown()
        else:
            self.provider.force_flush()


def _without_query(url: Any) -> str:
    return str(url.with_query(None))


@contextmanager
def dispatch_span(tracing: Tracing | None, message_id: str, provider: str) -> Iterator[None]:
    """A span around handing one message to a provider (nothing when tracing is off)."""
    if tracing is None:
        yield
        return
    tracer = tracing.provider.get_tracer("smsgw.dispatch")
    with tracer.start_as_current_span(
        "dispatch",
        kind=trace.SpanKind.INTERNAL,
        attributes={"smsgw.message_id": message_id, "smsgw.provider": provider},
    ):
        yield
