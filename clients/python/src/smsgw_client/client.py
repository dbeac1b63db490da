"""The smsgw client: one grpc.aio channel, the credential on every call, retries."""

from __future__ import annotations

import base64
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from types import TracebackType
from typing import Any

import grpc
import grpc.aio
from sms.v1 import (
    batch_pb2_grpc,
    common_pb2,
    message_pb2,
    message_pb2_grpc,
    template_pb2_grpc,
    verification_pb2_grpc,
    webhook_pb2_grpc,
)

from smsgw_client.retry import AuthAndRetry, AuthStream, RetryPolicy, default_sleep, retry_delay

# Statuses after which a message never changes again.
FINAL_STATUSES = frozenset(
    {
        common_pb2.MESSAGE_STATUS_DELIVERED,
        common_pb2.MESSAGE_STATUS_UNDELIVERED,
        common_pb2.MESSAGE_STATUS_FAILED,
        common_pb2.MESSAGE_STATUS_REJECTED,
        common_pb2.MESSAGE_STATUS_CANCELLED,
    }
)


def basic_auth(api_key: str, api_secret: str) -> tuple[tuple[str, str], ...]:
    """The ``authorization: Basic base64(api_key:api_secret)`` metadata of every call."""
    token = base64.b64encode(f"{api_key}:{api_secret}".encode()).decode()
    return (("authorization", f"Basic {token}"),)


class Client:
    """An asyncio client of one smsgw address (``host:port``, or a ``dns:///`` name
    for client-side round robin over a headless Service).

    The typed stubs are attributes (``client.messages.SendMessage(request)``); each
    unary call carries the credential and is retried per ``retry`` (RetryInfo first).
    A SendMessage, SendVerification or CreateBatch without a ``request_id`` gets one,
    so a retry is stored once. ``watch`` follows status changes across disconnects.

        async with Client("127.0.0.1:50051", api_key, api_secret) as client:
            sent = await client.messages.SendMessage(
                message_pb2.SendMessageRequest(mobile="+8613800138000", text="Hi",
                                               use_type=common_pb2.USE_TYPE_NOTIFICATION))
            async for event in client.watch([sent.id]):
                print(event.status)
    """

    def __init__(
        self,
        target: str,
        api_key: str,
        api_secret: str,
        *,
        credentials: grpc.ChannelCredentials | None = None,
        retry: RetryPolicy | None = None,
        options: Sequence[tuple[str, Any]] = (),
        sleep: Callable[[float], Awaitable[None]] = default_sleep,
    ) -> None:
        self.retry = retry or RetryPolicy()
        self._sleep = sleep
        auth = basic_auth(api_key, api_secret)
        interceptors: list[Any] = [AuthAndRetry(auth, self.retry, sleep), AuthStream(auth)]
        if credentials is None:
            self.channel = grpc.aio.insecure_channel(
                target, options=list(options), interceptors=interceptors
            )
        else:
            self.channel = grpc.aio.secure_channel(
                target, credentials, options=list(options), interceptors=interceptors
            )
        self.messages = message_pb2_grpc.MessageServiceStub(self.channel)
        self.verifications = verification_pb2_grpc.VerificationServiceStub(self.channel)
        self.batches = batch_pb2_grpc.BatchServiceStub(self.channel)
        self.templates = template_pb2_grpc.TemplateServiceStub(self.channel)
        self.webhooks = webhook_pb2_grpc.WebhookServiceStub(self.channel)

    @classmethod
    def from_env(cls, **kwargs: Any) -> Client:
        """``SMSGW_ADDR`` (default 127.0.0.1:50051), ``SMSGW_API_KEY``, ``SMSGW_API_SECRET``."""
        return cls(
            os.environ.get("SMSGW_ADDR", "127.0.0.1:50051"),
            os.environ["SMSGW_API_KEY"],
            os.environ["SMSGW_API_SECRET"],
            **kwargs,
        )

    async def close(self) -> None:
        await self.channel.close()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def watch(
        self, ids: Iterable[str] = (), *, after_event_id: int = 0
    ) -> AsyncIterator[message_pb2.MessageStatusEvent]:
        """Status events of ``ids`` (or of every message of the account without ids),
        across disconnects: when the stream breaks with UNAVAILABLE (a replica shutting
        down, a network cut, the database away) it is opened again after the server's
        RetryInfo delay (or a backoff) with the last ``event_id`` seen as
        ``after_event_id``, so no event is missed or repeated. With ids it ends once
        every watched message is final; without, it never ends by itself.

        Without ids and ``after_event_id`` 0, events between the opening and the first
        one received are not replayed after a break before that first event (the
        server starts such a stream at its newest event): pass the last id you know.
        """
        watched = list(ids)
        pending = set(watched)
        last = after_event_id
        retry = 0
        while True:
            request = message_pb2.WatchMessageStatusRequest(ids=watched, after_event_id=last)
            stream = self.messages.WatchMessageStatus(request)
            try:
                async for event in stream:
                    retry = 0
                    if event.event_id <= last:
                        continue  # already given before a break
                    last = event.event_id
                    yield event
                    if event.status in FINAL_STATUSES:
                        pending.discard(event.message_id)
                    if watched and not pending:
                        stream.cancel()
                        return
                return
            except grpc.aio.AioRpcError as error:
                delay = retry_delay(self.retry, error.code(), error.trailing_metadata(), retry)
                if delay is None:
                    raise
                await self._sleep(delay)
                retry += 1
