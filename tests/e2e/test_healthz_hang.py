"""/healthz answers at once from the last known state while the database hangs (a TCP
proxy in front of PostgreSQL stops forwarding), turns NOT_SERVING within a few
seconds, and SERVING again once the database answers."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from urllib.parse import parse_qs, urlsplit, urlunsplit

import aiohttp

from tests.conftest import DatabaseFactory
from tests.e2e.conftest import GatewayFactory
from tests.eventually import eventually

FAST_ANSWER = 0.5  # a hung probe would take its whole timeout (2 s)


class FreezableProxy:
    """Forwards TCP to ``target``; while frozen, bytes are held (a hung server)."""

    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)  # a host starting with "/": a socket directory
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def freeze(self) -> None:
        self._flowing.clear()

    def thaw(self) -> None:
        self._flowing.set()

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        host, port = self._target
        if host.startswith("/"):
            up_reader, up_writer = await asyncio.open_unix_connection(f"{host}/.s.PGSQL.{port}")
        else:
            up_reader, up_writer = await asyncio.open_connection(host, port)
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(src, dst))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(65536):
                await self._flowing.wait()
                dst.write(data)
                await dst.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            dst.close()


@contextlib.asynccontextmanager
async def proxied(dsn: str) -> AsyncIterator[tuple[FreezableProxy, str]]:
    """A proxy in front of the server of ``dsn`` (TCP, or the embedded server's socket
    directory in ``?host=``) and the DSN that goes through it."""
    parts = urlsplit(dsn)
    query = parse_qs(parts.query)
    host = query.get("host", [parts.hostname or "127.0.0.1"])[0]
    port = int(query.get("port", [parts.port or 5432])[0])
    proxy = FreezableProxy(host, port)
    await proxy.start()
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@127.0.0.1:{proxy.port}" if userinfo else f"127.0.0.1:{proxy.port}"
    try:
        yield proxy, urlunsplit(parts._replace(netloc=netloc, query=""))
    finally:
        proxy.thaw()
        await proxy.close()


async def healthz(session: aiohttp.ClientSession, port: int) -> tuple[int, float]:
    started = time.perf_counter()
    async with session.get(f"http://127.0.0.1:{port}/healthz") as reply:
        await reply.read()
        return reply.status, time.perf_counter() - started


async def test_healthz_answers_at_once_while_the_database_hangs(
    databases: DatabaseFactory, start_gateway: GatewayFactory
) -> None:
    dsn = await databases.new()
    async with proxied(dsn) as (proxy, via_proxy), aiohttp.ClientSession() as session:
        running = await start_gateway(database_url=via_proxy, dispatch_workers=0)
        port = running.gateway.http_port
        assert (await healthz(session, port))[0] == 200

        proxy.freeze()
        answers: list[tuple[float, int, float]] = []
        frozen_at = time.monotonic()
        while time.monotonic() - frozen_at < 6:
            status, took = await healthz(session, port)
            answers.append((time.monotonic() - frozen_at, status, took))
            await asyncio.sleep(0.2)
        assert max(took for _, _, took in answers) < FAST_ANSWER, answers
        went_down = [at for at, status, _ in answers if status == 503]
        assert went_down, f"the hung database was never reported: {answers}"
        assert went_down[0] < 4.5  # one probe interval plus the probe's timeout
        assert all(status == 503 for at, status, _ in answers if at > went_down[0])

        proxy.thaw()
        await eventually(
            lambda: healthz(session, port),
            until=lambda answer: answer[0] == 200,
            within=8,
            interval=0.2,
            what="SERVING again after the database",
        )
