"""The composition root: builds every part from Settings, starts and stops them in order.

Start: database (embedded unless DATABASE_URL) -> migrations -> status hub ->
dispatcher -> gRPC server -> HTTP server. Stop: health NOT_SERVING -> open streams
end (UNAVAILABLE) -> gRPC drain and dispatcher drain, side by side within one grace
-> receipts flushed -> hub -> HTTP -> pool -> database.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import socket
import time
from datetime import timedelta
from typing import TYPE_CHECKING

import asyncpg
import grpc
from aiohttp import web
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from sms.v1 import (
    batch_pb2,
    batch_pb2_grpc,
    message_pb2,
    message_pb2_grpc,
    template_pb2,
    template_pb2_grpc,
    verification_pb2,
    verification_pb2_grpc,
)

from server.api.batch_service import BatchServicer
from server.api.interceptors import GatewayInterceptor
from server.api.message_service import MessageServicer
from server.api.template_service import TemplateServicer
from server.api.verification_service import VerificationServicer
from server.config import Settings
from server.dispatch.poller import ReceiptPoller
from server.dispatch.providers import BreakerSettings, ProviderSet
from server.dispatch.receipts import ReceiptRecorder
from server.dispatch.retry import RetryPolicy
from server.dispatch.worker import Dispatcher, can_carry
from server.domain.auth import Authenticator
from server.domain.batch_slots import BatchSlots
from server.domain.batching import Batches
from server.domain.codes import CodeKeys
from server.domain.limits import AuthFailureThrottle, RateLimits
from server.domain.messaging import Messaging
from server.domain.models import Channel, OutboundMessage, UseType
from server.domain.ports import ProviderError
from server.domain.templating import TemplateCatalog
from server.domain.verification import Verifications
from server.http.app import MetricsEndpoint, WebhookRejected, build_http_app
from server.metrics import CONTENT_TYPE, GatewayMetrics
from server.providers.webhooks import WebhookTransport
from server.status.hub import StatusHub
from server.status.watch import StatusWatcher
from server.store.accounts import PgAccountStore
from server.store.batches import PgBatchStore
from server.store.embedded import EmbeddedPostgres
from server.store.events import PgEventLog
from server.store.messages import PgMessageStore
from server.store.migrate import apply_migrations
from server.store.outbox import PgOutbox
from server.store.pool import create_pool
from server.store.server_keys import load_or_create_key
from server.store.templates import PgTemplateStore
from server.store.velocity import PgVelocityCounters
from server.store.verifications import PgVerificationStore
from server.tracing import Tracing, provider_for

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

log = logging.getLogger(__name__)

SERVICE_NAMES = (
    message_pb2.DESCRIPTOR.services_by_name["MessageService"].full_name,
    verification_pb2.DESCRIPTOR.services_by_name["VerificationService"].full_name,
    batch_pb2.DESCRIPTOR.services_by_name["BatchService"].full_name,
    template_pb2.DESCRIPTOR.services_by_name["TemplateService"].full_name,
)

SERVING_SERVICES = SERVICE_NAMES
MAINTENANCE_SECONDS = 30.0
# How often grpc.health.v1 is brought in step with the database, and how long one
# probe may take before the database counts as unreachable.
HEALTH_PROBE_SECONDS = 1.0
HEALTH_PROBE_TIMEOUT = 2.0

MAX_MESSAGE_BYTES = 64 * 1024 * 1024


class Database:
    """Where the data lives: the server named by DATABASE_URL, or the embedded one."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._embedded: EmbeddedPostgres | None = None
        self.dsn = ""

    async def start(self) -> str:
        if self._settings.database_url:
            self.dsn = self._settings.database_url
        else:
            self._embedded = EmbeddedPostgres(self._settings.data_dir)
            self.dsn = await asyncio.to_thread(self._embedded.start)
        return self.dsn

    async def stop(self) -> None:
        if self._embedded is not None:
            await asyncio.to_thread(self._embedded.stop)
            self._embedded = None


async def migrate(dsn: str) -> list[str]:
    conn = await asyncpg.connect(dsn)
    try:
        return await apply_migrations(conn)
    finally:
        await conn.close()


class Gateway:
    """One running smsgw process."""

    def __init__(
        self, settings: Settings, *, tracer_provider: TracerProvider | None = None
    ) -> None:
        """``tracer_provider``: trace into this one (tests) instead of SMSGW_TRACING's."""
        self.settings = settings
        self.database = Database(settings)
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
        self._health = health.aio.HealthServicer()
        self._http: web.AppRunner | None = None
        self._hub: StatusHub | None = None
        self._dispatcher: Dispatcher | None = None
        self._receipts: ReceiptRecorder | None = None
        self._providers: ProviderSet | None = None
        self._poller: ReceiptPoller | None = None
        self._serving = False
        self._background: set[asyncio.Task[None]] = set()
        self._retired: list[ProviderSet] = []  # replaced by a reload, closing after grace
        self.metrics = GatewayMetrics()
        self.metrics.watch_breakers(self._breaker_states)

    @property
    def pool(self) -> asyncpg.Pool:
        assert self._pool is not None, "the gateway is not started"
        return self._pool

    async def start(self) -> None:
        s = self.settings
        if self.tracing is not None:
            self.tracing.start()
        dsn = await self.database.start()
        await migrate(dsn)
        self._pool = pool = await create_pool(dsn, max_size=s.pool_size)

        events = PgEventLog(pool)
        if s.secret_key is None:
            log.warning(
                "SMSGW_SECRET_KEY is not set: using a generated key kept in the database "
                "(fine for development; set SMSGW_SECRET_KEY in production)"
            )
        codes = CodeKeys(s.secret_key or await load_or_create_key(pool))
        outbox = PgOutbox(pool, codes, on_changes=self.metrics.message_changes)
        self.metrics.watch_backlog(outbox.backlog)
        self._hub = StatusHub(dsn, events)
        await self._hub.start()
        self._receipts = ReceiptRecorder(outbox)
        self._receipts.start()
        self._providers = self._build_providers(s)
        self._dispatcher = Dispatcher(
            outbox,
            self._providers,
            workers=s.dispatch_workers,
            claim_size=s.dispatch_claim_size,
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
        )
        if s.dispatch_workers > 0:
            self._poller.start()

        templates = PgTemplateStore(pool)
        message_store = PgMessageStore(pool)
        messaging = Messaging(
            message_store,
            templates,
            on_accepted=self._dispatcher.wake,
            mobile_intervals=s.mobile_intervals,
        )
        velocity = PgVelocityCounters(pool)
        verification_store = PgVerificationStore(pool, velocity)
        verifications = Verifications(
            verification_store,
            templates,
            codes,
            s.otp,
            voice_available=self._voice_available,
            on_accepted=self._dispatcher.wake,
        )
        maintenance = asyncio.create_task(
            self._maintain(verification_store, velocity, message_store), name="maintenance"
        )
        self._background.add(maintenance)
        maintenance.add_done_callback(self._background.discard)
        authenticator = Authenticator(
            PgAccountStore(pool),
            failures=AuthFailureThrottle(s.limits.auth_failures_per_minute),
        )
        self._interceptor = GatewayInterceptor(
            authenticator, RateLimits(s.limits), metrics=self.metrics
        )
        server = grpc.aio.server(
            # The tracing interceptor first, so that a call's span holds our checks.
            interceptors=[
                *([self.tracing.server_interceptor()] if self.tracing is not None else []),
                self._interceptor,
            ],
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ],
        )
        message_pb2_grpc.add_MessageServiceServicer_to_server(
            MessageServicer(messaging, StatusWatcher(events, self._hub)), server
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
                    PgBatchStore(pool, on_changes=self.metrics.message_changes),
                    templates,
                    on_accepted=self._dispatcher.wake,
                    slots=BatchSlots(s.large_batches, clock=time.monotonic),
                )
            ),
            server,
        )
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        reflection.enable_server_reflection(
            (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server
        )
        if s.tls is None:
            self.grpc_port = server.add_insecure_port(s.grpc_addr)
        else:
            self.grpc_port = server.add_secure_port(s.grpc_addr, s.tls.credentials())
        if self.grpc_port == 0:
            raise OSError(f"cannot listen on {s.grpc_addr}")
        if s.tls is not None:
            log.info("gRPC port uses %s", s.tls.describe())
        await server.start()
        self._server = server
        for name in ("", *SERVING_SERVICES):
            await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        self._serving = True
        watchdog = asyncio.create_task(self._watch_database(), name="health-watchdog")
        self._background.add(watchdog)
        watchdog.add_done_callback(self._background.discard)

        self._http = web.AppRunner(
            build_http_app(
                self._is_healthy,
                self._receive_webhook,
                MetricsEndpoint(self.metrics.render, CONTENT_TYPE),
            ),
            access_log=None,
        )
        await self._http.setup()
        host, _, port = s.http_addr.rpartition(":")
        host = host.strip("[]")
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, int(port)))
        self.http_port = sock.getsockname()[1]
        await web.SockSite(self._http, sock).start()
        log.info(
            "smsgw serving gRPC on port %d and HTTP on port %d", self.grpc_port, self.http_port
        )

    def providers(self) -> ProviderSet:
        assert self._providers is not None, "the gateway is not started"
        return self._providers

    def _breaker_states(self) -> dict[str, str]:
        return {} if self._providers is None else self._providers.breaker_states()

    def _build_providers(self, settings: Settings) -> ProviderSet:
        assert self._receipts is not None
        return ProviderSet.build(
            settings.routing,
            receipts=self._receipts,
            loopback=settings.loopback,
            breaker=BreakerSettings(settings.breaker_failures, settings.breaker_reset_seconds),
        )

    async def reload(self, settings: Settings) -> None:
        """Switches to new providers and routes (SIGHUP) without dropping work: sends
        in flight finish on the old transports, which close once they are done."""
        old = self._providers
        self._providers = self._build_providers(settings)
        if self._dispatcher is not None:
            self._dispatcher.use(self._providers)
        self.settings = dataclasses.replace(self.settings, routing=settings.routing)
        log.info("providers reloaded: %s", ", ".join(self._providers.transports))
        if old is not None:
            self._retired.append(old)
            task = asyncio.create_task(self._close_later(old), name="close-old-providers")
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _close_later(self, old: ProviderSet) -> None:
        await asyncio.sleep(self.settings.shutdown_grace)
        self._retired.remove(old)
        await old.close()

    async def _receive_webhook(self, kind: str, name: str | None, form: dict[str, str]) -> None:
        """Verifies and records a provider's delivery push (SendCloud SMSHook)."""
        providers = self.providers()
        candidates = [
            transport
            for n, transport in providers.transports.items()
            if (name is None or n == name)
            and providers.kinds[n] == kind
            and isinstance(transport, WebhookTransport)
        ]
        if not candidates:
            raise WebhookRejected(f"no {kind} provider" + (f" named {name}" if name else ""))
        errors: list[str] = []
        for transport in candidates:
            try:
                receipts = transport.parse_hook(form)
            except ProviderError as exc:
                errors.append(str(exc))
                continue
            assert self._receipts is not None
            for receipt in receipts:
                await self._receipts(receipt)
            await self._receipts.flush()
            return
        raise WebhookRejected("; ".join(errors))

    def _voice_available(self, mobile: str) -> bool:
        """Whether some routed provider can read a code to ``mobile`` by phone."""
        providers = self.providers()
        probe = OutboundMessage(
            "voice-probe", 0, mobile, "", UseType.VERIFICATION, 1, channel=Channel.VOICE, code="0"
        )
        return any(
            can_carry(providers.transports[name], probe)
            for name in providers.router.candidates(probe)
            if name in providers.transports
        )

    async def _maintain(
        self,
        verifications: PgVerificationStore,
        velocity: PgVelocityCounters,
        messages: PgMessageStore,
    ) -> None:
        """Expires pending verifications past their time; drops old velocity windows
        and mobile send times (intervals are at most a day)."""
        while True:
            await asyncio.sleep(MAINTENANCE_SECONDS)
            try:
                await verifications.expire_pending()
                await velocity.purge(timedelta(days=1))
                await messages.purge_mobile_intervals(timedelta(days=1))
            except Exception as exc:
                log.warning("maintenance failed (%s); will retry", type(exc).__name__)

    async def _is_healthy(self) -> bool:
        return self._serving and await self._database_answers()

    async def _database_answers(self) -> bool:
        if self._pool is None:
            return False
        try:
            async with asyncio.timeout(HEALTH_PROBE_TIMEOUT):
                await self._pool.fetchval("SELECT 1")
        except Exception:
            return False
        return True

    async def _watch_database(self) -> None:
        """Keeps grpc.health.v1 in step with the database: NOT_SERVING while it cannot
        be reached (every RPC would answer UNAVAILABLE; balancers and orchestrators
        route around this replica), SERVING again once it answers. Shutdown's
        NOT_SERVING is final (the health servicer ignores later changes)."""
        serving = True
        while self._serving:
            await asyncio.sleep(HEALTH_PROBE_SECONDS)
            answers = await self._database_answers()
            if answers == serving or not self._serving:
                continue
            serving = answers
            if answers:
                log.info("the database answers again: health SERVING")
            else:
                log.warning("the database cannot be reached: health NOT_SERVING")
            status = (
                health_pb2.HealthCheckResponse.SERVING
                if answers
                else health_pb2.HealthCheckResponse.NOT_SERVING
            )
            for name in ("", *SERVING_SERVICES):
                await self._health.set(name, status)

    async def stop(self) -> None:
        """Stops within SMSGW_SHUTDOWN_GRACE: status streams end at once (UNAVAILABLE,
        their callers resume elsewhere); unary calls in flight and the workers' groups
        in hand get the grace side by side, so a slow provider does not add a second
        grace after the RPCs'. Workers claim nothing new: what is accepted meanwhile
        waits in the outbox for another replica or the restart."""
        grace = self.settings.shutdown_grace
        self._serving = False
        await self._health.enter_graceful_shutdown()
        if self._interceptor is not None:
            self._interceptor.end_streams()
        drains = []
        if self._server is not None:
            drains.append(self._server.stop(grace))
        if self._dispatcher is not None:
            drains.append(self._dispatcher.stop(grace))
        await asyncio.gather(*drains)
        if self._poller is not None:
            await self._poller.stop()
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        for retired in [*self._retired, self._providers]:
            if retired is not None:
                await retired.close()
        self._retired.clear()
        if self._receipts is not None:
            with contextlib.suppress(Exception):
                await self._receipts.stop()
        if self._hub is not None:
            await self._hub.stop()
        if self._http is not None:
            await self._http.cleanup()
        if self._pool is not None:
            await self._pool.close()
        await self.database.stop()
        if self.tracing is not None:
            self.tracing.close()
        log.info("smsgw stopped")
