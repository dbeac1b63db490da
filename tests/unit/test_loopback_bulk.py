"""The loopback provider's bulk API: one request for many numbers, refused numbers
one by one, latency per request, receipts for each accepted number, and its settings."""

from __future__ import annotations

import asyncio
import random
import time

import pytest

from server.config import ConfigError, Settings
from server.dispatch.bulk import bulk_api
from server.domain.models import Channel, MessageStatus, OutboundMessage, UseType
from server.domain.ports import BulkTransport, Receipt
from server.providers.loopback import LoopbackConfig, LoopbackTransport


def msg(n: int, to: str | None = None, channel: Channel = Channel.SMS) -> OutboundMessage:
    return OutboundMessage(
        id=f"m{n}",
        account_id=1,
        to_number=to or f"+86138{n:08d}",
        body=f"Hello {n}",
        use_type=UseType.MARKETING,
        attempts=1,
        channel=channel,
    )


def transport(**config: object) -> tuple[LoopbackTransport, list[Receipt]]:
    receipts: list[Receipt] = []

    async def sink(receipt: Receipt) -> None:
        receipts.append(receipt)

    return LoopbackTransport(LoopbackConfig(**config), sink, rng=random.Random(7)), receipts  # type: ignore[arg-type]


async def test_one_request_carries_every_number_and_each_gets_its_receipt() -> None:
    lb, receipts = transport(delivery_delay=0.01, max_bulk=50)
    assert isinstance(lb, BulkTransport) and bulk_api(lb) is lb
    messages = [msg(i) for i in range(50)]
    outcomes = await lb.send_bulk(messages)
    assert [o.provider_message_id for o in outcomes] == [f"lb-m{i}" for i in range(50)]
    assert all(o.accepted for o in outcomes)
    assert (lb.requests, lb.bulk_requests) == (1, 1)
    await asyncio.sleep(0.1)
    assert sorted(r.message_id for r in receipts) == sorted(m.id for m in messages)
    assert {r.status for r in receipts} == {MessageStatus.DELIVERED}
    await lb.close()


async def test_refused_numbers_fail_alone_and_the_rest_is_accepted() -> None:
    lb, _ = transport(refused=("+8613800000003", "+861380000001"))
    outcomes = await lb.send_bulk([msg(i) for i in range(20)])
    refused = {i for i, o in enumerate(outcomes) if not o.accepted}
    assert refused == {3, *range(10, 20)}
    for i in refused:
        assert outcomes[i].error_code == "LOOPBACK_REFUSED"
        assert not outcomes[i].retryable
        assert outcomes[i].final_status == MessageStatus.REJECTED
    assert set(lb.accepted) == {f"m{i}" for i in range(20) if i not in refused}
    # Alone, the same number is refused the same way.
    assert (await lb.send(msg(3))).error_code == "LOOPBACK_REFUSED"
    await lb.close()


async def test_failure_rate_fails_numbers_retryably_one_by_one() -> None:
    lb, _ = transport(failure_rate=0.5)
    outcomes = await lb.send_bulk([msg(i) for i in range(400)])
    failed = [o for o in outcomes if not o.accepted]
    assert 120 < len(failed) < 280
    assert all(o.retryable and o.error_code == "LOOPBACK_UNAVAILABLE" for o in failed)
    assert sum(lb.accepted.values()) == 400 - len(failed)
    await lb.close()


async def test_latency_is_per_request_not_per_number() -> None:
    lb, _ = transport(latency=0.2)
    started = time.perf_counter()
    await lb.send_bulk([msg(i) for i in range(500)])
    took = time.perf_counter() - started
    assert 0.2 <= took < 0.6
    await lb.close()


async def test_a_request_it_cannot_take_is_refused_whole() -> None:
    lb, _ = transport(max_bulk=3)
    too_many = await lb.send_bulk([msg(i) for i in range(4)])
    twice = await lb.send_bulk([msg(1), msg(2, to=msg(1).to_number)])
    for outcomes in (too_many, twice):
        assert {(o.accepted, o.retryable, o.error_code) for o in outcomes} == {
            (False, False, "LOOPBACK_BAD_REQUEST")
        }
    assert not lb.accepted and lb.requests == 0
    await lb.close()


def test_texts_share_requests_calls_do_not() -> None:
    lb, _ = transport()
    assert lb.bulk_key(msg(1)) == lb.bulk_key(msg(2)) is not None
    assert lb.bulk_key(msg(3, channel=Channel.VOICE)) is None
    one, _ = transport(max_bulk=1)
    assert bulk_api(one) is None  # one number a request: no bulk API


def test_settings_for_bulk_and_the_loopback_bulk_api() -> None:
    settings = Settings.from_env(
        {
            "SMSGW_LOOPBACK_MAX_BULK": "250",
            "SMSGW_LOOPBACK_LATENCY_MS": "40",
            "SMSGW_LOOPBACK_REFUSED": "+8613800000001, +1555",
            "SMSGW_DISPATCH_BULK": "false",
        }
    )
    assert settings.loopback.max_bulk == 250
    assert settings.loopback.latency == 0.04
    assert settings.loopback.refused == ("+8613800000001", "+1555")
    assert settings.dispatch_bulk is False
    defaults = Settings.from_env({})
    assert defaults.dispatch_bulk is True
    assert (defaults.loopback.max_bulk, defaults.loopback.latency, defaults.loopback.refused) == (
        1000,
        0.0,
        (),
    )
    for env in (
        {"SMSGW_LOOPBACK_MAX_BULK": "0"},
        {"SMSGW_LOOPBACK_LATENCY_MS": "-1"},
        {"SMSGW_LOOPBACK_REFUSED": "8613800000001"},
        {"SMSGW_LOOPBACK_REFUSED": "+86-138"},
        {"SMSGW_DISPATCH_BULK": "maybe"},
    ):
        with pytest.raises(ConfigError, match=next(iter(env))):
            Settings.from_env(env)
