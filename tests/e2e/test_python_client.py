"""The Python client package (clients/python, ``smsgw_client``) against a real gateway.

Basic auth on every call, retries that wait what the server's RetryInfo says (and no
retry where there is nothing to wait for), and a watch that resumes after its TCP
connection is cut, through a real proxy between the client and the gateway.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import grpc
import pytest
from sms.v1 import common_pb2, message_pb2
from smsgw_client import Client, RetryPolicy, retry_info_delay

from server.domain.models import UseType
from server.providers.loopback import LoopbackConfig
from tests.e2e.conftest import GatewayFactory, Running, final_state

NOTIFY = common_pb2.USE_TYPE_NOTIFICATION


def _send(mobile: str, text: str = "hello") -> message_pb2.SendMessageRequest:
    return message_pb2.SendMessageRequest(mobile=mobile, text=text, use_type=NOTIFY)


class Sleeps:
    """The client's sleep: waits for real and records each delay it was asked for."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        await asyncio.sleep(seconds)


class CuttableProxy:
    """A TCP proxy to the gateway whose open connections a test can cut at once."""

    def __init__(self, port: int) -> None:
        self._port = port
        self._writers: list[asyncio.StreamWriter] = []
        self.connections = 0
        self.port = 0
        self.server: asyncio.Server | None = None

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = int(self.server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._port)
        self._writers += [writer, up_writer]

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    def cut(self) -> None:
        for writer in self._writers:
            writer.transport.abort()
        self._writers.clear()

    async def stop(self) -> None:
        self.cut()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


@pytest.fixture(scope="module")
async def gateway(start_gateway: GatewayFactory) -> Running:
    # Delivery 1.5 s after the send: time to cut a watch before the message is final.
    return await start_gateway(
        mobile_intervals={UseType.NOTIFICATION: 1.0},
        loopback=LoopbackConfig(delivery_delay=1.5),
    )


@pytest.fixture
async def proxy(gateway: Running) -> AsyncIterator[CuttableProxy]:
    running = CuttableProxy(gateway.gateway.grpc_port)
    await running.start()
    yield running
    await running.stop()


def _client(gateway: Running, api_key: str, secret: str, **kwargs: object) -> Client:
    return Client(f"127.0.0.1:{gateway.gateway.grpc_port}", api_key, secret, **kwargs)  # type: ignore[arg-type]


async def test_calls_carry_the_credential_and_a_wrong_one_is_not_retried(
    gateway: Running,
) -> None:
    account = await gateway.client(name="pkg-auth")
    sleeps = Sleeps()
    async with _client(gateway, account.api_key, account.api_secret, sleep=sleeps) as client:
        sent = await client.messages.SendMessage(_send("+8613800138100"))
        reply = await client.messages.GetMessageStatus(
            message_pb2.GetMessageStatusRequest(ids=[sent.id])
        )
        assert [m.id for m in reply.messages] == [sent.id]
    async with _client(gateway, account.api_key, "not-the-secret", sleep=sleeps) as wrong:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await wrong.messages.SendMessage(_send("+8613800138101"))
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert sleeps.delays == []


async def test_a_refusal_with_retry_info_is_retried_after_the_advised_delay(
    gateway: Running,
) -> None:
    account = await gateway.client(name="pkg-retry")
    sleeps = Sleeps()
    async with _client(gateway, account.api_key, account.api_secret, sleep=sleeps) as client:
        first = await client.messages.SendMessage(_send("+8613800138200", "one"))
        started = time.monotonic()
        # The same mobile within its 1 s interval: RESOURCE_EXHAUSTED with RetryInfo,
        # waited out by the client, then accepted.
        second = await client.messages.SendMessage(_send("+8613800138200", "two"))
        waited = time.monotonic() - started
    assert second.id != first.id
    assert len(sleeps.delays) >= 1 and all(0 < d <= 1.0 for d in sleeps.delays), sleeps.delays
    assert waited >= sleeps.delays[0]
    states = await account.messages.GetMessageStatus(
        message_pb2.GetMessageStatusRequest(ids=[first.id, second.id]), metadata=account.metadata
    )
    assert len(states.messages) == 2


async def test_without_retries_the_refusal_and_its_retry_info_reach_the_caller(
    gateway: Running,
) -> None:
    account = await gateway.client(name="pkg-noretry")
    policy = RetryPolicy(attempts=1)
    async with _client(gateway, account.api_key, account.api_secret, retry=policy) as client:
        await client.messages.SendMessage(_send("+8613800138300"))
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await client.messages.SendMessage(_send("+8613800138300"))
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    delay = retry_info_delay(caught.value.trailing_metadata())
    assert delay is not None and 0 < delay <= 1.0


async def test_watch_resumes_from_the_last_event_after_the_connection_is_cut(
    gateway: Running, proxy: CuttableProxy
) -> None:
    account = await gateway.client(name="pkg-watch")
    sent = await account.messages.SendMessage(_send("+8613800138400"), metadata=account.metadata)
    sleeps = Sleeps()
    client = Client(f"127.0.0.1:{proxy.port}", account.api_key, account.api_secret, sleep=sleeps)
    seen: list[message_pb2.MessageStatusEvent] = []
    async with client:
        async for event in client.watch([sent.id]):
            seen.append(event)
            if len(seen) == 1:
                assert event.status not in (
                    common_pb2.MESSAGE_STATUS_DELIVERED,
                    common_pb2.MESSAGE_STATUS_UNDELIVERED,
                ), "the message was final before the cut: nothing to resume"
                proxy.cut()
    # The stream broke once, was opened again through a new connection, and gave
    # every later event once, in order, up to DELIVERED.
    assert proxy.connections >= 2
    assert sleeps.delays, "the break was retried"
    ids = [e.event_id for e in seen]
    assert ids == sorted(set(ids)), ids
    assert seen[-1].status == common_pb2.MESSAGE_STATUS_DELIVERED
    assert (await final_state(account, sent.id)).status == common_pb2.MESSAGE_STATUS_DELIVERED
    # The same events as an uninterrupted replay from the first one.
    replay = account.messages.WatchMessageStatus(
        message_pb2.WatchMessageStatusRequest(ids=[sent.id], after_event_id=ids[0] - 1),
        metadata=account.metadata,
    )
    expected: list[int] = []
    async for event in replay:
        expected.append(event.event_id)
        if event.status == common_pb2.MESSAGE_STATUS_DELIVERED:
            replay.cancel()
            break
    assert ids == expected
