"""A real gateway on port 0 with its own database, and generated stubs to call it."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import grpc
import pytest
from sms.v1 import (
    batch_pb2_grpc,
    common_pb2,
    message_pb2,
    message_pb2_grpc,
    template_pb2_grpc,
    verification_pb2_grpc,
)

from server.app import Gateway
from server.config import Settings
from server.emulators.common import RunningEmulator
from server.providers.loopback import LoopbackConfig
from server.store.accounts import PgAccountStore
from tests.conftest import DatabaseFactory, basic_auth
from tests.eventually import eventually

FAST = Settings(
    grpc_addr="127.0.0.1:0",
    http_addr="127.0.0.1:0",
    dispatch_workers=2,
    retry_base_seconds=0.05,
    shutdown_grace=2.0,
    loopback=LoopbackConfig(delivery_delay=0.2),
)


@dataclass
class Client:
    account_id: int
    api_key: str
    api_secret: str
    metadata: tuple[tuple[str, str], ...]
    messages: message_pb2_grpc.MessageServiceAsyncStub
    templates: template_pb2_grpc.TemplateServiceAsyncStub
    verifications: verification_pb2_grpc.VerificationServiceAsyncStub
    batches: batch_pb2_grpc.BatchServiceAsyncStub


@dataclass
class Running:
    gateway: Gateway
    channel: grpc.aio.Channel

    async def client(self, *, verified: bool = True, name: str = "test") -> Client:
        store = PgAccountStore(self.gateway.pool)
        account = await store.create_account(name, verified=verified)
        credential, secret = await store.create_credential(account.id)
        return Client(
            account_id=account.id,
            api_key=credential.api_key,
            api_secret=secret,
            metadata=basic_auth(credential.api_key, secret),
            messages=message_pb2_grpc.MessageServiceStub(self.channel),
            templates=template_pb2_grpc.TemplateServiceStub(self.channel),
            verifications=verification_pb2_grpc.VerificationServiceStub(self.channel),
            batches=batch_pb2_grpc.BatchServiceStub(self.channel),
        )


GatewayFactory = Callable[..., Awaitable[Running]]


@pytest.fixture
async def emulators() -> AsyncIterator[list[RunningEmulator]]:
    """Provider emulators a test starts (tests/e2e/emulated.py); stopped at its end."""
    running: list[RunningEmulator] = []
    yield running
    for emulator in running:
        await emulator.stop()


@pytest.fixture(scope="module")
async def start_gateway(databases: DatabaseFactory) -> AsyncIterator[GatewayFactory]:
    """Starts gateways (each on its own fresh database); all are stopped at the end."""
    running: list[Running] = []

    async def start(**overrides: object) -> Running:
        """Overrides are Settings fields; database_url shares another gateway's database."""
        if "database_url" not in overrides:
            overrides["database_url"] = await databases.new(migrate=False)
        settings = dataclasses.replace(FAST, **overrides)  # type: ignore[arg-type]
        gateway = Gateway(settings)
        await gateway.start()
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{gateway.grpc_port}")
        item = Running(gateway, channel)
        running.append(item)
        return item

    yield start
    for item in running:
        await item.channel.close()
        await item.gateway.stop()


@pytest.fixture(scope="module")
async def gw(start_gateway: GatewayFactory) -> Running:
    """The module's default gateway (loopback delivers after 0.2 s)."""
    return await start_gateway()


async def wait_for(
    predicate: Callable[[], Awaitable[bool]], within: float = 10.0, interval: float = 0.05
) -> None:
    """``eventually`` (tests/eventually.py) for a predicate, as the e2e tests spell it."""
    await eventually(predicate, within=within, interval=interval)


async def final_state(
    client: Client, message_id: str, within: float = 20.0
) -> message_pb2.MessageState:
    """Waits until the message is final (DELIVERED or later) and returns its state."""
    state: list[message_pb2.MessageState] = []

    async def final() -> bool:
        reply = await client.messages.GetMessageStatus(
            message_pb2.GetMessageStatusRequest(ids=[message_id]), metadata=client.metadata
        )
        state[:] = reply.messages
        return reply.messages[0].status >= common_pb2.MESSAGE_STATUS_DELIVERED

    await wait_for(final, within=within)
    return state[0]
