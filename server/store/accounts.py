"""Accounts and their API credentials."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from server.domain import api_keys
from server.domain.models import Account, Credential
from server.domain.quiet_hours import QuietHours
from server.store.balance import top_up
from server.store.pool import unavailable_on_connection_errors

_CREDENTIAL_COLUMNS = """
    c.id, c.account_id, c.api_key, c.secret_hash, c.allow_cidrs::text[] AS allow_cidrs,
    c.created_at, c.revoked_at, c.admin, a.verified AS account_verified,
    a.otp_max_attempts, a.otp_allowed_regions, a.quiet_hours,
    a.send_per_second, a.query_per_second, a.allowed_countries, a.daily_message_cap,
    a.per_mobile_daily_cap, a.balance IS NOT NULL AS prepaid
"""


def _credential(row: asyncpg.Record) -> Credential:
    return Credential(
        id=row["id"],
        account_id=row["account_id"],
        api_key=row["api_key"],
        secret_hash=row["secret_hash"],
        allow_cidrs=tuple(row["allow_cidrs"]),
        created_at=row["created_at"],
        revoked_at=row["revoked_at"],
        account_verified=row["account_verified"],
        otp_max_attempts=row["otp_max_attempts"],
        otp_allowed_regions=None
        if row["otp_allowed_regions"] is None
        else tuple(row["otp_allowed_regions"]),
        quiet_hours=None
        if row["quiet_hours"] is None
        else QuietHours.from_json(row["quiet_hours"]),
        send_per_second=row["send_per_second"],
        query_per_second=row["query_per_second"],
        admin=row["admin"],
        allowed_countries=_regions(row["allowed_countries"]),
        daily_message_cap=row["daily_message_cap"],
        per_mobile_daily_cap=row["per_mobile_daily_cap"],
        prepaid=row["prepaid"],
    )


def _regions(stored: list[str] | None) -> tuple[str, ...] | None:
    return None if stored is None else tuple(stored)


@dataclass(frozen=True)
class AccountListing:
    """An account as an operator lists it: its settings (None: the server's default)
    and how many credentials can still call."""

    id: int
    name: str
    verified: bool
    created_at: datetime
    active_credentials: int
    otp_max_attempts: int | None
    otp_allowed_regions: tuple[str, ...] | None
    quiet_hours: QuietHours | None
    send_per_second: float | None
    query_per_second: float | None
    allowed_countries: tuple[str, ...] | None = None
    daily_message_cap: int | None = None
    per_mobile_daily_cap: int | None = None
    balance: int | None = None


# The settings an operator changes (``update_settings``), with each column's type.
SETTABLE: dict[str, str] = {
    "name": "text",
    "verified": "boolean",
    "otp_max_attempts": "integer",
    "otp_allowed_regions": "text[]",
    "quiet_hours": "jsonb",
    "send_per_second": "real",
    "query_per_second": "real",
    "allowed_countries": "text[]",
    "daily_message_cap": "integer",
    "per_mobile_daily_cap": "integer",
    "balance": "bigint",
}

_LISTING = """
SELECT a.id, a.name, a.verified, a.created_at, a.otp_max_attempts,
       a.otp_allowed_regions, a.quiet_hours, a.send_per_second, a.query_per_second,
       a.allowed_countries, a.daily_message_cap, a.per_mobile_daily_cap, a.balance,
       (SELECT count(*) FROM credentials c
        WHERE c.account_id = a.id AND c.revoked_at IS NULL) AS active
FROM accounts a
"""


def _listing(r: asyncpg.Record) -> AccountListing:
    return AccountListing(
        id=r["id"],
        name=r["name"],
        verified=r["verified"],
        created_at=r["created_at"],
        active_credentials=r["active"],
        otp_max_attempts=r["otp_max_attempts"],
        otp_allowed_regions=None
        if r["otp_allowed_regions"] is None
        else tuple(r["otp_allowed_regions"]),
        quiet_hours=None if r["quiet_hours"] is None else QuietHours.from_json(r["quiet_hours"]),
        send_per_second=r["send_per_second"],
        query_per_second=r["query_per_second"],
        allowed_countries=_regions(r["allowed_countries"]),
        daily_message_cap=r["daily_message_cap"],
        per_mobile_daily_cap=r["per_mobile_daily_cap"],
        balance=r["balance"],
    )


class PgAccountStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def create_account(self, name: str, *, verified: bool) -> Account:
        with unavailable_on_connection_errors():
            row = await self._pool.fetchrow(
                "INSERT INTO accounts (name, verified) VALUES ($1, $2) "
                "RETURNING id, name, verified",
                name,
                verified,
            )
        assert row is not None
        return Account(id=row["id"], name=row["name"], verified=row["verified"])

    async def get_account(self, account_id: int) -> Account | None:
        with unavailable_on_connection_errors():
            row = await self._pool.fetchrow(
                "SELECT id, name, verified FROM accounts WHERE id = $1", account_id
            )
        return None if row is None else Account(row["id"], row["name"], row["verified"])

    async def list_accounts(
        self, after_id: int = 0, limit: int | None = None
    ) -> list[AccountListing]:
        """Accounts by id after ``after_id`` (at most ``limit``; None: all)."""
        with unavailable_on_connection_errors():
            rows = await self._pool.fetch(
                f"{_LISTING} WHERE a.id > $1 ORDER BY a.id LIMIT $2", after_id, limit
            )
        return [_listing(r) for r in rows]

    async def get_listing(self, account_id: int) -> AccountListing | None:
        with unavailable_on_connection_errors():
            row = await self._pool.fetchrow(f"{_LISTING} WHERE a.id = $1", account_id)
        return None if row is None else _listing(row)

    async def update_settings(self, account_id: int, changes: dict[str, object]) -> bool:
        """Sets the ``SETTABLE`` columns named in ``changes`` (None: the server's
        default) in one statement; the others stay. False if there is no such account.
        Servers pick a change up within a second (auth cache)."""
        unknown = set(changes) - set(SETTABLE)
        if unknown:
            raise ValueError(f"not account settings: {sorted(unknown)}")
        columns = list(changes)
        if not columns:
            return await self.get_account(account_id) is not None
        sets = ", ".join(f"{c} = ${i + 2}::{SETTABLE[c]}" for i, c in enumerate(columns))
        with unavailable_on_connection_errors():
            result: str = await self._pool.execute(
                f"UPDATE accounts SET {sets} WHERE id = $1",
                account_id,
                *(changes[c] for c in columns),
            )
        return result.endswith(" 1")

    async def top_up_balance(self, account_id: int, amount: int) -> bool:
        """Adds ``amount`` to the balance (an unlimited account becomes prepaid with
        it). False if there is no such account."""
        with unavailable_on_connection_errors():
            async with self._pool.acquire() as conn:
                return await top_up(conn, account_id, amount)

    async def update_otp_settings(
        self,
        account_id: int,
        *,
        max_attempts: int | None = None,
        set_attempts: bool = False,
        allowed_regions: list[str] | None = None,
        set_regions: bool = False,
    ) -> bool:
        """Changes only what is set: OTP attempts (None: the server default) and the
        country allowlist (None: every country). False if there is no such account."""
        changes: dict[str, object] = {}
        if set_attempts:
            changes["otp_max_attempts"] = max_attempts
        if set_regions:
            changes["otp_allowed_regions"] = allowed_regions
        return await self.update_settings(account_id, changes)

    async def set_quiet_hours(self, account_id: int, hours: QuietHours | None) -> bool:
        """Replaces the account's marketing quiet hours (None: none). False if there is
        no such account."""
        return await self.update_settings(
            account_id, {"quiet_hours": None if hours is None else hours.to_json()}
        )

    async def set_rates(
        self,
        account_id: int,
        *,
        send_per_second: float | None = None,
        set_send: bool = False,
        query_per_second: float | None = None,
        set_query: bool = False,
    ) -> bool:
        """Overrides the account's call rates (None: the server's default); only what
        is set changes. False if there is no such account."""
        changes: dict[str, object] = {}
        if set_send:
            changes["send_per_second"] = send_per_second
        if set_query:
            changes["query_per_second"] = query_per_second
        return await self.update_settings(account_id, changes)

    async def create_credential(
        self, account_id: int, allow_cidrs: Sequence[str] = (), *, admin: bool = False
    ) -> tuple[Credential, str]:
        """Creates a credential; returns it with its secret, which is never stored.
        ``admin``: it may call AccountService (operators)."""
        api_key = api_keys.new_api_key()
        secret = api_keys.new_api_secret()
        secret_hash = api_keys.hash_secret(secret)
        with unavailable_on_connection_errors():
            row = await self._pool.fetchrow(
                f"""
                WITH c AS (
                    INSERT INTO credentials (account_id, api_key, secret_hash, allow_cidrs, admin)
                    VALUES ($1, $2, $3, $4::cidr[], $5)
                    RETURNING *
                )
                SELECT {_CREDENTIAL_COLUMNS} FROM c JOIN accounts a ON a.id = c.account_id
                """,
                account_id,
                api_key,
                secret_hash,
                list(allow_cidrs),
                admin,
            )
        assert row is not None
        return _credential(row), secret

    async def list_credentials(self, account_id: int) -> list[Credential]:
        with unavailable_on_connection_errors():
            rows = await self._pool.fetch(
                f"""
                SELECT {_CREDENTIAL_COLUMNS}
                FROM credentials c JOIN accounts a ON a.id = c.account_id
                WHERE c.account_id = $1 ORDER BY c.id
                """,
                account_id,
            )
        return [_credential(r) for r in rows]

    async def revoke_credential(self, api_key: str) -> bool:
        with unavailable_on_connection_errors():
            result: str = await self._pool.execute(
                "UPDATE credentials SET revoked_at = now() "
                "WHERE api_key = $1 AND revoked_at IS NULL",
                api_key,
            )
        return result.endswith(" 1")

    async def get_credential(self, api_key: str) -> Credential | None:
        with unavailable_on_connection_errors():
            row = await self._pool.fetchrow(
                f"""
                SELECT {_CREDENTIAL_COLUMNS}
                FROM credentials c JOIN accounts a ON a.id = c.account_id
                WHERE c.api_key = $1
                """,
                api_key,
            )
        return None if row is None else _credential(row)
