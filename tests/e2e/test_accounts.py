"""AccountService end to end: an admin credential made with the CLI
(`smsgw credential create ID --admin`) manages accounts and credentials over gRPC;
any other credential is refused PERMISSION_DENIED."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Awaitable
from pathlib import Path

import grpc
import pytest
from google.protobuf import field_mask_pb2
from sms.v1 import account_pb2, account_pb2_grpc, common_pb2, message_pb2, message_pb2_grpc

from tests.conftest import basic_auth
from tests.e2e.conftest import Client, GatewayFactory, Running
from tests.e2e.errors import bad_fields, reason

ROOT = Path(__file__).resolve().parents[2]
A = account_pb2


async def cli(running: Running, *args: str) -> list[dict[str, object]]:
    """Runs an admin command against the gateway's database; its JSON lines."""
    env = dict(os.environ, DATABASE_URL=str(running.gateway.settings.database_url))
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "server.cli", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]


def accounts(running: Running) -> account_pb2_grpc.AccountServiceAsyncStub:
    stub: account_pb2_grpc.AccountServiceAsyncStub = account_pb2_grpc.AccountServiceStub(
        running.channel
    )
    return stub


@pytest.fixture(scope="module")
async def running(start_gateway: GatewayFactory) -> Running:
    return await start_gateway()


@pytest.fixture(scope="module")
async def admin(running: Running) -> tuple[tuple[str, str], ...]:
    [ops] = await cli(running, "account", "create", "operations")
    [made] = await cli(running, "credential", "create", str(ops["account_id"]), "--admin")
    assert made["admin"] is True
    return basic_auth(str(made["api_key"]), str(made["api_secret"]))


async def test_a_credential_without_the_admin_role_is_refused(running: Running) -> None:
    client = await running.client()
    calls: list[Awaitable[object]] = [
        accounts(running).GetAccount(
            A.GetAccountRequest(id=client.account_id), metadata=client.metadata
        ),
        accounts(running).ListAccounts(A.ListAccountsRequest(), metadata=client.metadata),
        accounts(running).CreateCredential(
            A.CreateCredentialRequest(account_id=client.account_id, admin=True),
            metadata=client.metadata,
        ),
    ]
    for call in calls:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await call
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert reason(refused.value) == "ADMIN_REQUIRED"


async def test_an_admin_creates_an_account_and_a_credential_that_can_send(
    running: Running, admin: tuple[tuple[str, str], ...]
) -> None:
    stub = accounts(running)
    made = await stub.CreateAccount(
        A.CreateAccountRequest(
            account=A.Account(
                name="Shop", verified=True, quiet_hours=["21:00-08:00", "us=22:00-07:00"]
            )
        ),
        metadata=admin,
    )
    assert (made.name, made.verified, made.active_credentials) == ("Shop", True, 0)
    assert list(made.quiet_hours) == ["21:00-08:00", "US=22:00-07:00"]
    assert not made.HasField("otp_max_attempts")

    credential = await stub.CreateCredential(
        A.CreateCredentialRequest(account_id=made.id), metadata=admin
    )
    assert credential.api_secret and not credential.admin
    # The secret is shown once: never listed.
    listed = await stub.ListCredentials(
        A.ListCredentialsRequest(account_id=made.id), metadata=admin
    )
    assert [c.api_key for c in listed.credentials] == [credential.api_key]
    assert listed.credentials[0].api_secret == ""
    assert (
        await stub.GetAccount(A.GetAccountRequest(id=made.id), metadata=admin)
    ).active_credentials == 1

    # The new credential sends as the new account.
    shop = basic_auth(credential.api_key, credential.api_secret)
    sent = await message_pb2_grpc.MessageServiceStub(running.channel).SendMessage(
        message_pb2.SendMessageRequest(
            mobile="+8613800138000", use_type=common_pb2.USE_TYPE_NOTIFICATION, text="Hi"
        ),
        metadata=shop,
    )
    assert sent.id

    # Revoked: refused within a second or so.
    await stub.RevokeCredential(
        A.RevokeCredentialRequest(api_key=credential.api_key), metadata=admin
    )
    await asyncio.sleep(1.2)
    with pytest.raises(grpc.aio.AioRpcError) as revoked:
        await message_pb2_grpc.MessageServiceStub(running.channel).SendMessage(
            message_pb2.SendMessageRequest(
                mobile="+8613800138000", use_type=common_pb2.USE_TYPE_NOTIFICATION, text="Hi"
            ),
            metadata=shop,
        )
    assert revoked.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.aio.AioRpcError) as again:
        await stub.RevokeCredential(
            A.RevokeCredentialRequest(api_key=credential.api_key), metadata=admin
        )
    assert again.value.code() == grpc.StatusCode.NOT_FOUND


async def test_update_changes_only_the_masked_fields_and_the_cli_sees_them(
    running: Running, admin: tuple[tuple[str, str], ...]
) -> None:
    client: Client = await running.client(name="before")
    stub = accounts(running)
    updated = await stub.UpdateAccount(
        A.UpdateAccountRequest(
            account=A.Account(
                id=client.account_id,
                name="after",
                otp_max_attempts=5,
                otp_allowed_regions=["cn", "HK"],
                send_per_second=50,
                verified=False,  # not in the mask: unchanged
            ),
            update_mask=field_mask_pb2.FieldMask(
                paths=["name", "otp_max_attempts", "otp_allowed_regions", "send_per_second"]
            ),
        ),
        metadata=admin,
    )
    assert (updated.name, updated.verified, updated.otp_max_attempts) == ("after", True, 5)
    assert list(updated.otp_allowed_regions) == ["CN", "HK"]
    assert updated.send_per_second == 50

    # One implementation behind both: the CLI lists what the API set.
    listed = await cli(running, "account", "list")
    [mine] = [a for a in listed if a["account_id"] == client.account_id]
    assert (mine["name"], mine["otp_max_attempts"], mine["send_per_second"]) == ("after", 5, 50)

    # An unset optional field in the mask goes back to the server's default.
    reset = await stub.UpdateAccount(
        A.UpdateAccountRequest(
            account=A.Account(id=client.account_id),
            update_mask=field_mask_pb2.FieldMask(paths=["otp_max_attempts", "send_per_second"]),
        ),
        metadata=admin,
    )
    assert not reset.HasField("otp_max_attempts") and not reset.HasField("send_per_second")

    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await stub.UpdateAccount(
            A.UpdateAccountRequest(
                account=A.Account(
                    id=client.account_id, name="", otp_max_attempts=0, quiet_hours=["25:00-08:00"]
                ),
                update_mask=field_mask_pb2.FieldMask(
                    paths=["name", "otp_max_attempts", "quiet_hours", "id"]
                ),
            ),
            metadata=admin,
        )
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_fields(bad.value) == {
        "update_mask",
        "account.name",
        "account.otp_max_attempts",
        "account.quiet_hours",
    }
    missing = A.Account(id=10**12, name="x")
    with pytest.raises(grpc.aio.AioRpcError) as gone:
        await stub.UpdateAccount(
            A.UpdateAccountRequest(
                account=missing, update_mask=field_mask_pb2.FieldMask(paths=["name"])
            ),
            metadata=admin,
        )
    assert gone.value.code() == grpc.StatusCode.NOT_FOUND


async def test_accounts_are_listed_in_pages(
    running: Running, admin: tuple[tuple[str, str], ...]
) -> None:
    for i in range(3):
        await running.client(name=f"paged-{i}")
    stub = accounts(running)
    ids: list[int] = []
    token = ""
    while True:
        page = await stub.ListAccounts(
            A.ListAccountsRequest(page_size=2, page_token=token), metadata=admin
        )
        assert len(page.accounts) <= 2
        ids += [a.id for a in page.accounts]
        token = page.next_page_token
        if not token:
            break
    assert ids == sorted(ids) and len(ids) >= 4
    assert len(ids) == len(set(ids))
