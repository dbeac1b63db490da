"""The asyncpg pool and the one place that turns connection failures into Unavailable."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeAlias, TypeVar

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from server.domain.errors import Unavailable

log = logging.getLogger(__name__)
T = TypeVar("T")

# A connection as handed out by the pool, or a plain one.
Conn: TypeAlias = "asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]"

# Errors that mean "the database cannot be reached now", not "the query is wrong".
# InternalClientError: a pooled connection the server cut off while it was idle (its
# protocol is still consuming the FATAL message) fails the next query with it.
_UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    ConnectionError,
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.InternalClientError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.InterfaceError,
    TimeoutError,
)


@contextlib.contextmanager
def unavailable_on_connection_errors() -> Iterator[None]:
    """Re-raises driver connection failures as the domain's Unavailable."""
    try:
        yield
    except _UNAVAILABLE_ERRORS as exc:
        raise Unavailable("the database is unavailable; retry later") from exc


# A transaction PostgreSQL rolled back because it collided with another one: run
# again, it succeeds (the other has moved on). Every status-changing transaction
# takes its accounts' event-log lanes first, in ascending order (store/events.py), so
# deadlocks between them are rare (a receipt sweep may find a message in a lane it
# did not expect and take that lane late); this is the safety net for those and for
# serializable transactions.
CONFLICT_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.exceptions.DeadlockDetectedError,
    asyncpg.exceptions.SerializationError,
)


async def retry_on_conflict(
    work: Callable[[], Awaitable[T]],
    *,
    attempts: int = 6,
    base_delay: float = 0.01,
    what: str = "transaction",
) -> T:
    """Runs ``work`` (one whole transaction) again when PostgreSQL broke a deadlock
    or a serialization conflict by rolling it back, with a short jittered backoff.
    Still conflicting after ``attempts``: Unavailable (the caller may retry), never
    an internal error."""
    for attempt in range(1, attempts + 1):
        try:
            return await work()
        except CONFLICT_ERRORS as exc:
            if attempt == attempts:
                raise Unavailable("the database is busy; retry later") from exc
            log.info("%s conflicted (%s); running it again", what, type(exc).__name__)
            await asyncio.sleep(base_delay * 2 ** (attempt - 1) * random.uniform(0.5, 1.5))
    raise AssertionError("unreachable")


# One encoder for every value: json.dumps with non-default arguments builds a new
# encoder per call, which showed in the profile of a 100,000-row batch COPY.
_JSON_ENCODER = json.JSONEncoder(separators=(",", ":"))


def _encode_jsonb(value: object) -> bytes:
    return b"\x01" + _JSON_ENCODER.encode(value).encode()


def _decode_jsonb(data: bytes) -> object:
    return json.loads(data[1:])


async def init_connection(conn: asyncpg.Connection) -> None:
    # Binary format (version byte 1, then the JSON text), so COPY can send jsonb too.
    await conn.set_type_codec(
        "jsonb",
        encoder=_encode_jsonb,
        decoder=_decode_jsonb,
        schema="pg_catalog",
        format="binary",
    )


async def _keep_session(conn: Conn) -> None:
    """Pool connections hold no session state (no LISTEN, SET or session locks:
    those use connections of their own), so the default reset query, a round trip
    on every release, is skipped. asyncpg still rolls back a leftover transaction."""


# PostgreSQL compiles a query with LLVM once its estimated cost passes jit_above_cost.
# The gateway's queries run in milliseconds, but a few (webhook claim_due, the outbox
# claim) are estimated far above that threshold: each run then spent 60-70 ms
# compiling for 5 ms of work, which capped webhook delivery near 150 events/s.
# Nothing the gateway asks is an analytic query, so JIT is off for its sessions.
SESSION_SETTINGS = {"jit": "off"}


async def create_pool(
    dsn: str,
    *,
    min_size: int = 2,
    max_size: int = 10,
    server_settings: dict[str, str] | None = None,
) -> asyncpg.Pool:
    with unavailable_on_connection_errors():
        pool = await asyncpg.create_pool(
            dsn,
            min_size=min_size,
            max_size=max_size,
            init=init_connection,
            reset=_keep_session,
            command_timeout=30,
            server_settings={**SESSION_SETTINGS, **(server_settings or {})},
        )
    assert pool is not None
    return pool
