"""sms.v1.AccountService: the operators' API, for admin credentials only. It calls
the store methods ``smsgw account …`` and ``smsgw credential …`` use."""

from __future__ import annotations

from typing import Any, Literal

import grpc
from google.protobuf import empty_pb2
from sms.v1 import account_pb2, account_pb2_grpc

from server.api import convert
from server.api.context import current_caller
from server.domain.account_admin import (
    MAX_BALANCE,
    AccountValues,
    account_changes,
    check_cidrs,
    quiet_hours_text,
    require_admin,
    set_fields,
)
from server.domain.errors import FieldViolation, InvalidArgument, NotFound
from server.domain.fields import check_id
from server.domain.models import Credential
from server.domain.pagination import decode_page_token, encode_page_token, page_size
from server.store.accounts import AccountListing, PgAccountStore

Context = grpc.aio.ServicerContext[Any, Any]


def _account(row: AccountListing) -> account_pb2.Account:
    return account_pb2.Account(
        id=row.id,
        name=row.name,
        verified=row.verified,
        create_time=convert.timestamp(row.created_at),
        active_credentials=row.active_credentials,
        otp_max_attempts=row.otp_max_attempts,
        otp_allowed_regions=list(row.otp_allowed_regions or ()),
        quiet_hours=quiet_hours_text(row.quiet_hours),
        send_per_second=row.send_per_second,
        query_per_second=row.query_per_second,
        allowed_countries=list(row.allowed_countries or ()),
        daily_message_cap=row.daily_message_cap,
        per_mobile_daily_cap=row.per_mobile_daily_cap,
        balance=row.balance,
    )


def _credential(row: Credential, secret: str = "") -> account_pb2.Credential:
    return account_pb2.Credential(
        api_key=row.api_key,
        api_secret=secret,
        account_id=row.account_id,
        allow_cidrs=list(row.allow_cidrs),
        admin=row.admin,
        create_time=convert.timestamp(row.created_at),
        revoke_time=convert.timestamp(row.revoked_at),
    )


def _values(account: account_pb2.Account) -> AccountValues:
    return AccountValues(
        name=account.name,
        verified=account.verified,
        otp_max_attempts=account.otp_max_attempts if account.HasField("otp_max_attempts") else None,
        otp_allowed_regions=list(account.otp_allowed_regions),
        quiet_hours=list(account.quiet_hours),
        send_per_second=account.send_per_second if account.HasField("send_per_second") else None,
        query_per_second=account.query_per_second if account.HasField("query_per_second") else None,
        allowed_countries=list(account.allowed_countries),
        daily_message_cap=_optional(account, "daily_message_cap"),
        per_mobile_daily_cap=_optional(account, "per_mobile_daily_cap"),
        balance=_optional(account, "balance"),
    )


def _optional(
    account: account_pb2.Account,
    name: Literal["daily_message_cap", "per_mobile_daily_cap", "balance"],
) -> int | None:
    return int(getattr(account, name)) if account.HasField(name) else None


def _not_found(account_id: int) -> NotFound:
    return NotFound(f"account {account_id} not found", reason="ACCOUNT_NOT_FOUND")


class AccountServicer(account_pb2_grpc.AccountServiceServicer):
    def __init__(self, accounts: PgAccountStore) -> None:
        self._accounts = accounts

    async def _get(self, account_id: int) -> AccountListing:
        row = await self._accounts.get_listing(account_id)
        if row is None:
            raise _not_found(account_id)
        return row

    async def CreateAccount(
        self, request: account_pb2.CreateAccountRequest, context: Context
    ) -> account_pb2.Account:
        require_admin(current_caller())
        values = _values(request.account)
        changes = account_changes(values, set_fields(values))
        created = await self._accounts.create_account(
            str(changes.pop("name")), verified=values.verified
        )
        changes.pop("verified")
        await self._accounts.update_settings(created.id, changes)
        return _account(await self._get(created.id))

    async def GetAccount(
        self, request: account_pb2.GetAccountRequest, context: Context
    ) -> account_pb2.Account:
        require_admin(current_caller())
        return _account(await self._get(request.id))

    async def ListAccounts(
        self, request: account_pb2.ListAccountsRequest, context: Context
    ) -> account_pb2.ListAccountsResponse:
        require_admin(current_caller())
        size = page_size(request.page_size)
        (after,) = decode_page_token(request.page_token, "accounts", shape=(int,)) or (0,)
        rows = await self._accounts.list_accounts(int(after), size + 1)
        more = len(rows) > size
        rows = rows[:size]
        return account_pb2.ListAccountsResponse(
            accounts=[_account(r) for r in rows],
            next_page_token=encode_page_token("accounts", [rows[-1].id]) if more else "",
        )

    async def UpdateAccount(
        self, request: account_pb2.UpdateAccountRequest, context: Context
    ) -> account_pb2.Account:
        require_admin(current_caller())
        paths = list(dict.fromkeys(request.update_mask.paths))
        if not paths:
            raise InvalidArgument.field("update_mask", "name at least one field to change")
        changes = account_changes(_values(request.account), paths)
        if not await self._accounts.update_settings(request.account.id, changes):
            raise _not_found(request.account.id)
        return _account(await self._get(request.account.id))

    async def CreateCredential(
        self, request: account_pb2.CreateCredentialRequest, context: Context
    ) -> account_pb2.Credential:
        require_admin(current_caller())
        cidrs = check_cidrs(list(request.allow_cidrs))
        await self._get(request.account_id)
        credential, secret = await self._accounts.create_credential(
            request.account_id, cidrs, admin=request.admin
        )
        return _credential(credential, secret)

    async def ListCredentials(
        self, request: account_pb2.ListCredentialsRequest, context: Context
    ) -> account_pb2.ListCredentialsResponse:
        require_admin(current_caller())
        await self._get(request.account_id)
        rows = await self._accounts.list_credentials(request.account_id)
        return account_pb2.ListCredentialsResponse(credentials=[_credential(r) for r in rows])

    async def RevokeCredential(
        self, request: account_pb2.RevokeCredentialRequest, context: Context
    ) -> empty_pb2.Empty:
        require_admin(current_caller())
        violations: list[FieldViolation] = []
        check_id(request.api_key, "api_key", violations)
        if violations:
            raise InvalidArgument(violations)
        if not await self._accounts.revoke_credential(request.api_key):
            raise NotFound(
                f"no active credential {request.api_key!r}", reason="CREDENTIAL_NOT_FOUND"
            )
        return empty_pb2.Empty()

    async def TopUpBalance(
        self, request: account_pb2.TopUpBalanceRequest, context: Context
    ) -> account_pb2.Account:
        require_admin(current_caller())
        if not 0 < request.amount <= MAX_BALANCE:
            raise InvalidArgument.field("amount", f"more than 0, at most {MAX_BALANCE:,}")
        if not await self._accounts.top_up_balance(request.account_id, request.amount):
            raise _not_found(request.account_id)
        return _account(await self._get(request.account_id))
