"""Retries that follow the server's advice.

smsgw answers a limit with RESOURCE_EXHAUSTED and a temporary outage (database
unreachable, a replica shutting down) with UNAVAILABLE, both with a
``google.rpc.RetryInfo`` saying how long to wait. A call is tried again after that
delay (or, without one, after a jittered exponential backoff for UNAVAILABLE), up to
``RetryPolicy.attempts`` tries. RESOURCE_EXHAUSTED without RetryInfo (a quota that
does not come back soon) and every other code are not retried.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
import grpc.aio
from google.rpc import error_details_pb2, status_pb2

STATUS_DETAILS_KEY = "grpc-status-details-bin"

Request = TypeVar("Request")
Response = TypeVar("Response")


@dataclass(frozen=True)
class RetryPolicy:
    """How a client retries. ``attempts`` counts the first try (1: never retry)."""

    attempts: int = 5
    # Backoff for UNAVAILABLE without RetryInfo: base * 2**n, full jitter, capped.
    backoff_base: float = 0.2
    backoff_max: float = 10.0
    # A RetryInfo delay longer than this is not waited for: the error is raised.
    max_delay: float = 30.0

    def backoff(self, retry: int) -> float:
        return random.uniform(0, min(self.backoff_max, self.backoff_base * 2**retry))


def rpc_status(metadata: Any) -> status_pb2.Status | None:
    """The google.rpc.Status in a call's trailing metadata, if it carries one."""
    for key, value in metadata or ():
        if key == STATUS_DETAILS_KEY and isinstance(value, bytes):
            status = status_pb2.Status()
            status.ParseFromString(value)
            return status
    return None


def retry_info_delay(metadata: Any) -> float | None:
    """Seconds the server's RetryInfo asks to wait, or None without one."""
    status = rpc_status(metadata)
    if status is None:
        return None
    for detail in status.details:
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            return float(info.retry_delay.seconds + info.retry_delay.nanos / 1e9)
    return None


def retry_delay(
    policy: RetryPolicy, code: grpc.StatusCode, metadata: Any, retry: int
) -> float | None:
    """How long to wait before try ``retry + 2``, or None if the call is not retried."""
    if retry + 1 >= policy.attempts:
        return None
    advised = retry_info_delay(metadata)
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        if advised is None:
            return None
    elif code != grpc.StatusCode.UNAVAILABLE:
        return None
    delay = policy.backoff(retry) if advised is None else advised
    return delay if delay <= policy.max_delay else None


def with_request_id(request: Any) -> Any:
    """A request whose ``request_id`` field (SendMessage, SendVerification,
    CreateBatch) is empty gets a fresh one, so that a retry after a lost answer is
    recognised by the server and stored once."""
    fields = getattr(getattr(request, "DESCRIPTOR", None), "fields_by_name", {})
    if "request_id" in fields and not request.request_id:
        copy = type(request)()
        copy.CopyFrom(request)
        copy.request_id = uuid.uuid4().hex
        return copy
    return request


def _with_metadata(
    details: grpc.aio.ClientCallDetails, extra: tuple[tuple[str, str], ...]
) -> grpc.aio.ClientCallDetails:
    metadata = grpc.aio.Metadata(*extra)
    for key, value in details.metadata or ():
        if key != "authorization":
            metadata.add(key, value)
    return grpc.aio.ClientCallDetails(
        details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
    )


class AuthAndRetry(grpc.aio.UnaryUnaryClientInterceptor):
    """Adds the credential to every unary call and retries it per the policy."""

    def __init__(
        self, auth: tuple[tuple[str, str], ...], policy: RetryPolicy, sleep: Callable[..., Any]
    ) -> None:
        self._auth = auth
        self._policy = policy
        self._sleep = sleep

    async def intercept_unary_unary(
        self,
        continuation: Callable[[grpc.aio.ClientCallDetails, Any], Any],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        details = _with_metadata(client_call_details, self._auth)
        request = with_request_id(request)
        retry = 0
        while True:
            call = await continuation(details, request)
            code = await call.code()
            if code == grpc.StatusCode.OK:
                return call
            delay = retry_delay(self._policy, code, await call.trailing_metadata(), retry)
            if delay is None:
                return call
            await self._sleep(delay)
            retry += 1


class AuthStream(grpc.aio.UnaryStreamClientInterceptor):
    """Adds the credential to every server-streaming call (retried by ``Client.watch``)."""

    def __init__(self, auth: tuple[tuple[str, str], ...]) -> None:
        self._auth = auth

    async def intercept_unary_stream(
        self,
        continuation: Callable[[grpc.aio.ClientCallDetails, Any], Any],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        return await continuation(_with_metadata(client_call_details, self._auth), request)


async def default_sleep(seconds: float) -> None:
    await asyncio.sleep(seconds)
