"""``smsgw account …`` and ``smsgw credential …``: accounts and their API keys, for
the operator, straight in the database (``DATABASE_URL``, else the embedded one)."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from server.cli.output import Output, add_output_option
from server.cli.settings import UsageError, server_settings
from server.domain.errors import InvalidArgument
from server.domain.quiet_hours import QuietHours
from server.store.accounts import AccountListing, PgAccountStore

ACCOUNT_COLUMNS = (
    "account_id",
    "name",
    "verified",
    "active_credentials",
    "send_per_second",
    "query_per_second",
    "created_at",
)
CREDENTIAL_COLUMNS = ("api_key", "admin", "allow_cidrs", "created_at", "revoked_at")
Action = Callable[[PgAccountStore, argparse.Namespace, Output], Awaitable[int]]


def add_commands(commands: Any) -> None:
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
    _admin_command(create, _create_account)

    listing = account.add_parser("list", help="every account, its settings and active keys")
    _admin_command(listing, _list_accounts)

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
    for kind in ("send", "query"):
        update.add_argument(
            f"--{kind}-rate",
            type=_rate,
            metavar="N|default",
            help=f"{kind} calls a second for this account (default: the server's)",
        )
    _admin_command(update, _update_account)

    credential = commands.add_parser("credential", help="manage API credentials")
    cred = credential.add_subparsers(dest="action", required=True)
    c_create = cred.add_parser("create", help="create another credential for an account")
    c_create.add_argument("account_id", nargs="?", type=int, help="account id")
    c_create.add_argument("--account", type=int, help="account id (as the positional)")
    c_create.add_argument("--allow-cidr", action="append", default=[], type=_cidr)
    c_create.add_argument(
        "--admin", action="store_true", help="the admin role: may call AccountService"
    )
    _admin_command(c_create, _create_credential)
    c_list = cred.add_parser("list", help="list an account's credentials (never secrets)")
    c_list.add_argument("--account", type=int, required=True, help="account id")
    _admin_command(c_list, _list_credentials)
    c_revoke = cred.add_parser("revoke", help="revoke a credential")
    c_revoke.add_argument("api_key")
    _admin_command(c_revoke, _revoke_credential)


def _admin_command(parser: argparse.ArgumentParser, action: Action) -> None:
    add_output_option(parser)
    parser.set_defaults(handler=lambda args: asyncio.run(_with_accounts(action, args)))


async def _with_accounts(action: Action, args: argparse.Namespace) -> int:
    from server.store.database import Database, migrate
    from server.store.pool import create_pool

    settings = server_settings()
    database = Database(settings.database_url, settings.data_dir)
    dsn = await database.start()
    try:
        await migrate(dsn)
        pool = await create_pool(dsn, min_size=1, max_size=2)
        try:
            return await action(PgAccountStore(pool), args, Output(args.output))
        finally:
            await pool.close()
    finally:
        await database.stop()


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


async def _create_account(store: PgAccountStore, args: argparse.Namespace, out: Output) -> int:
    account = await store.create_account(args.name, verified=not args.unverified)
    credential, secret = await store.create_credential(account.id, args.allow_cidr)
    out.item(
        {
            "account_id": account.id,
            "api_key": credential.api_key,
            "api_secret": secret,
            "verified": account.verified,
        },
        compact=True,
    )
    return 0


def account_record(account: AccountListing) -> dict[str, Any]:
    return {
        "account_id": account.id,
        "name": account.name,
        "verified": account.verified,
        "active_credentials": account.active_credentials,
        "otp_max_attempts": account.otp_max_attempts,
        "otp_allowed_regions": None
        if account.otp_allowed_regions is None
        else list(account.otp_allowed_regions),
        "quiet_hours": None if account.quiet_hours is None else account.quiet_hours.to_json(),
        "send_per_second": account.send_per_second,
        "query_per_second": account.query_per_second,
        "allowed_countries": None
        if account.allowed_countries is None
        else list(account.allowed_countries),
        "daily_message_cap": account.daily_message_cap,
        "per_mobile_daily_cap": account.per_mobile_daily_cap,
        "balance": account.balance,
        "created_at": account.created_at.isoformat(),
    }


async def _list_accounts(store: PgAccountStore, args: argparse.Namespace, out: Output) -> int:
    out.items([account_record(a) for a in await store.list_accounts()], ACCOUNT_COLUMNS)
    return 0


async def _update_account(store: PgAccountStore, args: argparse.Namespace, out: Output) -> int:
    try:
        quiet = QuietHours.parse(args.quiet_hours, "--quiet-hours") if args.quiet_hours else None
    except InvalidArgument as exc:
        bad = exc.violations[0]
        raise UsageError(f"{bad.field}: {bad.description}") from None
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
    out.item(
        {
            "account_id": args.account_id,
            "otp_max_attempts": args.otp_max_attempts,
            "otp_allowed_regions": regions,
            "quiet_hours": None if quiet is None else quiet.to_json(),
            "send_per_second": send_rate,
            "query_per_second": query_rate,
        },
        compact=True,
    )
    return 0


async def _create_credential(store: PgAccountStore, args: argparse.Namespace, out: Output) -> int:
    account_id = args.account_id if args.account_id is not None else args.account
    if account_id is None or (args.account is not None and args.account != account_id):
        raise UsageError("give the account id once: `credential create ID` or `--account ID`")
    if await store.get_account(account_id) is None:
        print(f"smsgw: account {account_id} does not exist", file=sys.stderr)
        return 1
    credential, secret = await store.create_credential(
        account_id, args.allow_cidr, admin=args.admin
    )
    record: dict[str, Any] = {
        "account_id": account_id,
        "api_key": credential.api_key,
        "api_secret": secret,
    }
    if credential.admin:
        record["admin"] = True
    out.item(record, compact=True)
    return 0


async def _list_credentials(store: PgAccountStore, args: argparse.Namespace, out: Output) -> int:
    records = [
        {
            "api_key": c.api_key,
            "admin": c.admin,
            "allow_cidrs": list(c.allow_cidrs),
            "created_at": c.created_at.isoformat(),
            "revoked_at": c.revoked_at.isoformat() if c.revoked_at else None,
        }
        for c in await store.list_credentials(args.account)
    ]
    out.items(records, CREDENTIAL_COLUMNS)
    return 0


async def _revoke_credential(store: PgAccountStore, args: argparse.Namespace, out: Output) -> int:
    if await store.revoke_credential(args.api_key):
        out.item({"api_key": args.api_key, "revoked": True}, compact=True)
        return 0
    print(f"smsgw: no active credential {args.api_key}", file=sys.stderr)
    return 1
