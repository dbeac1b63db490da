"""The ``smsgw`` command: serve, migrate, account and credential management."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import logging
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from server.app import Database, Gateway, migrate
from server.client_cli import add_client_commands, run_client
from server.config import ConfigError, Settings, check_serve
from server.domain.errors import InvalidArgument
from server.domain.quiet_hours import QuietHours
from server.emulators.common import FAULTS, EmulatorControls, EmulatorSettings, RunningEmulator
from server.logs import configure_logging
from server.store.accounts import PgAccountStore
from server.store.pool import create_pool

EMULATOR_KINDS = ("skynoo", "sendcloud", "sendsms")


def _print_json(value: dict[str, Any]) -> None:
    print(json.dumps(value, sort_keys=False))


async def _serve(settings: Settings) -> int:
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
            logging.getLogger("server.cli").error("reload refused, keeping the old config: %s", exc)
            return
        await gateway.reload(fresh)

    def on_sighup() -> None:
        task = asyncio.create_task(reload(), name="reload")
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, on_sighup)
    try:
        await gateway.start()
        print(
            f"smsgw serving gRPC on {settings.grpc_addr.rpartition(':')[0]}:{gateway.grpc_port}, "
            f"HTTP on {settings.http_addr}",
            file=sys.stderr,
            flush=True,
        )
        await stop.wait()
    finally:
        await gateway.stop()
    return 0


async def _with_accounts(
    settings: Settings, action: Callable[[PgAccountStore], Awaitable[int]]
) -> int:
    database = Database(settings)
    dsn = await database.start()
    try:
        await migrate(dsn)
        pool = await create_pool(dsn, min_size=1, max_size=2)
        try:
            return await action(PgAccountStore(pool))
        finally:
            await pool.close()
    finally:
        await database.stop()


async def _migrate(settings: Settings) -> int:
    database = Database(settings)
    dsn = await database.start()
    try:
        applied = await migrate(dsn)
    finally:
        await database.stop()
    _print_json({"applied": applied})
    return 0


async def _healthcheck(settings: Settings) -> int:
    """Asks grpc.health.v1 on the configured address (used by the Docker HEALTHCHECK);
    over TLS when SMSGW_TLS_CERT is set (see server.tls.healthcheck_channel)."""
    import os

    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from server.tls import TlsConfigError, healthcheck_channel

    host, _, port = settings.grpc_addr.rpartition(":")
    if host in ("0.0.0.0", "[::]", "::"):
        host = "127.0.0.1"
    try:
        channel = healthcheck_channel(f"{host}:{port}", settings.tls, os.environ)
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


async def _emulate(args: argparse.Namespace) -> int:
    import importlib

    templates: dict[str, str] = {}
    for item in args.template:
        template_id, sep, text = item.partition("=")
        if not sep:
            print(f"smsgw: --template must be ID=TEXT, got {item!r}", file=sys.stderr)
            return 2
        templates[template_id] = text
    settings = EmulatorSettings(
        credential_id=args.credential_id,
        credential_secret=args.credential_secret,
        templates=templates,
        webhook_url=args.webhook_url,
        controls=EmulatorControls(
            fail_rate=args.fail_rate,
            fault=args.fault,
            latency=args.latency,
            delivery_delay=args.delivery_delay,
            outcome=args.outcome,
        ),
    )
    module = importlib.import_module(f"server.emulators.{args.kind}")
    emulator = await RunningEmulator(module.build_app(settings), args.port, args.host).start()
    print(
        json.dumps({"kind": args.kind, "base_url": emulator.base_url}),
        flush=True,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await emulator.stop()
    return 0


def _rate(value: str) -> float | str:
    if value == "default":
        return value
    try:
        rate = float(value)
    except ValueError:
        rate = -1.0
    if not 0 < rate <= 10_000_000:
        raise argparse.ArgumentTypeError(f"a rate is a number of calls a second, got {value!r}")
    return rate


def _cidr(value: str) -> str:
    try:
        return str(ipaddress.ip_network(value, strict=False))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a CIDR: {value!r}") from exc


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="smsgw", description="Self-hosted SMS gateway (gRPC).")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="run the gateway (gRPC, HTTP, dispatch)")
    commands.add_parser("migrate", help="apply database schema migrations")
    commands.add_parser(
        "healthcheck", help="exit 0 if the server at SMSGW_GRPC_ADDR reports SERVING"
    )
    add_client_commands(commands)
    emulate = commands.add_parser(
        "emulate", help="run a provider emulator (skynoo, sendcloud, sendsms) on 127.0.0.1"
    )
    emulate.add_argument("kind", choices=EMULATOR_KINDS)
    emulate.add_argument("--port", type=int, default=0, help="0 picks a free port")
    emulate.add_argument("--host", default="127.0.0.1")
    emulate.add_argument(
        "--credential-id", default="emulator-user", help="apiKey/smsUser/client_id"
    )
    emulate.add_argument(
        "--credential-secret", default="emulator-secret", help="apiSecret/smsKey/passcode"
    )
    emulate.add_argument(
        "--template", action="append", default=[], metavar="ID=TEXT", help="a provider template"
    )
    emulate.add_argument("--webhook-url", help="where delivery events are pushed (sendcloud)")
    emulate.add_argument("--fail-rate", type=float, default=0.0)
    emulate.add_argument("--fault", choices=FAULTS, default="http_500")
    emulate.add_argument("--latency", type=float, default=0.0, help="seconds added per answer")
    emulate.add_argument("--delivery-delay", type=float, default=1.0)
    emulate.add_argument("--outcome", choices=("delivered", "undelivered"), default="delivered")

    account = commands.add_parser("account", help="manage accounts").add_subparsers(
        dest="action", required=True
    )
    create = account.add_parser("create", help="create an account and its first credential")
    create.add_argument("name")
    create.add_argument(
        "--unverified",
        action="store_true",
        help="not real-name verified: verification messages only, no templates",
    )
    create.add_argument("--allow-cidr", action="append", default=[], type=_cidr)

    update = account.add_parser(
        "update", help="change an account's settings (OTP, marketing quiet hours)"
    )
    update.add_argument("account_id", type=int)
    update.add_argument("--otp-max-attempts", type=int, help="check attempts per code (1-100)")
    update.add_argument(
        "--allow-country",
        action="append",
        metavar="XX",
        help="ISO country the account may send codes to (repeat); replaces the list",
    )
    update.add_argument("--all-countries", action="store_true", help="remove the country allowlist")
    update.add_argument(
        "--quiet-hours",
        action="append",
        metavar="[XX=]HH:MM-HH:MM",
        help="no marketing in this window, recipient's local time; XX= for one country, "
        "none for every other (repeat); replaces the windows",
    )
    update.add_argument(
        "--no-quiet-hours", action="store_true", help="remove the marketing quiet hours"
    )
    update.add_argument(
        "--send-rate",
        type=_rate,
        metavar="N|default",
        help="send calls a second for this account (default: the server's)",
    )
    update.add_argument(
        "--query-rate",
        type=_rate,
        metavar="N|default",
        help="query calls a second for this account (default: the server's)",
    )

    credential = commands.add_parser("credential", help="manage API credentials")
    cred = credential.add_subparsers(dest="action", required=True)
    c_create = cred.add_parser("create", help="create another credential for an account")
    c_create.add_argument("--account", type=int, required=True, help="account id")
    c_create.add_argument("--allow-cidr", action="append", default=[], type=_cidr)
    c_list = cred.add_parser("list", help="list an account's credentials (never secrets)")
    c_list.add_argument("--account", type=int, required=True, help="account id")
    c_revoke = cred.add_parser("revoke", help="revoke a credential")
    c_revoke.add_argument("api_key")
    return parser


def _run(args: argparse.Namespace, settings: Settings) -> int:
    if args.command == "serve":
        return asyncio.run(_serve(settings))
    if args.command == "migrate":
        return asyncio.run(_migrate(settings))
    if args.command == "healthcheck":
        return asyncio.run(_healthcheck(settings))
    if args.command == "emulate":
        return asyncio.run(_emulate(args))
    if args.command in ("send", "watch", "batch"):
        return run_client(args)
    if args.command == "account" and args.action == "update":
        try:
            quiet = (
                QuietHours.parse(args.quiet_hours, "--quiet-hours") if args.quiet_hours else None
            )
        except InvalidArgument as exc:
            bad = exc.violations[0]
            print(f"smsgw: {bad.field}: {bad.description}", file=sys.stderr)
            return 2

        async def update_account(store: PgAccountStore) -> int:
            regions = [r.upper() for r in args.allow_country] if args.allow_country else None
            if args.quiet_hours or args.no_quiet_hours:
                await store.set_quiet_hours(args.account_id, quiet)
            send_rate, query_rate = (
                None if r == "default" else r for r in (args.send_rate, args.query_rate)
            )
            if args.send_rate is not None or args.query_rate is not None:
                await store.set_rates(
                    args.account_id,
                    send_per_second=send_rate,
                    set_send=args.send_rate is not None,
                    query_per_second=query_rate,
                    set_query=args.query_rate is not None,
                )
            changed = await store.update_otp_settings(
                args.account_id,
                max_attempts=args.otp_max_attempts,
                set_attempts=args.otp_max_attempts is not None,
                allowed_regions=regions,
                set_regions=bool(args.allow_country) or args.all_countries,
            )
            if not changed:
                print(f"smsgw: account {args.account_id} does not exist", file=sys.stderr)
                return 1
            _print_json(
                {
                    "account_id": args.account_id,
                    "otp_max_attempts": args.otp_max_attempts,
                    "otp_allowed_regions": regions,
                    "quiet_hours": None if quiet is None else quiet.to_json(),
                    "send_per_second": send_rate,
                    "query_per_second": query_rate,
                }
            )
            return 0

        return asyncio.run(_with_accounts(settings, update_account))
    if args.command == "account":

        async def create_account(store: PgAccountStore) -> int:
            account = await store.create_account(args.name, verified=not args.unverified)
            credential, secret = await store.create_credential(account.id, args.allow_cidr)
            _print_json(
                {
                    "account_id": account.id,
                    "api_key": credential.api_key,
                    "api_secret": secret,
                    "verified": account.verified,
                }
            )
            return 0

        return asyncio.run(_with_accounts(settings, create_account))

    async def credential_action(store: PgAccountStore) -> int:
        if args.action == "create":
            if await store.get_account(args.account) is None:
                print(f"smsgw: account {args.account} does not exist", file=sys.stderr)
                return 1
            credential, secret = await store.create_credential(args.account, args.allow_cidr)
            _print_json(
                {
                    "account_id": args.account,
                    "api_key": credential.api_key,
                    "api_secret": secret,
                }
            )
            return 0
        if args.action == "list":
            for c in await store.list_credentials(args.account):
                _print_json(
                    {
                        "api_key": c.api_key,
                        "allow_cidrs": list(c.allow_cidrs),
                        "created_at": c.created_at.isoformat(),
                        "revoked_at": c.revoked_at.isoformat() if c.revoked_at else None,
                    }
                )
            return 0
        if await store.revoke_credential(args.api_key):
            _print_json({"api_key": args.api_key, "revoked": True})
            return 0
        print(f"smsgw: no active credential {args.api_key}", file=sys.stderr)
        return 1

    return asyncio.run(_with_accounts(settings, credential_action))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_env()
        if args.command == "serve":
            check_serve(settings)
    except ConfigError as exc:
        print(f"smsgw: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    with contextlib.suppress(KeyboardInterrupt):
        return _run(args, settings)
    return 130


if __name__ == "__main__":
    sys.exit(main())
