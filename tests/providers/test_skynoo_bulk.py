"""Skynoo batch tasks over real HTTP: the bulk transport against the emulator
(written from seed 000 alone), per-number outcomes and receipts, and no duplicate
after a lost answer."""

from __future__ import annotations

import asyncio
import base64
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

import aiohttp
import pytest

from server.domain.models import MessageStatus, OutboundMessage, UseType
from server.domain.ports import BulkTransport, ProviderRef, Receipt, SendOutcome
from server.emulators.common import EmulatorControls, EmulatorSettings, RunningEmulator
from server.emulators.skynoo import build_app
from server.providers.loopback import LoopbackConfig
from server.providers.registry import build_transport
from server.providers.skynoo import SkynooConfig
from server.providers.skynoo_bulk import (
    MAX_BULK,
    OUTCOME_UNKNOWN,
    SkynooBulkTransport,
    parse_task_message_id,
)
from server.routes_file import ProviderSpec
from tests.contract.pair_skynoo import API_KEY, API_SECRET
from tests.eventually import eventually

pytestmark = pytest.mark.timeout(10)

CREATE = "/api/sms/v1/batch/create"
DETAIL = "/api/sms/v1/batch/detail"
CONTENT = "Your order #order_no# has #state#."


@dataclass
class Sky:
    emulator: RunningEmulator
    transport: SkynooBulkTransport

    @property
    def controls(self) -> EmulatorControls:
        return self.emulator.state.settings.controls

    def bodies(self, path: str) -> list[Any]:
        return [r.json() for r in self.emulator.state.requests if r.path == path]

    async def force(self, code: str, http_status: int | None = None) -> None:
        body: dict[str, Any] = {"code": code, "message": "forced"}
        if http_status is not None:
            body["http_status"] = http_status
        async with (
            aiohttp.ClientSession() as http,
            http.post(self.emulator.base_url + "/_emulator/skynoo/answer", json=body) as answer,
        ):
            assert answer.status == 200


Start = Callable[..., Awaitable[Sky]]


@pytest.fixture
async def start() -> AsyncIterator[Start]:
    closers: list[Callable[[], Awaitable[None]]] = []

    async def make(**controls: Any) -> Sky:
        settings = EmulatorSettings(
            credential_id=API_KEY,
            credential_secret=API_SECRET,
            controls=EmulatorControls(**controls),
            seed=5,
        )
        emulator = await RunningEmulator(build_app(settings)).start()
        config = SkynooConfig("sky", emulator.base_url, API_KEY, API_SECRET, timeout=1.0)
        transport = SkynooBulkTransport(config)
        closers.extend([emulator.stop, transport.close])
        return Sky(emulator, transport)

    yield make
    for close in reversed(closers):
        await close()


def number(i: int) -> str:
    return f"+86138{i:08d}"


def text(to: str, body: str = "Your order has shipped.") -> OutboundMessage:
    return OutboundMessage(uuid.uuid4().hex, 1, to, body, UseType.NOTIFICATION, 1)


def templated(to: str, order_no: str, state: str = "shipped") -> OutboundMessage:
    return replace(
        text(to, f"Your order {order_no} has {state}."),
        template_id=3,
        template_code="order",
        data={"state": state, "order_no": order_no},
        variables=("order_no", "state"),
        template_content=CONTENT,
    )


def refs_of(messages: list[OutboundMessage], outcomes: list[SendOutcome]) -> list[ProviderRef]:
    return [
        ProviderRef(m.id, o.provider_message_id) for m, o in zip(messages, outcomes, strict=True)
    ]


async def settled(sky: Sky, refs: list[ProviderRef]) -> list[Receipt]:
    return await eventually(
        lambda: sky.transport.query_status(refs),
        until=lambda rs: len(rs) == len(refs) and all(r.status != MessageStatus.SENT for r in rs),
        within=5,
        what="every receipt settled",
    )


def test_messages_share_a_task_only_when_one_content_serves_them_all() -> None:
    sky = SkynooBulkTransport(SkynooConfig("sky", "http://127.0.0.1:1", API_KEY, API_SECRET))
    key = sky.bulk_key
    assert key(text(number(1))) == key(text(number(2))) is not None
    assert key(text(number(1))) != key(text(number(1), "Another text."))
    marketing = replace(text(number(1)), use_type=UseType.MARKETING)
    assert key(marketing) != key(text(number(1)))
    # Different values, one template text: one task with per-number templateData.
    assert key(templated(number(1), "A1")) == key(templated(number(2), "B2")) is not None
    # A text Skynoo would read a variable in, codes and voice go alone.
    assert key(text(number(1), "Press #1# now")) is None
    assert key(replace(text(number(1)), use_type=UseType.VERIFICATION)) is None
    assert key(replace(text(number(1)), code="123456")) is None
    # A template whose text does not give this body is sent as the body itself.
    unfaithful = replace(templated(number(1), "A1"), body="Something else")
    assert key(unfaithful) == key(text(number(2), "Something else"))


def test_the_registry_gives_skynoo_a_bulk_transport() -> None:
    spec = ProviderSpec("sky", "skynoo", "http://127.0.0.1:1", {"api_key": "a", "api_secret": "s"})

    async def ignore(receipt: Receipt) -> None:
        pass

    transport = build_transport(spec, receipts=ignore, loopback=LoopbackConfig())
    assert isinstance(transport, BulkTransport)
    assert transport.max_bulk == MAX_BULK == 1000


async def test_a_template_group_is_one_task_with_each_numbers_values(start: Start) -> None:
    sky = await start(delivery_delay=0.2)
    messages = [templated(number(i), f"A{i}", "shipped" if i % 2 else "arrived") for i in range(3)]
    outcomes = await sky.transport.send_bulk(messages)
    assert sky.bodies(CREATE) == [
        {
            "useType": 2,
            "content": CONTENT,
            "numbers": [number(0), number(1), number(2)],
            "templateData": {
                number(0): {"state": "arrived", "order_no": "A0"},
                number(1): {"state": "shipped", "order_no": "A1"},
                number(2): {"state": "arrived", "order_no": "A2"},
            },
        }
    ]
    assert all(o.accepted for o in outcomes)
    parsed = [parse_task_message_id(o.provider_message_id) for o in outcomes]
    assert parsed == [(1001, number(0)), (1001, number(1)), (1001, number(2))]
    got = {r.phone: r.content for r in sky.emulator.state.received}
    assert got == {m.to_number: m.body for m in messages}


@pytest.mark.parametrize(
    ("outcome", "expected", "error"),
    [
        ("delivered", MessageStatus.DELIVERED, ""),
        ("undelivered", MessageStatus.UNDELIVERED, "E66"),
    ],
)
async def test_each_number_of_a_task_settles_to_its_own_message(
    start: Start, outcome: str, expected: MessageStatus, error: str
) -> None:
    sky = await start(delivery_delay=0.2, outcome=outcome)
    messages = [text(number(i)) for i in range(4)]
    outcomes = await sky.transport.send_bulk(messages)
    assert "templateData" not in sky.bodies(CREATE)[0]
    refs = refs_of(messages, outcomes)
    receipts = await settled(sky, refs)
    assert sorted((r.message_id, r.status, r.error_code) for r in receipts) == sorted(
        (m.id, expected, error) for m in messages
    )


async def test_numbers_past_the_first_page_of_records_are_found(start: Start) -> None:
    sky = await start(delivery_delay=0.1)
    messages = [text(number(i)) for i in range(150)]
    outcomes = await sky.transport.send_bulk(messages)
    assert len(sky.bodies(CREATE)) == 1
    refs = refs_of(messages, outcomes)[-30:]
    receipts = await settled(sky, refs)
    assert {r.message_id for r in receipts} == {ref.message_id for ref in refs}
    pages = [b["pageNo"] for b in sky.bodies(DETAIL)]
    assert 2 in pages and all(b["pageSize"] == 100 for b in sky.bodies(DETAIL))


async def test_a_number_the_operator_blocks_fails_alone(start: Start) -> None:
    sky = await start(delivery_delay=0.1, partial_rate=1.0)
    message = text(number(7))
    [outcome] = await sky.transport.send_bulk([message])
    assert outcome.accepted
    [receipt] = await settled(sky, [ProviderRef(message.id, outcome.provider_message_id)])
    assert (receipt.status, receipt.error_code) == (MessageStatus.REJECTED, "BLOCKED")


async def test_a_refused_task_refuses_every_message_and_a_throttled_one_is_retried(
    start: Start,
) -> None:
    sky = await start()
    messages = [text(number(i)) for i in range(3)]
    await sky.force("400")
    refused = await sky.transport.send_bulk(messages)
    assert {(o.accepted, o.retryable, o.error_code, o.final_status) for o in refused} == {
        (False, False, "400", MessageStatus.REJECTED)
    }
    await sky.force("429")
    throttled = await sky.transport.send_bulk(messages)
    assert {(o.accepted, o.retryable, o.error_code) for o in throttled} == {(False, True, "429")}
    assert sky.emulator.state.received == []


@pytest.mark.parametrize("fault", ["timeout", "drop", "garbage"])
async def test_a_lost_answer_ends_every_message_unknown_and_is_never_resent(
    start: Start, fault: str
) -> None:
    sky = await start(fail_rate=1.0, fault=fault, timeout_seconds=2.0)
    messages = [text(number(i)) for i in range(3)]
    outcomes = await sky.transport.send_bulk(messages)
    assert {(o.accepted, o.retryable, o.error_code, o.final_status) for o in outcomes} == {
        (False, False, OUTCOME_UNKNOWN, MessageStatus.UNDELIVERED)
    }
    assert len(sky.bodies(CREATE)) == 1


async def test_an_answer_that_nothing_was_created_is_retried(start: Start) -> None:
    sky = await start(fail_rate=1.0, fault="http_500")
    outcomes = await sky.transport.send_bulk([text(number(1)), text(number(2))])
    assert {(o.accepted, o.retryable, o.error_code) for o in outcomes} == {
        (False, True, "HTTP_500")
    }
    with socket.socket() as sock:  # a port nobody listens on: the request never left
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    closed = SkynooBulkTransport(
        SkynooConfig("sky", f"http://127.0.0.1:{port}", API_KEY, API_SECRET, timeout=1.0)
    )
    try:
        [outcome] = await closed.send_bulk([text(number(1))])
    finally:
        await closed.close()
    assert (outcome.accepted, outcome.retryable, outcome.error_code) == (False, True, "CONNECTION")


async def test_a_group_that_does_not_share_one_content_is_a_programming_error(
    start: Start,
) -> None:
    sky = await start()
    with pytest.raises(ValueError, match="content"):
        await sky.transport.send_bulk([text(number(1)), text(number(2), "Other")])
    with pytest.raises(ValueError, match="twice"):
        await sky.transport.send_bulk([text(number(1)), text(number(1))])
    assert not sky.emulator.state.requests


# --- the emulator's batch endpoints, as seed 000 shows them ------------------------

SEED_CREATE = {
    "useType": 2,
    "content": "Your order #order_no# has been shipped.",
    "numbers": ["+8613800138000", "+8613900139000"],
    "templateData": {
        "+8613800138000": {"order_no": "A001"},
        "+8613900139000": {"order_no": "A002"},
    },
}


async def call(sky: Sky, path: str, body: Any) -> tuple[int, Any]:
    token = base64.b64encode(f"{API_KEY}:{API_SECRET}".encode()).decode()
    headers = {"Authorization": f"Basic {token}"}
    async with (
        aiohttp.ClientSession() as http,
        http.post(sky.emulator.base_url + path, json=body, headers=headers) as answer,
    ):
        return answer.status, await answer.json()


async def test_the_emulator_runs_the_seeds_batch_example(start: Start) -> None:
    sky = await start(delivery_delay=0.4)
    assert await call(sky, CREATE, SEED_CREATE) == (
        200,
        {
            "code": "200",
            "message": "Request successful",
            "data": {"taskId": 1001, "status": "pending"},
        },
    )
    status = "/api/sms/v1/batch/status"
    assert (await call(sky, status, {"taskId": 1001}))[1]["data"] == {
        "taskId": 1001,
        "status": "pending",
    }
    _, detail = await call(sky, DETAIL, {"taskId": 1001})
    data = detail["data"]
    assert (data["total"], data["pageNo"], data["pageSize"]) == (2, 1, 20)
    assert [(r["toNumber"], r["status"], r["errorCode"]) for r in data["records"]] == [
        ("+8613800138000", "QUEUED", ""),
        ("+8613900139000", "QUEUED", ""),
    ]
    assert {r.phone: r.content for r in sky.emulator.state.received} == {
        "+8613800138000": "Your order A001 has been shipped.",
        "+8613900139000": "Your order A002 has been shipped.",
    }
    await asyncio.sleep(0.45)
    assert (await call(sky, status, {"taskId": 1001}))[1]["data"]["status"] == "success"
    _, detail = await call(sky, DETAIL, {"taskId": 1001, "pageNo": 2, "pageSize": 1})
    [record] = detail["data"]["records"]
    assert (record["toNumber"], record["status"]) == ("+8613900139000", "DELIVERED")
    assert isinstance(record["sendTime"], int) and isinstance(record["id"], str)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"templateData": {"+8613800138000": {"order_no": "A001"}}}, "Missing template variable"),
        ({"numbers": ["+8613800138000", "+8613800138000"]}, "must not repeat"),
        ({"numbers": ["13800138000"]}, "E.164"),
        ({"numbers": []}, "non-empty"),
        ({"useType": 4}, "useType"),
        ({"content": "Sale ★ #order_no#"}, "unsupported symbol"),
        ({"templateData": {"+8613700000000": {"order_no": "X"}}}, "not in numbers"),
    ],
)
async def test_the_emulator_refuses_a_bad_task_whole(
    start: Start, change: dict[str, Any], message: str
) -> None:
    sky = await start()
    status, answer = await call(sky, CREATE, {**SEED_CREATE, **change})
    assert (status, answer["code"]) == (400, "400")
    assert message in answer["message"]
    assert sky.emulator.state.received == []
    assert (await call(sky, DETAIL, {"taskId": 1001}))[1]["code"] == "400"
