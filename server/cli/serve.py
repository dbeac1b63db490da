"""``smsgw serve``, ``smsgw migrate`` and ``smsgw healthcheck``: running the server."""

from __future__ import annotations

import argparse
import asyncio
import errno
import json
import logging
import os
import signal
import socket
import sys
from typing import Any

from server.cli.settings import UsageError, server_settings
from server.config import ConfigError, Settings, check_serve
from server.processes import PARENT_FD, READY, READY_FD

log = logging.getLogger("server.cli")

# What binding an address can fail with, and the words for it.
BIND_ERRORS = {
    errno.EADDRINUSE: "the address is already in use (another smsgw serve?)",
    errno.EADDRNOTAVAIL: "no interface of this machine has that address",
    errno.EACCES: "permission denied (ports below 1024 need privileges)",
}
ADDRESS_VARIABLES = (("SMSGW_GRPC_ADDR", "grpc_addr"), ("SMSGW_HTTP_ADDR", "http_addr"))


def add_commands(commands: Any) -> None:
    serve = commands.add_parser("serve", help="run the gateway (gRPC, HTTP, dispatch)")
    serve.set_defaults(handler=run_serve)
    migrate = commands.add_parser("migrate", help="apply database schema migrations")
    migrate.set_defaults(handler=lambda args: asyncio.run(_migrate(server_settings())))
    healthcheck = commands.add_parser(
        "healthcheck", help="exit 0 if the server at SMSGW_GRPC_ADDR reports SERVING"
    )
    healthcheck.set_defaults(handler=lambda args: asyncio.run(_healthcheck(server_settings())))


def run_serve(args: argparse.Namespace) -> int:
    settings = server_settings()
    if settings.process_index is None:  # a process of SMSGW_PROCESSES: its parent checked
        try:
            check_serve(settings)  # outside development, refuse to start without a secret key
        except ConfigError as exc:
            raise UsageError(str(exc)) from None
        if settings.processes > 1:
            from server.processes import supervise

            return asyncio.run(supervise(settings))
    return asyncio.run(serve(settings))


async def serve(settings: Settings) -> int:
    """Runs the gateway until SIGTERM or SIGINT; SIGHUP reloads the configuration."""
    from server.app import Gateway

    gateway = Gateway(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    reloads: set[asyncio.Task[None]] = set()

    async def reload() -> None:
        try:
            fresh = Settings.from_env()
        except ConfigError as exc:
            log.error("reload refused, keeping the old config: %s", exc)
            return
        await gateway.reload(fresh)

    def on_sighup() -> None:
        task = asyncio.create_task(reload(), name="reload")
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, on_sighup)
    ready_fd, parent_fd = process_pipes(loop, stop)
    unbound: Exception | None = None
    try:
        try:
            await gateway.start()
        except (OSError, RuntimeError) as exc:
            if not is_bind_failure(exc):
                raise
            unbound = exc
        else:
            print(
                f"smsgw serving gRPC on {settings.grpc_addr.rpartition(':')[0]}:"
                f"{gateway.grpc_port}, HTTP on {settings.http_addr}",
                file=sys.stderr,
                flush=True,
            )
            if ready_fd is not None:
                os.write(ready_fd, READY)
            await stop.wait()
    finally:
        if ready_fd is not None:
            os.close(ready_fd)
        if parent_fd is not None:
            loop.remove_reader(parent_fd)
            os.close(parent_fd)
        await gateway.stop()
    if unbound is not None:
        print(f"smsgw: {cannot_listen(settings, unbound)}", file=sys.stderr)
        return 1
    return 0


def process_pipes(
    loop: asyncio.AbstractEventLoop, stop: asyncio.Event
) -> tuple[int | None, int | None]:
    """A process started by a parent (SMSGW_PROCESSES, server/processes.py) gets two
    pipes: one to say it serves, one whose end (the parent is gone) stops it."""
    ready = os.environ.pop(READY_FD, None)
    parent = os.environ.pop(PARENT_FD, None)
    if ready is None or parent is None:
        return None, None
    parent_fd = int(parent)

    def parent_gone() -> None:
        if not os.read(parent_fd, 64):
            log.warning("the parent smsgw serve is gone: stopping")
            loop.remove_reader(parent_fd)
            stop.set()

    loop.add_reader(parent_fd, parent_gone)
    return int(ready), parent_fd


def is_bind_failure(exc: BaseException) -> bool:
    """An error of binding a listening socket (grpc says it in a RuntimeError)."""
    if isinstance(exc, RuntimeError):
        return str(exc).startswith("Failed to bind to address")
    return isinstance(exc, OSError) and (
        exc.errno in BIND_ERRORS or str(exc).startswith("cannot listen on")
    )


def bind_problem(addr: str) -> str | None:
    """Why ``host:port`` cannot be listened on now, or None if it can."""
    host, _, port = addr.rpartition(":")
    host = host.strip("[]")
    try:
        infos = socket.getaddrinfo(host or None, int(port), type=socket.SOCK_STREAM)
    except (OSError, ValueError) as exc:
        return f"not an address ({exc})"
    family, kind, proto, _, sockaddr = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(sockaddr)
        except OSError as exc:
            return BIND_ERRORS.get(exc.errno or 0, exc.strerror or str(exc))
    return None


def cannot_listen(settings: Settings, exc: BaseException) -> str:
    """Which address could not be listened on, why, and which variable moves it."""
    for variable, field in ADDRESS_VARIABLES:
        addr = getattr(settings, field)
        problem = bind_problem(addr)
        if problem is not None:
            return (
                f"cannot listen on {addr} ({variable}): {problem}; "
                f"set {variable} to another host:port"
            )
    return f"cannot listen ({exc}); check SMSGW_GRPC_ADDR and SMSGW_HTTP_ADDR"


async def _migrate(settings: Settings) -> int:
    from server.store.database import Database, migrate

    database = Database(settings.database_url, settings.data_dir)
    dsn = await database.start()
    try:
        applied = await migrate(dsn)
    finally:
        await database.stop()
    print(json.dumps({"applied": applied}))
    return 0


async def _healthcheck(settings: Settings) -> int:
    """Asks grpc.health.v1 on the configured address (used by the Docker HEALTHCHECK);
    over TLS when SMSGW_TLS_CERT is set (see server.tls.healthcheck_channel)."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from server.cli.settings import dialable
    from server.tls import TlsConfigError, healthcheck_channel

    try:
        channel = healthcheck_channel(dialable(settings.grpc_addr), settings.tls, os.environ)
    except TlsConfigError as exc:
        print(f"smsgw: {exc}", file=sys.stderr)
        return 2
    async with channel:
        try:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=3
            )
        except grpc.aio.AioRpcError as exc:
            print(f"smsgw: health check failed: {exc.code().name}", file=sys.stderr)
            return 1
    serving = reply.status == health_pb2.HealthCheckResponse.SERVING
    print("SERVING" if serving else "NOT_SERVING")
    return 0 if serving else 1
