"""One behaviour suite, run against every transport + emulator pair and loopback."""

from __future__ import annotations

import asyncio
import importlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from server.domain.models import MessageStatus
from server.domain.ports import ProviderError, ProviderRef, Receipt, SendOutcome
from server.emulators.common import FAULTS, EmulatorControls
from tests.contract.pair import Pair
from tests.eventually import eventually

KINDS = ["loopback", "skynoo", "sendcloud", "sendsms", "twilio", "http", "smpp"]
NETWORK_KINDS = KINDS[1:]

MakePair = Callable[..., Awaitable[Pair]]


@pytest.fixture
async def make_pair() -> AsyncIterator[Callable[..., Awaitable[Pair]]]:
    pairs: list[Pair] = []

    async def make(kind: str, **controls: object) -> Pair:
        module = importlib.import_module(f"tests.contract.pair_{kind}")
        pair: Pair = await module.start_pair(EmulatorControls(**controls))  # type: ignore[arg-type]
        pairs.append(pair)
        return pair

    yield make
    for pair in pairs:
        await pair.close()


def new_id() -> str:
    return uuid.uuid4().hex


async def settled(pair: Pair, message_id: str, provider_id: str) -> list[Receipt]:
    return await eventually(
        lambda: pair.transport.query_status([ProviderRef(message_id, provider_id)]),
        until=lambda receipts: bool(receipts) and receipts[0].status != MessageStatus.SENT,
        within=10,
        interval=0.1,
        what="the message settled",
    )


@pytest.mark.parametrize("kind", KINDS)
async def test_send_is_accepted_once_with_a_provider_id(make_pair: MakePair, kind: str) -> None:
    pair = await make_pair(kind)
    message = pair.message(new_id())
    assert pair.transport.can_carry(message)
    outcome = await pair.transport.send(message)
    assert outcome.accepted, outcome
    assert outcome.provider_message_id
    received = pair.provider_received()
    if received is not None:
        assert [r.provider_message_id for r in received] == [outcome.provider_message_id]
        assert received[0].phone.lstrip("+").endswith("13800138000")
        assert "A-1" in received[0].content


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    ("outcome", "expected"),
    [("delivered", MessageStatus.DELIVERED), ("undelivered", MessageStatus.UNDELIVERED)],
)
async def test_status_query_reports_the_outcome(
    make_pair: MakePair, kind: str, outcome: str, expected: MessageStatus
) -> None:
    pair = await make_pair(kind, delivery_delay=0.2, outcome=outcome)
    message = pair.message(new_id())
    sent = await pair.transport.send(message)
    assert sent.accepted
    receipts = await settled(pair, message.id, sent.provider_message_id)
    assert [(r.message_id, r.status) for r in receipts] == [(message.id, expected)]
    assert receipts[0].provider == pair.transport.name
    if expected != MessageStatus.DELIVERED:
        assert receipts[0].error_code


@pytest.mark.parametrize("kind", NETWORK_KINDS)
async def test_status_query_takes_up_to_max_ids(make_pair: MakePair, kind: str) -> None:
    pair = await make_pair(kind, delivery_delay=0.0)
    refs = []
    for i in range(3):
        message = pair.message(new_id(), to=f"+861380013800{i}")
        sent = await pair.transport.send(message)
        assert sent.accepted
        refs.append(ProviderRef(message.id, sent.provider_message_id))
    await asyncio.sleep(0.05)
    size = min(pair.transport.capabilities.max_status_ids, len(refs))
    receipts = await pair.transport.query_status(refs[:size])
    assert {r.message_id for r in receipts} == {r.message_id for r in refs[:size]}


@pytest.mark.parametrize("kind", NETWORK_KINDS)
@pytest.mark.parametrize("fault", FAULTS)
async def test_provider_faults_become_retryable_failures(
    make_pair: MakePair, kind: str, fault: str
) -> None:
    pair = await make_pair(kind, fail_rate=1.0, fault=fault, timeout_seconds=3.0)
    outcome: SendOutcome = await pair.transport.send(pair.message(new_id()))
    assert not outcome.accepted
    assert outcome.retryable, outcome
    assert outcome.error_code
    if pair.transport.capabilities.max_status_ids > 0:  # SMPP: receipts only, no query
        with pytest.raises(ProviderError):
            await pair.transport.query_status([ProviderRef(new_id(), "p-1")])


@pytest.mark.parametrize("kind", NETWORK_KINDS)
async def test_wrong_credentials_are_a_final_refusal(make_pair: MakePair, kind: str) -> None:
    pair = await make_pair(kind)
    outcome = await pair.wrong_credentials.send(pair.message(new_id()))
    assert not outcome.accepted
    assert not outcome.retryable
    assert outcome.error_code
    received = pair.provider_received()
    if received is not None:
        assert received == []


@pytest.mark.parametrize("kind", KINDS)
async def test_can_carry_matches_capabilities(make_pair: MakePair, kind: str) -> None:
    pair = await make_pair(kind)
    free_text = pair.message(new_id())
    free_text = type(free_text)(
        **{**free_text.__dict__, "template_id": None, "template_code": None, "data": {}}
    )
    assert pair.transport.can_carry(free_text) == pair.transport.capabilities.free_text
    unknown_template = type(free_text)(
        **{**free_text.__dict__, "template_id": 99, "template_code": "no_such_template"}
    )
    if not pair.transport.capabilities.free_text:
        assert not pair.transport.can_carry(unknown_template)
