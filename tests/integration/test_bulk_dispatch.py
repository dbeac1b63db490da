"""The dispatcher's bulk path on a real PostgreSQL, against a provider whose bulk
requests fail as a whole: the loopback provider answers every number, so these
answers (an exception, a wrong number of outcomes, a rate of one request a minute)
come from a scripted bulk transport. Each message ends retried on its own; the
breaker counts requests, not numbers; a request takes one rate token."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Hashable, Sequence
from dataclasses import replace

import asyncpg
from aiolimiter import AsyncLimiter

from server.dispatch.breaker import CLOSED, OPEN, BreakerSettings, CircuitBreaker
from server.dispatch.provider_set import ProviderSet
from server.dispatch.retry import RetryPolicy
from server.dispatch.route_choice import Router
from server.dispatch.worker import Dispatcher
from server.domain.models import MessageStatus, OutboundMessage, Priority
from server.domain.ports import Capabilities, ProviderRef, Receipt, SendOutcome
from server.routes_file import RouteSpec
from server.store.accounts import PgAccountStore
from server.store.messages import PgMessageStore
from server.store.outbox import PgOutbox
from tests.integration.builders import new_message


class ScriptedBulk:
    """A bulk provider answering each request as ``answer`` says."""

    name = "bulk"
    capabilities = Capabilities(free_text=True, templates=True)
    max_bulk = 3

    def __init__(self, answer: str) -> None:
        self.answer = answer
        self.requests: list[list[str]] = []

    def can_carry(self, message: OutboundMessage) -> bool:
        return True

    def bulk_key(self, message: OutboundMessage) -> Hashable | None:
        return message.body

    async def send(self, message: OutboundMessage) -> SendOutcome:
        raise AssertionError("batch messages go in bulk requests")

    async def send_bulk(self, messages: Sequence[OutboundMessage]) -> list[SendOutcome]:
        self.requests.append([m.id for m in messages])
        if self.answer == "raise":
            raise ConnectionResetError("the provider hung up")
        outcomes = [SendOutcome(accepted=True, provider_message_id=f"p-{m.id}") for m in messages]
        return outcomes[:-1] if self.answer == "short" else outcomes

    async def query_status(self, refs: Sequence[ProviderRef]) -> list[Receipt]:
        return []

    async def close(self) -> None:
        pass


def provider_set(
    transport: ScriptedBulk, breaker: CircuitBreaker, limiter: AsyncLimiter | None = None
) -> ProviderSet:
    return ProviderSet(
        transports={"bulk": transport},
        kinds={"bulk": "scripted"},
        router=Router([RouteSpec(providers=("bulk",))]),
        breakers={"bulk": breaker},
        limiters={"bulk": limiter or contextlib.nullcontext()},
    )


async def batch_messages(pool: asyncpg.Pool, n: int = 6) -> list[str]:
    account = (await PgAccountStore(pool).create_account("bulk", verified=True)).id
    messages = [
        replace(new_message(account, Priority.BATCH), to_number=f"+86138000001{i:02d}")
        for i in range(n)
    ]
    store = PgMessageStore(pool)
    for m in messages:
        await store.insert(m)
    return [m.id for m in messages]


async def run_until(
    pool: asyncpg.Pool,
    providers: ProviderSet,
    ids: list[str],
    done: MessageStatus,
    claim_size: int = 50,
) -> list[asyncpg.Record]:
    dispatcher = Dispatcher(
        PgOutbox(pool),
        providers,
        workers=1,
        claim_size=claim_size,
        lease_seconds=10,
        idle_poll=0.05,
        retry=RetryPolicy(max_attempts=5, base_delay=600),  # no retry during the test
    )
    dispatcher.start()
    try:
        async with asyncio.timeout(10):
            while True:
                rows = await pool.fetch(
                    "SELECT id, status, attempts, error_code, provider_message_id "
                    "FROM messages WHERE id = ANY($1::text[]) ORDER BY id",
                    ids,
                )
                if all(r["status"] == done for r in rows):
                    return rows
                await asyncio.sleep(0.05)
    finally:
        await dispatcher.stop()
        # Out of the next test's way (a retry is due within minutes).
        await pool.execute("UPDATE messages SET status = 8 WHERE status IN (1, 2)")


async def test_a_request_failed_as_a_whole_retries_each_message_and_counts_once(
    pool: asyncpg.Pool,
) -> None:
    ids = await batch_messages(pool)
    transport = ScriptedBulk("raise")
    breaker = CircuitBreaker(BreakerSettings(min_failures=3, reset_seconds=60))
    rows = await run_until(
        pool,
        provider_set(transport, breaker),
        ids,
        MessageStatus.QUEUED,
    )
    assert sorted(len(r) for r in transport.requests) == [3, 3]
    assert {(r["status"], r["error_code"], r["attempts"]) for r in rows} == {
        (MessageStatus.QUEUED, "PROVIDER_ERROR", 1)
    }
    # Two failed requests: two failures of three, though six messages failed.
    assert breaker.state == CLOSED
    breaker.record_failure()
    assert breaker.state == OPEN


async def test_a_wrong_number_of_answers_sends_nobody_as_sent(pool: asyncpg.Pool) -> None:
    ids = await batch_messages(pool)
    transport = ScriptedBulk("short")
    rows = await run_until(
        pool,
        provider_set(transport, CircuitBreaker()),
        ids,
        MessageStatus.QUEUED,
    )
    assert len(transport.requests) == 2
    assert {(r["status"], r["error_code"]) for r in rows} == {
        (MessageStatus.QUEUED, "PROVIDER_ERROR")
    }


async def test_a_request_takes_one_rate_token_for_all_its_numbers(pool: asyncpg.Pool) -> None:
    ids = await batch_messages(pool)
    transport = ScriptedBulk("ok")
    # Two requests a minute: one token a number would send two of the six.
    rows = await run_until(
        pool,
        provider_set(transport, CircuitBreaker(), AsyncLimiter(2, 60)),
        ids,
        MessageStatus.SENT,
    )
    assert len(transport.requests) == 2
    assert [r["provider_message_id"] for r in rows] == [f"p-{r['id']}" for r in rows]


async def test_after_a_claim_that_shared_requests_the_next_claims_fill_whole_requests(
    pool: asyncpg.Pool,
) -> None:
    # Claims of 2: the first goes in one request of 2, so the next claims take 2
    # requests' worth, as much as one request holds (3): full requests from then on.
    ids = await batch_messages(pool, 11)
    transport = ScriptedBulk("accept")
    breaker = CircuitBreaker(BreakerSettings())
    rows = await run_until(
        pool, provider_set(transport, breaker), ids, MessageStatus.SENT, claim_size=2
    )
    assert len(rows) == 11
    assert [len(r) for r in transport.requests] == [2, 3, 3, 3]
