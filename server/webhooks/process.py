"""``SMSGW_WEBHOOK_PROCESS=1``: webhook delivery in a process of its own, at a lower
CPU priority, so that on a saturated machine the send path comes first.

The delivery loop's CPU (materialising deliveries, serialising and signing events,
HTTP requests, recording outcomes) otherwise shares the gateway's one Python thread
with the gRPC calls. In its own process under ``os.nice(SMSGW_WEBHOOK_NICE)`` the
kernel gives it what the gateway leaves: nothing changes on an idle machine, and on a
busy one the deliveries lag (they are durable rows; they go out once there is CPU)
instead of the calls.

The parent (``DeliveryProcess``, in the gateway) starts ``python -m
server.webhooks.process`` and hands it its configuration (the database, the server key,
the webhook settings) as one JSON line on its stdin, which then stays open: its end
(the parent is gone, even killed with SIGKILL) stops the process. The process LISTENs
for the event log's NOTIFY itself, writes ``ready`` on its stdout once it delivers,
then one ``count <result> <n>`` line per result a few times a second (the parent adds
them to its smsgw_webhook_deliveries counter). The parent starts it again after
RESTART_DELAY when it exits, and stops it within SMSGW_SHUTDOWN_GRACE (SIGTERM, then
SIGKILL after STOP_MARGIN more). Deliveries keep their guarantees whichever process
holds them: a process that dies leaves its leased deliveries to the next one once
their leases (three request timeouts) run out.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections import Counter as Tally
from collections.abc import Callable
from dataclasses import asdict, dataclass

log = logging.getLogger(__name__)

STARTUP_TIMEOUT = 60.0  # seconds for the process to be ready
RESTART_DELAY = 1.0  # seconds before a process that exited is started again
STOP_MARGIN = 5.0  # seconds past the grace before a process still running is killed
REPORT_EVERY = 0.25  # seconds between two reports of delivery counts
LISTEN_RETRY = 1.0  # seconds between two attempts to LISTEN again
READY = b"ready\n"
POOL_SIZE = 4  # the delivery worker's connections (as WEBHOOK_POOL_SIZE in server/app.py)


@dataclass(frozen=True)
class Config:
    """What the delivery process needs (sent as JSON on its stdin)."""

    dsn: str
    key: str  # the server key, base64: it unseals the endpoints' secrets
    allow_insecure: bool
    retry_base: float
    retry_for: float
    timeout: float
    nice: int
    log_level: str = "INFO"


# --- the parent's side --------------------------------------------------------------


class DeliveryProcess:
    """Runs, restarts and stops the delivery process of one gateway."""

    def __init__(self, config: Config, count: Callable[[str, int], None]) -> None:
        """``count(result, n)``: deliveries the process reported, by result."""
        self._config = config
        self._count = count
        self._proc: asyncio.subprocess.Process | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.restarts = 0

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    async def start(self) -> None:
        """Starts the process and waits until it delivers (RuntimeError if it does not)."""
        await self._start_one()
        self._task = asyncio.create_task(self._supervise(), name="webhook-process")

    async def _start_one(self) -> None:
        self._proc = proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "server.webhooks.process",
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(json.dumps(asdict(self._config)).encode() + b"\n")
        try:
            await proc.stdin.drain()
            async with asyncio.timeout(STARTUP_TIMEOUT):
                line = await proc.stdout.readline()  # b"" when it exits first
        except (TimeoutError, ConnectionError):
            line = b""
        if line != READY:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            code = await proc.wait()
            raise RuntimeError(f"the webhook delivery process did not start (exit code {code})")
        log.info("webhook delivery process running (pid %d)", proc.pid)

    async def _supervise(self) -> None:
        while True:
            proc = self._proc
            assert proc is not None and proc.stdout is not None
            while line := await proc.stdout.readline():
                self._report(line)
            code = await proc.wait()
            if self._stopping:
                return
            log.warning(
                "webhook delivery process (pid %d) exited (code %d): starting it again",
                proc.pid,
                code,
            )
            while True:
                await asyncio.sleep(RESTART_DELAY)
                if self._stopping:
                    return
                try:
                    await self._start_one()
                except RuntimeError as exc:
                    log.error("%s; trying again", exc)
                else:
                    self.restarts += 1
                    break

    def _report(self, line: bytes) -> None:
        words = line.split()
        if len(words) == 3 and words[0] == b"count":
            with contextlib.suppress(ValueError):
                self._count(words[1].decode(), int(words[2]))

    def terminate(self) -> None:
        """Tells the process to stop (SIGTERM, and its stdin closed); not restarted."""
        self._stopping = True
        proc = self._proc
        if proc is not None and proc.returncode is None:
            if proc.stdin is not None:
                proc.stdin.close()
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)

    async def stop(self, grace: float) -> None:
        """``terminate``, then SIGKILL if it still runs after the grace."""
        self._stopping = True
        if self._task is not None:  # no restart from now on
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.terminate()
        proc = self._proc
        if proc is not None and proc.returncode is None:
            try:
                async with asyncio.timeout(grace + STOP_MARGIN):
                    await proc.wait()
            except TimeoutError:
                log.error("webhook delivery process still running after the grace: killed")
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()


# --- the process's side -------------------------------------------------------------


class _Counts:
    """Stands in for GatewayMetrics in the process: it tallies the delivery results,
    which ``report`` writes to the parent."""

    def __init__(self) -> None:
        self.tally: Tally[str] = Tally()

    def count(self, result: str) -> None:
        self.tally[result] += 1

    def report(self) -> None:
        tally, self.tally = self.tally, Tally()
        lines = "".join(f"count {result} {n}\n" for result, n in tally.items())
        if lines:
            os.write(sys.stdout.fileno(), lines.encode())


def _set(event: asyncio.Event, *_: object) -> None:
    event.set()


class _Listener:
    """LISTENs for the event log's NOTIFY on a connection of its own and connects
    again when it is lost (meanwhile the delivery loop's poll covers)."""

    def __init__(self, dsn: str, wake: Callable[[], None]) -> None:
        self._dsn = dsn
        self._wake = wake

    async def run(self) -> None:
        import asyncpg

        from server.store.events import EVENTS_CHANNEL

        while True:
            conn = None
            lost = asyncio.Event()
            try:
                conn = await asyncpg.connect(self._dsn)
                conn.add_termination_listener(functools.partial(_set, lost))
                await conn.add_listener(EVENTS_CHANNEL, lambda *_: self._wake())
                self._wake()  # what was announced while we were not listening
                await lost.wait()
            except (OSError, asyncpg.PostgresError) as exc:
                log.warning("webhook process cannot LISTEN (%s); polling", type(exc).__name__)
            finally:
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await conn.close()
            await asyncio.sleep(LISTEN_RETRY)


async def run(config: Config) -> int:
    from server.domain.codes import CodeKeys
    from server.store.pool import create_pool
    from server.store.webhooks import PgWebhookStore
    from server.webhooks.delivery import WebhookDelivery

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    def parent_gone() -> None:
        if not os.read(sys.stdin.fileno(), 4096):
            loop.remove_reader(sys.stdin.fileno())
            stop.set()

    loop.add_reader(sys.stdin.fileno(), parent_gone)
    # Its writes (leases, outcomes, materialised events) commit without waiting for
    # the WAL flush: one lost in a database crash only sends a delivery again, which
    # at least once allows; the events themselves are written durably elsewhere.
    pool = await create_pool(
        config.dsn, min_size=1, max_size=POOL_SIZE, server_settings={"synchronous_commit": "off"}
    )
    counts = _Counts()
    delivery = WebhookDelivery(
        PgWebhookStore(pool),
        CodeKeys(base64.b64decode(config.key)),
        counts.count,
        allow_insecure=config.allow_insecure,
        retry_base=config.retry_base,
        retry_for=config.retry_for,
        timeout=config.timeout,
    )
    delivery.start()
    listener = asyncio.create_task(_Listener(config.dsn, delivery.wake).run())
    os.write(sys.stdout.fileno(), READY)
    try:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), REPORT_EVERY)
            counts.report()
    finally:
        listener.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await listener
        await delivery.stop()
        counts.report()
        try:
            await asyncio.wait_for(pool.close(), 5)
        except TimeoutError:
            pool.terminate()
    return 0


def main() -> int:
    from server.logs import configure_logging

    config = Config(**json.loads(sys.stdin.buffer.readline()))
    configure_logging(config.log_level)
    if config.nice:
        os.nice(config.nice)
    started = time.monotonic()
    try:
        return asyncio.run(run(config))
    except BrokenPipeError:  # the parent is gone
        return 0
    finally:
        log.debug("webhook delivery process ran %.0f s", time.monotonic() - started)


if __name__ == "__main__":
    sys.exit(main())
