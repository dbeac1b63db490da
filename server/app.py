"""The composition root: builds every part from Settings, starts and stops them in order.
It holds no behaviour of its own: each part lives where it serves (health in
server/health.py, webhooks in server/http/, maintenance in server/store/, listening
sockets in server/listen.py, provider reloads in dispatch/provider_set.py).

Start: database (embedded unless DATABASE_URL) -> migrations (unless a process of
SMSGW_PROCESSES: its parent ran them, server/processes.py) -> status hub ->
receipts, providers, dispatcher, poller -> maintenance -> gRPC server -> health
SERVING (and its watchdog) -> HTTP server. Stop: health NOT_SERVING -> open streams
end (UNAVAILABLE) -> gRPC drain and dispatcher drain, side by side within one grace
-> poller, maintenance, watchdog -> providers -> receipts flushed -> hub -> HTTP ->
pool -> database.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import logging
import secrets
import shutil
import tempfile
import time
from collections.abc import Awaitable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import asyncpg
import grpc
from aiohttp import web
from sms.v1 import (
    account_pb2_grpc,
    batch_pb2_grpc,
    console_pb2_grpc,
    inbound_pb2_grpc,
    message_pb2_grpc,
    suppression_pb2_grpc,
    template_pb2_grpc,
    verification_pb2_grpc,
    webhook_pb2_grpc,
)

from server.aio import wait_event
from server.api.account_service import AccountServicer
from server.api.batch_prep import PREPARATION_PROCESSES, ProcessPreparer
from server.api.batch_service import BatchServicer
from server.api.batch_wire import decode_create_batch
from server.api.console_service import ConsoleServicer
from server.api.inbound_service import InboundServicer
from server.api.interceptors import GatewayInterceptor
from server.api.message_service import MessageServicer
from server.api.server import SERVICE_NAMES, enable_reflection, grpc_server
from server.api.suppression_service import SuppressionServicer
from server.api.template_service import TemplateServicer
from server.api.verification_service import VerificationServicer
from server.api.webhook_service import WebhookServicer
from server.config import Settings
from server.dispatch.poller import ReceiptPoller
from server.dispatch.provider_set import (
    BreakerSettings,
    LiveProviders,
    ProviderRoutes,
    ProviderSet,
)
from server.dispatch.receipts import ReceiptRecorder
from server.dispatch.retry import RetryPolicy
from server.dispatch.worker import Dispatcher
from server.domain.auth import Authenticator
from server.domain.batch_slots import BatchSlots
from server.domain.batch_tasks import Batches
from server.domain.codes import CodeKeys
from server.domain.console import ConsoleViews
from server.domain.errors import InvalidArgument
from server.domain.inbound import InboundIntake, InboundMessages, InboundSms
from server.domain.limits import AuthFailureThrottle, RateLimits, StreamCaps
from server.domain.messaging import Messaging
from server.domain.outbox_codes import CodeOpeningOutbox
from server.domain.suppression import Suppressions
from server.domain.template_catalog import TemplateCatalog
from server.domain.verification import Verifications
from server.health import DatabaseHealth
from server.http.app import MetricsEndpoint, build_http_app
from server.http.inbound import InboundReceiver
from server.http.rpc_bridge import RpcBridge
from server.http.webhooks import WebhookReceiver
from server.listen import bind_http, listen_grpc
from server.metrics import CONTENT_TYPE, GatewayMetrics
from server.status.hub import StatusHub
from server.status.inbound_watch import InboundWatcher
from server.status.watch import StatusWatcher
from server.store.accounts import PgAccountStore
from server.store.batches import PgBatchStore
from server.store.console import PgConsoleStore
from server.store.database import Database, migrate
from server.store.events import PgEventLog
from server.store.inbound import INBOUND_CHANNEL, PgInboundStore
from server.store.maintenance import Maintenance
from server.store.messages import PgMessageStore
from server.store.outbox import PgOutbox
from server.store.pool import create_pool
from server.store.server_keys import load_or_create_key
from server.store.suppressions import PgSuppressionStore
from server.store.templates import PgTemplateStore
from server.store.velocity import PgVelocityCounters
from server.store.verifications import PgVerificationStore
from server.store.webhooks import PgWebhookStore
from server.tracing import Tracing, provider_for
from server.webhooks.delivery import WebhookDelivery
from server.webhooks.process import Config as DeliveryConfig
from server.webhooks.process import DeliveryProcess

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

log = logging.getLogger(__name__)

WEBHOOK_POOL_SIZE = 4  # the delivery worker's own connections
# How often a gateway with no delivery process yet looks for an endpoint created on
# another replica (one created on this one starts it at once).
WEBHOOK_PROCESS_LOOK_SECONDS = 2.0


class Gateway:
    """One running smsgw process."""

    def __init__(
        self, settings: Settings, *, tracer_provider: TracerProvider | None = None
    ) -> None:
        """``tracer_provider``: trace into this one (tests) instead of SMSGW_TRACING's."""
        self.settings = settings
        self.database = Database(settings.database_url, settings.data_dir)
        if tracer_provider is not None:
            self.tracing: Tracing | None = Tracing(tracer_provider, owns_provider=False)
        else:
            provider = provider_for(settings.tracing)
            self.tracing = Tracing(provider) if provider is not None else None
        self.grpc_port = 0
        self.http_port = 0
        self._pool: asyncpg.Pool | None = None
        self._server: grpc.aio.Server | None = None
        self._interceptor: GatewayInterceptor | None = None
        self.health = DatabaseHealth(SERVICE_NAMES)
        self._http: web.AppRunner | None = None
        # The HTTP port's Connect/gRPC-Web bridge reaches the gRPC server over a Unix
        # socket in a private directory; its token vouches for the caller's address.
        self._bridge: RpcBridge | None = None
        self._bridge_dir: Path | None = None
        self._bridge_token = secrets.token_urlsafe(24)
        self._hub: StatusHub | None = None
        self._dispatcher: Dispatcher | None = None
        self._receipts: ReceiptRecorder | None = None
        self._providers = LiveProviders(settings.shutdown_grace)
        self._poller: ReceiptPoller | None = None
        self._maintenance: Maintenance | None = None
        self._webhooks: WebhookDelivery | None = None
        self._webhook_pool: asyncpg.Pool | None = None
        self._webhook_process: DeliveryProcess | None = None
        self._webhook_process_start: asyncio.Task[None] | None = None
        self._webhook_wanted = asyncio.Event()  # an endpoint was created here
        self._server_key = b""
        self._inbound: InboundIntake | None = None
        self._inbound_ready = asyncio.Event()  # set once the intake exists
        # Large batches are prepared in a process of its own (started when first
        # needed); one batch at a time: each holds its request decoded (100-150 MB
        # for 100,000 numbers with values), and it runs beside the server's cores.
        self.preparer = ProcessPreparer(PREPARATION_PROCESSES)
        self.metrics = GatewayMetrics(process_index=settings.process_index or 0)
        self.metrics.watch_breakers(self._providers.breaker_states)

    @property
    def pool(self) -> asyncpg.Pool:
        assert self._pool is not None, "the gateway is not started"
        return self._pool

    async def start(self) -> None:
        s = self.settings
        if self.tracing is not None:
            self.tracing.start()
        dsn = await self.database.start()
        # One process of several (SMSGW_PROCESSES): the parent ran the migrations.
        shared = s.process_index is not None
        if not shared:
            await migrate(dsn)
        self._pool = pool = await create_pool(dsn, max_size=s.pool_size)

        events = PgEventLog(pool)
        if s.secret_key is None:
            log.warning(
                "SMSGW_SECRET_KEY is not set: using a generated key kept in the database "
                "(fine for development; set SMSGW_SECRET_KEY in production)"
            )
        self._server_key = s.secret_key or await load_or_create_key(pool)
        codes = CodeKeys(self._server_key)
        outbox = PgOutbox(pool, on_changes=self.metrics.message_changes)
        self.metrics.watch_backlog(outbox.backlog)
        self._hub = StatusHub(dsn, events)
        await self._hub.start()
        self._receipts = ReceiptRecorder(outbox)
        self._receipts.start()
        self._dispatcher = Dispatcher(
            CodeOpeningOutbox(outbox, codes),
            self._providers.use(self._build_providers(s)),
            workers=s.dispatch_workers,
            claim_size=s.dispatch_claim_size,
            bulk=s.dispatch_bulk,
            urgent_workers=s.dispatch_urgent_workers,
            lease_seconds=s.lease_seconds,
            retry=RetryPolicy(max_attempts=s.max_attempts, base_delay=s.retry_base_seconds),
            retries_per_provider=s.retries_per_provider,
            message_ttl=s.message_ttl_seconds,
            metrics=self.metrics,
            tracing=self.tracing,
        )
        self._dispatcher.start()
        self._poller = ReceiptPoller(
            outbox,
            self.providers,
            self._receipts,
            interval=s.poll_interval_seconds,
            min_age=min(1.0, s.poll_interval_seconds),
            repoll_after=2 * s.poll_interval_seconds,
            receipt_deadline=s.receipt_deadline_seconds,
        )
        if s.dispatch_workers > 0:
            self._poller.start()

        templates = PgTemplateStore(pool)
        suppressions = PgSuppressionStore(pool)
        message_store = PgMessageStore(pool)
        routes = ProviderRoutes(self.providers)
        messaging = Messaging(
            message_store,
            templates,
            routes=routes,
            # Single sends and codes: the urgent workers take them at once.
            on_accepted=self._dispatcher.wake_urgent,
            mobile_intervals=s.mobile_intervals,
            prices=self._prices,
        )
        velocity = PgVelocityCounters(pool)
        verification_store = PgVerificationStore(pool, velocity)
        verifications = Verifications(
            verification_store,
            templates,
            codes,
            s.otp,
            routes=routes,
            on_accepted=self._dispatcher.wake_urgent,
            prices=self._prices,
        )
        batch_store = PgBatchStore(pool, on_changes=self.metrics.message_changes)
        self._maintenance = Maintenance(verification_store, velocity, message_store, batch_store)
        self._maintenance.start()
        self.authenticator = authenticator = Authenticator(
            PgAccountStore(pool),
            failures=AuthFailureThrottle(s.limits.auth_failures_per_minute),
        )
        self._interceptor = GatewayInterceptor(
            authenticator,
            RateLimits(s.limits),
            metrics=self.metrics,
            streams=StreamCaps(s.max_streams_per_account, s.max_streams),
            # A large CreateBatch is decoded in a preparation process, not here.
            decoders={"/sms.v1.BatchService/CreateBatch": decode_create_batch},
            bridge_token=self._bridge_token,
        )
        server = grpc_server(
            # The tracing interceptor first, so that a call's span holds our checks.
            [
                *([self.tracing.server_interceptor()] if self.tracing is not None else []),
                self._interceptor,
            ],
            shared_port=shared,
        )
        message_pb2_grpc.add_MessageServiceServicer_to_server(
            MessageServicer(
                messaging, StatusWatcher(events, self._hub, max_replay=s.max_replay_events)
            ),
            server,
        )
        template_pb2_grpc.add_TemplateServiceServicer_to_server(
            TemplateServicer(TemplateCatalog(templates)), server
        )
        verification_pb2_grpc.add_VerificationServiceServicer_to_server(
            VerificationServicer(verifications), server
        )
        batch_pb2_grpc.add_BatchServiceServicer_to_server(
            BatchServicer(
                Batches(
                    batch_store,
                    templates,
                    on_accepted=self._dispatcher.wake,
                    routes=routes,
                    slots=BatchSlots(s.large_batches, clock=time.monotonic),
                    prices=self._prices,
                    preparer=self.preparer,
                )
            ),
            server,
        )
        webhook_store = PgWebhookStore(pool)
        webhook_pb2_grpc.add_WebhookServiceServicer_to_server(
            WebhookServicer(
                webhook_store,
                codes,
                allow_insecure=s.webhook_allow_insecure,
                on_created=self._webhook_wanted.set,
            ),
            server,
        )
        if s.dispatch_workers > 0:
            self.metrics.watch_webhook_backlog(webhook_store.backlog)
            await self._start_webhooks(s, dsn, codes, webhook_store)
        suppression_pb2_grpc.add_SuppressionServiceServicer_to_server(
            SuppressionServicer(Suppressions(suppressions, s.default_region)), server
        )
        inbound_store = PgInboundStore(pool)
        inbound_watcher = InboundWatcher(inbound_store, max_replay=s.max_replay_events)
        await self._hub.listen(INBOUND_CHANNEL, inbound_watcher.wake)
        inbound_pb2_grpc.add_InboundServiceServicer_to_server(
            InboundServicer(InboundMessages(inbound_store), inbound_watcher), server
        )
        self._inbound = InboundIntake(
            inbound_store, lambda: self.settings.routing.inbound, self._dispatcher.wake
        )
        self._inbound_ready.set()
        account_pb2_grpc.add_AccountServiceServicer_to_server(
            AccountServicer(PgAccountStore(pool)), server
        )
        console_pb2_grpc.add_ConsoleServiceServicer_to_server(
            ConsoleServicer(ConsoleViews(PgConsoleStore(pool))), server
        )
        self.health.add_to_server(server)
        enable_reflection(server)
        self.grpc_port = listen_grpc(server, s.grpc_addr, s.tls)
        if s.tls is not None and s.tls.mutual:
            # The HTTP port has no client certificates to check: the RPCs stay gRPC-only.
            log.info("mutual TLS on the gRPC port: Connect and gRPC-Web are not served")
        elif s.http_rpc:
            self._bridge_dir = Path(tempfile.mkdtemp(prefix="smsgw-"))  # mode 0700
            internal = f"unix:{self._bridge_dir / 'grpc.sock'}"
            server.add_insecure_port(internal)
            self._bridge = RpcBridge(
                internal, self._bridge_token, s.http_cors_origins, self.metrics
            )
        await server.start()
        self._server = server
        await self.health.start(pool)

        self._http = web.AppRunner(
            build_http_app(
                self.health.is_healthy,
                WebhookReceiver(self.providers, self._receipts),
                MetricsEndpoint(self.metrics.render, CONTENT_TYPE),
                InboundReceiver(self.providers, self._inbound),
                self._bridge,
            ),
            access_log=None,
        )
        await self._http.setup()
        sock = bind_http(s.http_addr, shared=shared)
        self.http_port = sock.getsockname()[1]
        await web.SockSite(self._http, sock).start()
        log.info(
            "smsgw serving gRPC on port %d and HTTP on port %d", self.grpc_port, self.http_port
        )

    async def _start_webhooks(
        self, s: Settings, dsn: str, codes: CodeKeys, store: PgWebhookStore
    ) -> None:
        """The webhook delivery worker: in a process of its own at a lower CPU priority
        (SMSGW_WEBHOOK_PROCESS, server/webhooks/process.py), started once any account
        has an endpoint (a gateway nobody subscribed to spends no memory on it), or in
        this one."""
        deliveries = self.metrics.webhook_deliveries
        if s.webhook_process:
            self._webhook_process = DeliveryProcess(
                DeliveryConfig(
                    dsn=dsn,
                    key=base64.b64encode(self._server_key).decode(),
                    allow_insecure=s.webhook_allow_insecure,
                    retry_base=s.webhook_retry_base_seconds,
                    retry_for=s.webhook_retry_for_seconds,
                    timeout=s.webhook_timeout_seconds,
                    nice=s.webhook_nice,
                    log_level=s.log_level,
                ),
                lambda result, n: deliveries.labels(result).inc(n),
            )
            self._webhook_process_start = asyncio.create_task(
                self._start_webhook_process(self._webhook_process, store),
                name="webhook-process-start",
            )
            return
        # The delivery worker's writes (leases, outcomes, materialised events)
        # commit without waiting for the WAL flush: one lost in a database crash
        # only sends a delivery again, which at least once allows; the events
        # themselves are written (durably) with the changes that made them.
        self._webhook_pool = await create_pool(
            dsn,
            min_size=1,
            max_size=WEBHOOK_POOL_SIZE,
            server_settings={"synchronous_commit": "off"},
        )
        self._webhooks = WebhookDelivery(
            PgWebhookStore(self._webhook_pool),
            codes,
            lambda result: deliveries.labels(result).inc(),
            allow_insecure=s.webhook_allow_insecure,
            retry_base=s.webhook_retry_base_seconds,
            retry_for=s.webhook_retry_for_seconds,
            timeout=s.webhook_timeout_seconds,
        )
        self._webhooks.start()
        assert self._hub is not None
        self._hub.on_notify(self._webhooks.wake)

    async def _start_webhook_process(self, process: DeliveryProcess, store: PgWebhookStore) -> None:
        """Starts the delivery process once an endpoint exists: at once when one is
        created on this replica, else when the next look (every few seconds) finds one
        created on another."""
        while True:
            try:
                if await store.any_enabled():
                    await process.start()
                    return
            except Exception as exc:  # the database away, or the process failed to start
                log.warning("webhook delivery process not started yet (%s)", exc)
            await wait_event(self._webhook_wanted, WEBHOOK_PROCESS_LOOK_SECONDS)
            self._webhook_wanted.clear()

    def _prices(self) -> Mapping[str, int]:
        """Per-segment prices by region, from the routing file in use (a reload too)."""
        return self.settings.routing.prices

    def providers(self) -> ProviderSet:
        """The provider set in use (a reload replaces it)."""
        return self._providers()

    def _build_providers(self, s: Settings) -> ProviderSet:
        assert self._receipts is not None
        return ProviderSet.build(
            s.routing,
            receipts=self._receipts,
            loopback=s.loopback,
            breaker=BreakerSettings(
                window_seconds=s.breaker_window_seconds,
                min_failures=s.breaker_failures,
                failure_rate=s.breaker_failure_rate,
                reset_seconds=s.breaker_reset_seconds,
                probes=s.breaker_probes,
            ),
            inbound=self._take_inbound,
        )

    async def _take_inbound(self, sms: InboundSms) -> None:
        """A message from a recipient that a transport received over its own
        connection (SMPP deliver_sm): stored like a webhook's."""
        await self._inbound_ready.wait()  # binds may be up before the intake
        assert self._inbound is not None
        try:
            await self._inbound.receive(sms)
        except InvalidArgument:
            log.warning("inbound message via %s refused (malformed); dropped", sms.provider)

    async def reload(self, settings: Settings) -> None:
        """Switches to new providers and routes (SIGHUP) without dropping work: sends
        in flight finish on the old transports, which close once they are done."""
        providers = self._providers.use(self._build_providers(settings))
        if self._dispatcher is not None:
            self._dispatcher.use(providers)
        self.settings = dataclasses.replace(self.settings, routing=settings.routing)
        log.info("providers reloaded: %s", ", ".join(providers.transports))

    async def stop(self) -> None:
        """Stops within SMSGW_SHUTDOWN_GRACE: status streams end at once (UNAVAILABLE,
        their callers resume elsewhere); unary calls in flight and the workers' groups
        in hand get the grace side by side, so a slow provider does not add a second
        grace after the RPCs'. Workers claim nothing new: what is accepted meanwhile
        waits in the outbox for another replica or the restart."""
        grace = self.settings.shutdown_grace
        await self.health.enter_shutdown()
        if self._interceptor is not None:
            self._interceptor.end_streams()
        if self._webhook_process_start is not None:
            self._webhook_process_start.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._webhook_process_start
        if self._webhook_process is not None:
            self._webhook_process.terminate()  # it stops meanwhile
        drains = []
        if self._server is not None:
            drains.append(self._server.stop(grace))
        if self._dispatcher is not None:
            drains.append(self._dispatcher.stop(grace))
        await _bounded("calls in flight and dispatch", asyncio.gather(*drains), grace + 5)
        # Each step is bounded: one that hangs (a connection in use, a peer that does
        # not answer) is logged by name and left behind, and the rest still stop.
        if self._poller is not None:
            await _bounded("receipt poller", self._poller.stop(), grace)
        if self._maintenance is not None:
            await _bounded("maintenance", self._maintenance.stop(), grace)
        if self._webhooks is not None:
            await _bounded("webhook delivery", self._webhooks.stop(), grace)
        if self._webhook_process is not None:
            await self._webhook_process.stop(grace)
        pool = self._webhook_pool
        if pool is not None and not await _bounded("webhook database pool", pool.close(), grace):
            pool.terminate()
        await _bounded("health watchdog", self.health.stop(), grace)
        await _bounded("provider transports", self._providers.close(), grace)
        if self._receipts is not None:
            with contextlib.suppress(Exception):
                await _bounded("receipt recorder", self._receipts.stop(), grace)
        if self._hub is not None:
            await _bounded("status hub", self._hub.stop(), grace)
        if self._http is not None:
            await _bounded("HTTP server", self._http.cleanup(), grace)
        if self._bridge is not None:
            await _bounded("Connect bridge", self._bridge.close(), grace)
        if self._bridge_dir is not None:
            shutil.rmtree(self._bridge_dir, ignore_errors=True)
        self.preparer.close()
        # A connection some call never gave back must not hold the shutdown: after the
        # grace period the pool is closed hard.
        pool = self._pool
        if pool is not None and not await _bounded("database pool", pool.close(), grace):
            pool.terminate()
        await self.database.stop()
        if self.tracing is not None:
            self.tracing.close()
        log.info("smsgw stopped")


async def _bounded(what: str, step: Awaitable[object], seconds: float) -> bool:
    """Awaits one step of the shutdown for at most ``seconds`` (at least 1): False,
    after a warning that names it, when it did not finish."""
    try:
        await asyncio.wait_for(step, max(seconds, 1.0))
    except TimeoutError:
        log.warning("shutdown: %s still not stopped after %.0f s: left behind", what, seconds)
        return False
    return True
