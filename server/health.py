"""The gateway's health: grpc.health.v1 and /healthz, kept in step with the database.

A watchdog probes the database every HEALTH_PROBE_SECONDS: while it cannot be
reached every service is NOT_SERVING (every RPC would answer UNAVAILABLE; balancers
and orchestrators route around this replica), SERVING again once it answers.
Shutdown's NOT_SERVING is final (the health servicer ignores later changes).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

import asyncpg
import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

log = logging.getLogger(__name__)

# How often grpc.health.v1 is brought in step with the database, and how long one
# probe may take before the database counts as unreachable.
HEALTH_PROBE_SECONDS = 1.0
HEALTH_PROBE_TIMEOUT = 2.0


def _retrieve(task: asyncio.Task[object]) -> None:
    """Marks a background task's exception as seen (it is reported otherwise)."""
    if not task.cancelled():
        task.exception()


class DatabaseHealth:
    """The health of one gateway process: serving, and the database answering."""

    def __init__(self, services: Sequence[str]) -> None:
        """``services``: the gRPC services whose health follows the database (the
        server as a whole, name "", always does)."""
        self._names = ("", *services)
        self._servicer = health.aio.HealthServicer()
        self._pool: asyncpg.Pool | None = None
        self._serving = False
        # The database's last known state, kept by the watchdog: /healthz answers
        # from it at once rather than querying a database that may hang.
        self._database_ok = False
        self._probe: asyncio.Task[object] | None = None
        self._watchdog: asyncio.Task[None] | None = None

    def add_to_server(self, server: grpc.aio.Server) -> None:
        health_pb2_grpc.add_HealthServicer_to_server(self._servicer, server)

    async def start(self, pool: asyncpg.Pool) -> None:
        """Every service SERVING (the database has just answered the migrations and
        the start), then the watchdog follows the database."""
        self._pool = pool
        await self._set(health_pb2.HealthCheckResponse.SERVING)
        self._serving = True
        self._database_ok = True
        self._watchdog = asyncio.create_task(self._watch_database(), name="health-watchdog")

    async def enter_shutdown(self) -> None:
        """NOT_SERVING for good (the first step of a shutdown)."""
        self._serving = False
        await self._servicer.enter_graceful_shutdown()

    async def stop(self) -> None:
        """Ends the watchdog and a probe left running."""
        self._serving = False
        if self._probe is not None:
            self._probe.cancel()
        if self._watchdog is not None:
            self._watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watchdog
            self._watchdog = None

    async def is_healthy(self) -> bool:
        """From the last known state (at most HEALTH_PROBE_SECONDS +
        HEALTH_PROBE_TIMEOUT old): a probe of a hung database would hold the answer
        for the probe's whole timeout."""
        return self._serving and self._database_ok

    async def _set(self, status: health_pb2.HealthCheckResponse.ServingStatus.ValueType) -> None:
        for name in self._names:
            await self._servicer.set(name, status)

    async def _database_answers(self) -> bool:
        """Whether ``SELECT 1`` answers within HEALTH_PROBE_TIMEOUT. A probe that does
        not is left running rather than cancelled (cancelling a query on a hung
        connection waits for the driver's cancel request, which hangs as well), and
        no second probe starts while it runs."""
        if self._pool is None:
            return False
        if self._probe is None or self._probe.done():
            self._probe = asyncio.create_task(self._pool.fetchval("SELECT 1"), name="db-probe")
            self._probe.add_done_callback(_retrieve)
        probe = self._probe
        done, _ = await asyncio.wait({probe}, timeout=HEALTH_PROBE_TIMEOUT)
        return bool(done) and not probe.cancelled() and probe.exception() is None

    async def _watch_database(self) -> None:
        while self._serving:
            await asyncio.sleep(HEALTH_PROBE_SECONDS)
            answers = await self._database_answers()
            if answers == self._database_ok or not self._serving:
                continue
            self._database_ok = answers
            if answers:
                log.info("the database answers again: health SERVING")
            else:
                log.warning("the database cannot be reached: health NOT_SERVING")
            await self._set(
                health_pb2.HealthCheckResponse.SERVING
                if answers
                else health_pb2.HealthCheckResponse.NOT_SERVING
            )
