"""SendCloud bulk sends (seed 001: ``send`` takes up to 2,000 phones sharing one
content) against the emulator over HTTP: grouping keys, per-number outcomes, no
second message after a lost answer."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import replace

import aiohttp
import pytest

from server.domain.models import Channel, MessageStatus, OutboundMessage, UseType
from server.emulators.common import EmulatorControls, RunningEmulator
from server.emulators.sendcloud import build_app
from server.providers.sendcloud import BULK_REPEAT_DELAYS, SendCloudTransport
from tests.contract.pair_sendcloud import config, settings

pytestmark = pytest.mark.timeout(20)


def message(to: str, **data: str) -> OutboundMessage:
    return OutboundMessage(
        id=uuid.uuid4().hex,
        account_id=1,
        to_number=to,
        body="Your order has shipped.",
        use_type=UseType.MARKETING,
        attempts=1,
        template_code="order_shipped",
        data=data or {"order_no": "A-1"},
    )


def mobiles(n: int, start: int = 0) -> list[str]:
    return [f"+86138{i:08d}" for i in range(start, start + n)]


@pytest.fixture
async def emulator() -> AsyncIterator[RunningEmulator]:
    running = await RunningEmulator(build_app(settings(EmulatorControls()))).start()
    yield running
    await running.stop()


@pytest.fixture
async def transport(emulator: RunningEmulator) -> AsyncIterator[SendCloudTransport]:
    t = SendCloudTransport(config(emulator.base_url))
    yield t
    await t.close()


async def tune(emulator: RunningEmulator, **knobs: object) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{emulator.base_url}/_emulator/sendcloud", json=knobs) as reply,
    ):
        assert reply.status == 200, await reply.text()


def test_bulk_keys_group_identical_content_only(transport: SendCloudTransport) -> None:
    a, b = message("+8613800000001"), message("+8613800000002")
    assert transport.bulk_key(a) == transport.bulk_key(b) is not None
    assert transport.bulk_key(message("+8613800000003", order_no="B-2")) != transport.bulk_key(a)
    notice = replace(b, use_type=UseType.NOTIFICATION)
    assert transport.bulk_key(notice) != transport.bulk_key(a)
    # Variables in another order are the same content.
    two = {"order_no": "A-1", "name": "x"}
    swapped = {"name": "x", "order_no": "A-1"}
    assert transport.bulk_key(message("+8613800000004", **two)) == transport.bulk_key(
        message("+8613800000005", **swapped)
    )
    # Codes (one number per sendCode / sendVoice) and unmapped templates go alone.
    code = replace(a, use_type=UseType.VERIFICATION, template_code=None, code="1234")
    assert transport.bulk_key(code) is None
    assert transport.bulk_key(replace(code, channel=Channel.VOICE)) is None
    assert transport.bulk_key(replace(a, template_code="unknown")) is None


async def test_one_request_carries_every_number_and_each_gets_its_own_id(
    emulator: RunningEmulator, transport: SendCloudTransport
) -> None:
    group = [message(m) for m in mobiles(2000)]
    outcomes = await transport.send_bulk(group)
    received = emulator.state.received
    assert len(received) == 2000
    assert len({r.request_key for r in received}) == 1  # one request
    by_id = {r.provider_message_id: r.phone for r in received}
    for sent, outcome in zip(group, outcomes, strict=True):
        assert outcome.accepted
        assert by_id[outcome.provider_message_id] == sent.to_number.removeprefix("+86")


async def test_a_group_past_the_limit_or_with_a_repeated_number_is_split(
    emulator: RunningEmulator, transport: SendCloudTransport
) -> None:
    group = [message(m) for m in mobiles(2001)]
    group.insert(1, message(group[0].to_number))  # the same number twice
    outcomes = await transport.send_bulk(group)
    assert all(o.accepted for o in outcomes) and len(outcomes) == 2002
    received = emulator.state.received
    assert len(received) == 2002
    requests: dict[str, list[str]] = {}
    for item in received:
        requests.setdefault(item.request_key, []).append(item.phone)
    assert sorted(len(p) for p in requests.values()) == [2, 2000]  # seed: at most 2,000
    assert all(len(set(p)) == len(p) for p in requests.values())  # each number once
    by_id = {r.provider_message_id: r.phone for r in received}
    for sent, outcome in zip(group, outcomes, strict=True):
        assert by_id[outcome.provider_message_id] == sent.to_number.removeprefix("+86")


async def test_a_refused_number_fails_alone(
    emulator: RunningEmulator, transport: SendCloudTransport
) -> None:
    group = [message("+8613800000001"), message("+86123"), message("+8613800000003")]
    outcomes = await transport.send_bulk(group)  # 311: "partially successful"
    assert [o.accepted for o in outcomes] == [True, False, True]
    assert (outcomes[1].retryable, outcomes[1].error_code) == (False, "311")
    assert outcomes[1].final_status == MessageStatus.REJECTED
    assert [r.phone for r in emulator.state.received] == ["13800000001", "13800000003"]


async def test_a_request_refused_as_a_whole_answers_each_message(
    emulator: RunningEmulator, transport: SendCloudTransport
) -> None:
    await tune(emulator, force_code=499)  # insufficient balance
    outcomes = await transport.send_bulk([message(m) for m in mobiles(3)])
    assert {(o.accepted, o.retryable, o.error_code) for o in outcomes} == {(False, False, "499")}
    await tune(emulator, force_code=501)
    outcomes = await transport.send_bulk([message(m) for m in mobiles(3)])
    assert {(o.accepted, o.retryable, o.error_code) for o in outcomes} == {(False, True, "501")}
    assert emulator.state.received == []


async def test_a_lost_answer_is_not_sent_twice_and_the_ids_are_recovered(
    emulator: RunningEmulator, transport: SendCloudTransport
) -> None:
    group = [message(m) for m in mobiles(150)]
    await tune(emulator, drop_answers=1)
    # The answer is lost; the transport asks again with the same sendRequestId, is
    # answered 400 "duplicate request" (no smsIds) and recovers them by phone with
    # status queries of at most 100 numbers each, all within the one call: the
    # dispatcher, regrouping, would send under another id.
    outcomes = await transport.send_bulk(group)
    received = emulator.state.received
    assert len(received) == 150  # once each
    by_phone = {r.phone: r.provider_message_id for r in received}
    for sent, outcome in zip(group, outcomes, strict=True):
        assert outcome.accepted
        assert outcome.provider_message_id == by_phone[sent.to_number.removeprefix("+86")]


async def test_a_bulk_answer_lost_for_good_ends_unknown_never_resent(
    emulator: RunningEmulator, transport: SendCloudTransport
) -> None:
    group = [message(m) for m in mobiles(20)]
    await tune(emulator, drop_answers=len(BULK_REPEAT_DELAYS) + 1)
    outcomes = await transport.send_bulk(group)
    assert len(emulator.state.received) == 20  # sent once, though never answered
    for outcome in outcomes:
        assert not outcome.accepted and not outcome.retryable
        assert outcome.error_code == "BULK_OUTCOME_UNKNOWN"
        assert outcome.final_status == MessageStatus.UNDELIVERED


async def test_recovery_reads_every_page_of_a_busy_number(
    emulator: RunningEmulator, transport: SendCloudTransport
) -> None:
    earlier = [await transport.send(message("+8613800000001")) for _ in range(120)]
    assert all(o.accepted for o in earlier)
    latest = message("+8613800000001")
    await tune(emulator, drop_answers=1)
    assert (await transport.send(latest)).retryable
    again = await transport.send(latest)  # 400; its smsId is on the second page
    assert again.provider_message_id == emulator.state.received[-1].provider_message_id
    assert len(emulator.state.received) == 121


async def test_the_emulator_counts_requests_beyond_its_rate_and_still_answers_them(
    emulator: RunningEmulator, transport: SendCloudTransport
) -> None:
    # The seed has no refusal for a request rate: requests finding the bucket of one
    # second's worth empty are counted for the benchmarks (P8), and sent as usual.
    await tune(emulator, rate_limit=3)
    outcomes = [await transport.send(message(m)) for m in mobiles(5)]
    assert all(o.accepted for o in outcomes)
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{emulator.base_url}/_emulator/sendcloud") as reply,
    ):
        counters = await reply.json()
    assert counters["calls"] == {"/smsapi/send": 5}
    assert counters["peak_per_second"] == 5
    assert counters["over_rate"] == 2
