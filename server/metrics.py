"""Prometheus metrics of one gateway, served at ``GET /metrics`` on the HTTP port.

Each Gateway has its own registry (not the process-wide default), so several gateways
in one process (tests) keep separate figures. Counters and histograms are updated where
things happen (the interceptor, dispatch, the outbox); the breaker states, the open
streams and the outbox backlog are read when Prometheus scrapes, so they are always
current.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable, Iterable, Mapping

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from server.dispatch.breaker import CLOSED, HALF_OPEN, OPEN
from server.domain.models import MessageStatus

log = logging.getLogger(__name__)

CONTENT_TYPE = CONTENT_TYPE_LATEST
BREAKER_VALUES = {CLOSED: 0, HALF_OPEN: 1, OPEN: 2}
# How long the scrape may wait for the outbox backlog query before leaving it out.
BACKLOG_TIMEOUT = 1.0
BACKLOG_STATUSES = (MessageStatus.PENDING, MessageStatus.QUEUED)

RPC_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
PROVIDER_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class RpcRecorder:
    """One method's request counter (a child per status code) and latency histogram:
    the label lookups are done once, not on every call."""

    __slots__ = ("_codes", "_counter", "_duration", "_method")

    def __init__(self, counter: Counter, duration: Histogram, method: str) -> None:
        self._counter = counter
        self._method = method
        self._duration = duration.labels(method)
        self._codes: dict[str, Counter] = {}

    def done(self, code: str, seconds: float) -> None:
        child = self._codes.get(code)
        if child is None:
            child = self._codes[code] = self._counter.labels(self._method, code)
        child.inc()
        self._duration.observe(seconds)


class _BreakerCollector(Collector):
    """``smsgw_breaker_state`` from the providers in use, read at scrape time."""

    def __init__(self, states: Callable[[], Mapping[str, str]]) -> None:
        self._states = states

    def _family(self) -> GaugeMetricFamily:
        return GaugeMetricFamily(
            "smsgw_breaker_state",
            "Circuit breaker state per provider: 0 closed, 1 half-open, 2 open.",
            labels=["provider"],
        )

    def describe(self) -> Iterable[Metric]:
        return [self._family()]

    def collect(self) -> Iterable[Metric]:
        family = self._family()
        for provider, state in sorted(self._states().items()):
            family.add_metric([provider], BREAKER_VALUES.get(state, 0))
        return [family]


class GatewayMetrics:
    def __init__(self, process_index: int = 0) -> None:
        self.registry = registry = CollectorRegistry()
        # Which process answers this scrape: with SMSGW_PROCESSES > 1 every process
        # has its own figures, and the port hands a scrape to any one of them.
        Gauge(
            "smsgw_process",
            "Always 1: the serve process answering this scrape (index among "
            "SMSGW_PROCESSES, operating-system pid); every other figure is this process's.",
            ("index", "pid"),
            registry=registry,
        ).labels(str(process_index), str(os.getpid())).set(1)
        self.rpc_requests = Counter(
            "smsgw_rpc_requests",
            "gRPC calls answered, by full method name and status code.",
            ("method", "code"),
            registry=registry,
        )
        self.rpc_duration = Histogram(
            "smsgw_rpc_duration_seconds",
            "Time from a call's start to its answer (a stream: to its end), by method.",
            ("method",),
            buckets=RPC_BUCKETS,
            registry=registry,
        )
        self.messages = Counter(
            "smsgw_messages",
            "Message status changes recorded after acceptance (QUEUED, SENT, DELIVERED, "
            "FAILED, ...), by new status and provider.",
            ("status", "provider"),
            registry=registry,
        )
        self.provider_duration = Histogram(
            "smsgw_provider_request_duration_seconds",
            "Time a provider took to answer a request (a bulk request counts once), by provider.",
            ("provider",),
            buckets=PROVIDER_BUCKETS,
            registry=registry,
        )
        self.provider_errors = Counter(
            "smsgw_provider_errors",
            "Sends a provider did not accept (failures and refusals), by provider and error code.",
            ("provider", "error_code"),
            registry=registry,
        )
        self.rate_limited = Counter(
            "smsgw_rate_limited",
            "Calls refused with RESOURCE_EXHAUSTED, by the quota's reason.",
            ("quota",),
            registry=registry,
        )
        self.outbox_backlog = Gauge(
            "smsgw_outbox_backlog",
            "Messages waiting in the outbox (all replicas), by status.",
            ("status",),
            registry=registry,
        )
        self.open_streams = Gauge(
            "smsgw_open_streams",
            "Server streams open on this replica (WatchMessageStatus, WatchBatch).",
            registry=registry,
        )
        self.webhook_deliveries = Counter(
            "smsgw_webhook_deliveries",
            "Webhook delivery attempts by result: succeeded, retried, failed (gave up), "
            "gone (410: endpoint disabled).",
            ("result",),
            registry=registry,
        )
        self.webhook_backlog = Gauge(
            "smsgw_webhook_backlog",
            "Webhook deliveries pending (all replicas).",
            registry=registry,
        )
        self.webhook_oldest_pending = Gauge(
            "smsgw_webhook_oldest_pending_seconds",
            "Age of the oldest pending webhook delivery (all replicas); 0 when none.",
            registry=registry,
        )
        self._backlog: Callable[[], Awaitable[Mapping[MessageStatus, int]]] | None = None
        self._webhook_backlog: Callable[[], Awaitable[tuple[int, float]]] | None = None

    def rpc(self, method: str) -> RpcRecorder:
        return RpcRecorder(self.rpc_requests, self.rpc_duration, method)

    def count_streams(self, count: Callable[[], int]) -> None:
        self.open_streams.set_function(count)

    def watch_breakers(self, states: Callable[[], Mapping[str, str]]) -> None:
        self.registry.register(_BreakerCollector(states))

    def watch_backlog(self, backlog: Callable[[], Awaitable[Mapping[MessageStatus, int]]]) -> None:
        self._backlog = backlog

    def watch_webhook_backlog(self, backlog: Callable[[], Awaitable[tuple[int, float]]]) -> None:
        self._webhook_backlog = backlog

    def message_changes(self, changes: Iterable[tuple[MessageStatus, str, int]]) -> None:
        """Counts recorded status changes given as (new status, provider, how many)."""
        for status, provider, count in changes:
            self.messages.labels(status.name, provider).inc(count)

    async def render(self) -> bytes:
        """The exposition in the Prometheus text format. The backlog is queried first;
        if the database does not answer in time it is left out, not the scrape."""
        if self._backlog is not None:
            try:
                async with asyncio.timeout(BACKLOG_TIMEOUT):
                    backlog = await self._backlog()
            except Exception as exc:
                log.debug("outbox backlog left out of the scrape (%s)", type(exc).__name__)
                self.outbox_backlog.clear()
            else:
                for status in BACKLOG_STATUSES:
                    self.outbox_backlog.labels(status.name).set(backlog.get(status, 0))
        if self._webhook_backlog is not None:
            try:
                async with asyncio.timeout(BACKLOG_TIMEOUT):
                    pending, oldest = await self._webhook_backlog()
            except Exception as exc:
                log.debug("webhook backlog left out of the scrape (%s)", type(exc).__name__)
            else:
                self.webhook_backlog.set(pending)
                self.webhook_oldest_pending.set(oldest)
        return generate_latest(self.registry)
