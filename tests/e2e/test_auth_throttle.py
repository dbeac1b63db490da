"""Failed-auth throttling holds under parallel guessing, locks out no one else, and does
not tell by its timing which api keys exist."""

from __future__ import annotations

import asyncio
import statistics
import time

import grpc
import pytest
from sms.v1 import template_pb2

from server.domain.limits import RateLimitSettings
from tests.conftest import basic_auth
from tests.e2e.conftest import Client, GatewayFactory, Running
from tests.e2e.errors import reason

PER_MINUTE = 10
LIMITS = RateLimitSettings(0, 0, 0, 1.0, PER_MINUTE)
QUERY = template_pb2.ListTemplatesRequest(page_size=1)


@pytest.fixture(scope="module")
async def throttled(start_gateway: GatewayFactory) -> Running:
    return await start_gateway(limits=LIMITS)


async def code_of(client: Client, metadata: tuple[tuple[str, str], ...]) -> grpc.StatusCode:
    try:
        await client.templates.ListTemplates(QUERY, metadata=metadata)
    except grpc.aio.AioRpcError as err:
        return err.code()
    return grpc.StatusCode.OK


async def test_parallel_wrong_secrets_are_hashed_at_most_the_limit(throttled: Running) -> None:
    client = await throttled.client()
    hashed_before = throttled.gateway.authenticator.slow_checks
    codes = await asyncio.gather(
        *(code_of(client, basic_auth(client.api_key, f"wrong-{i}")) for i in range(200))
    )
    hashed = throttled.gateway.authenticator.slow_checks - hashed_before
    # Each wrong secret is counted before it is hashed: at most the limit get a
    # hash (and answer UNAUTHENTICATED), the rest are refused at once.
    assert hashed <= PER_MINUTE
    assert codes.count(grpc.StatusCode.UNAUTHENTICATED) == hashed
    assert codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) == 200 - hashed


async def test_one_guesser_behind_a_nat_does_not_lock_out_the_others(throttled: Running) -> None:
    guessed, neighbour, regular = [await throttled.client() for _ in range(3)]
    regular_ok = await code_of(regular, regular.metadata)  # verified before the guessing
    assert regular_ok == grpc.StatusCode.OK
    for i in range(PER_MINUTE + 3):
        await code_of(guessed, basic_auth(guessed.api_key, f"wrong-{i}"))
    try:
        await guessed.templates.ListTemplates(QUERY, metadata=guessed.metadata)
        raise AssertionError("the guessed key is not throttled")
    except grpc.aio.AioRpcError as err:
        assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert reason(err) == "TOO_MANY_AUTH_FAILURES"
    # Same address (127.0.0.1), other keys: a never-seen right secret is accepted,
    # and so is one verified earlier.
    assert await code_of(neighbour, neighbour.metadata) == grpc.StatusCode.OK
    assert await code_of(regular, regular.metadata) == grpc.StatusCode.OK


async def test_a_verified_secret_keeps_working_while_its_key_is_guessed(
    throttled: Running,
) -> None:
    client = await throttled.client()
    assert await code_of(client, client.metadata) == grpc.StatusCode.OK
    for i in range(PER_MINUTE + 3):
        await code_of(client, basic_auth(client.api_key, f"wrong-{i}"))
    assert await code_of(client, client.metadata) == grpc.StatusCode.OK


async def test_an_unknown_key_answers_as_slowly_as_a_wrong_secret(
    start_gateway: GatewayFactory,
) -> None:
    running = await start_gateway(limits=RateLimitSettings(0, 0, 0, 1.0, 0))
    client = await running.client()

    async def timed(metadata: tuple[tuple[str, str], ...]) -> float:
        started = time.perf_counter()
        assert await code_of(client, metadata) == grpc.StatusCode.UNAUTHENTICATED
        return time.perf_counter() - started

    known, unknown = [], []
    for i in range(6):
        known.append(await timed(basic_auth(client.api_key, f"wrong-{i}")))
        unknown.append(await timed(basic_auth(f"app_unknown{i:020d}", f"wrong-{i}")))
    known_median, unknown_median = statistics.median(known), statistics.median(unknown)
    print(f"wrong secret {known_median * 1e3:.1f} ms, unknown key {unknown_median * 1e3:.1f} ms")
    # Both pay the slow hash (scrypt, tens of ms); an unknown key used to answer in
    # ~2 ms against ~40 ms.
    assert unknown_median >= 0.6 * known_median
    assert known_median >= 0.6 * unknown_median
