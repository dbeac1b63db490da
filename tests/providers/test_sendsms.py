"""sendsms specifics, over real HTTP against the emulator: the wire format, numbers,
templates, the documented limits and every documented answer."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from server.domain.models import MessageStatus, OutboundMessage, UseType
from server.domain.ports import ProviderError, ProviderRef
from server.emulators.common import EmulatorControls, EmulatorSettings, RunningEmulator
from server.emulators.sendsms import build_app
from server.providers.sendsms import (
    SendsmsConfig,
    SendsmsTransport,
    query_status_of,
    send_outcome,
)

pytestmark = pytest.mark.timeout(5)

CLIENT_ID = "cookpad_Server_001"
PASSCODE = "ARDOR-7JF3-8F2E-QUWZ-CAN7F"
SEED_TEMPLATE = (
    "Dear Member , your auth code is ${code}. The code will expire in 60 seconds. "
    "Have a good time! [Cookpad]"
)
TEMPLATES = {
    "t1": SEED_TEMPLATE,
    "t2": "Hi ${name}, your order ${order_no} has shipped. Order ${order_no} [Cookpad]",
}
OUR_TEMPLATES = {"auth_code": "t1", "order_shipped": "t2", "gone": "t-deleted"}


@dataclass
class Provider:
    emulator: RunningEmulator
    transport: SendsmsTransport
    seen: list[tuple[str, Any]] = field(default_factory=list)  # (path, JSON body)

    @property
    def url(self) -> str:
        return self.emulator.base_url

    def transport_with(self, **changes: Any) -> SendsmsTransport:
        config = replace(self.transport.config, **changes)
        return SendsmsTransport(config)


Start = Callable[..., Awaitable[Provider]]


@pytest.fixture
async def start() -> AsyncIterator[Start]:
    closers: list[Callable[[], Awaitable[None]]] = []

    async def make(**options: Any) -> Provider:
        settings = EmulatorSettings(
            credential_id=CLIENT_ID,
            credential_secret=PASSCODE,
            templates=dict(TEMPLATES),
            controls=EmulatorControls(delivery_delay=0.0),
        )
        app = build_app(settings, **options)
        seen: list[tuple[str, Any]] = []

        @web.middleware
        async def capture(request: web.Request, handler: Any) -> web.StreamResponse:
            if request.path.startswith("/api/"):
                text = await request.text()
                try:
                    seen.append((request.path, json.loads(text)))
                except ValueError:
                    seen.append((request.path, text))
            response: web.StreamResponse = await handler(request)
            return response

        app.middlewares.append(capture)
        emulator = await RunningEmulator(app).start()
        closers.append(emulator.stop)
        config = SendsmsConfig(
            name="sendsms1",
            base_url=emulator.base_url + "/",
            client_id=CLIENT_ID,
            passcode=PASSCODE,
            timeout=1.0,
            templates=dict(OUR_TEMPLATES),
        )
        transport = SendsmsTransport(config)
        closers.append(transport.close)
        return Provider(emulator, transport, seen)

    yield make
    for close in reversed(closers):
        await close()


def message(
    to: str = "+8613800138000",
    code: str | None = "order_shipped",
    data: dict[str, str] | None = None,
    variables: tuple[str, ...] | None = None,
) -> OutboundMessage:
    """A claimed message; ``variables`` (the template's order) defaults to data's keys."""
    data = {"name": "Tom", "order_no": "A-1"} if data is None else data
    return OutboundMessage(
        id=uuid.uuid4().hex,
        account_id=1,
        to_number=to,
        body="Hi Tom, your order A-1 has shipped.",
        use_type=UseType.NOTIFICATION,
        attempts=1,
        template_id=7 if code else None,
        template_code=code,
        data=data,
        variables=tuple(data) if variables is None else variables,
    )


async def post(url: str, body: Any) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session:
        data = body if isinstance(body, str) else None
        json_body = None if isinstance(body, str) else body
        async with session.post(url, data=data, json=json_body) as response:
            return response.status, await response.json()


async def test_requests_are_the_documented_json(start: Start) -> None:
    provider = await start()
    sent = await provider.transport.send(message())
    assert sent.accepted
    await provider.transport.query_status([ProviderRef("m1", sent.provider_message_id)])
    assert provider.seen == [
        (
            "/api/sms/v1/sendsms",
            {
                "client_id": CLIENT_ID,
                "passcode": PASSCODE,
                "phone_number": "13800138000",
                "templet_id": "t2",
                "contents": [{"p1": "Tom", "p2": "A-1"}],
            },
        ),
        (
            "/api/sms/v1/querysms",
            {"client_id": CLIENT_ID, "passcode": PASSCODE, "sms_uid": sent.provider_message_id},
        ),
    ]
    # Positional values fill the template's placeholders in order, repeats included.
    [received] = provider.emulator.state.received
    assert received.content == "Hi Tom, your order A-1 has shipped. Order A-1 [Cookpad]"


async def test_values_go_in_the_templates_order_not_the_order_data_holds_them(
    start: Start,
) -> None:
    provider = await start()
    # As a jsonb column gives them back: keys by length, not the template's order.
    shuffled = {"order_no": "A-1", "name": "Tom"}
    sent = await provider.transport.send(message(data=shuffled, variables=("name", "order_no")))
    assert sent.accepted
    assert provider.seen[0][1]["contents"] == [{"p1": "Tom", "p2": "A-1"}]
    [received] = provider.emulator.state.received
    assert received.content == "Hi Tom, your order A-1 has shipped. Order A-1 [Cookpad]"


async def test_values_whose_order_is_unknown_are_never_guessed(start: Start) -> None:
    provider = await start()
    unordered = message(variables=())
    assert not provider.transport.can_carry(unordered)
    outcome = await provider.transport.send(unordered)
    assert (outcome.accepted, outcome.retryable, outcome.error_code) == (
        False,
        False,
        "VARIABLE_ORDER_UNKNOWN",
    )
    assert provider.seen == []
    # One value has one order: p1.
    assert provider.transport.can_carry(message(data={"name": "Tom"}, variables=()))


async def test_the_seed_example_is_answered_as_documented(start: Start) -> None:
    provider = await start()
    status, body = await post(
        provider.url + "/api/sms/v1/sendsms",
        '{"client_id":"cookpad_Server_001","passcode":"ARDOR-7JF3-8F2E-QUWZ-CAN7F",'
        '"phone_number":"13800138000","templet_id":"t1","contents":[{"p1":"8888"}] }',
    )
    assert status == 200
    assert body == {"sms_uid": body["sms_uid"], "status": "sent", "error_code": "0"}
    assert uuid.UUID(body["sms_uid"]).version == 4
    [received] = provider.emulator.state.received
    assert received.content == (
        "Dear Member , your auth code is 8888. The code will expire in 60 seconds. "
        "Have a good time! [Cookpad]"
    )
    status, answer = await post(
        provider.url + "/api/sms/v1/querysms",
        {"client_id": CLIENT_ID, "passcode": PASSCODE, "sms_uid": body["sms_uid"]},
    )
    assert (status, answer) == (
        200,
        {"sms_uid": body["sms_uid"], "status": "delivered", "error_code": "0"},
    )


SEED_BODY = {
    "client_id": CLIENT_ID,
    "passcode": PASSCODE,
    "phone_number": "13800138000",
    "templet_id": "t1",
    "contents": [{"p1": "8888"}],
}


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("sendsms", "{not json", 400),
        ("sendsms", ["a list"], 400),
        ("sendsms", {k: v for k, v in SEED_BODY.items() if k != "passcode"}, 400),
        ("sendsms", {k: v for k, v in SEED_BODY.items() if k != "templet_id"}, 400),
        ("sendsms", {k: v for k, v in SEED_BODY.items() if k != "contents"}, 400),
        ("sendsms", {**SEED_BODY, "client_id": "someone_else"}, 403),
        ("sendsms", {**SEED_BODY, "passcode": "ARDOR-0000"}, 401),
        ("sendsms", {**SEED_BODY, "templet_id": "t9"}, 404),
        ("querysms", {"client_id": CLIENT_ID, "passcode": PASSCODE}, 400),
        ("querysms", {"client_id": CLIENT_ID, "passcode": "x", "sms_uid": "u"}, 401),
        ("querysms", {"client_id": CLIENT_ID, "passcode": PASSCODE, "sms_uid": "u"}, 404),
    ],
)
async def test_the_emulator_answers_the_documented_error_codes(
    start: Start, path: str, body: Any, status: int
) -> None:
    provider = await start()
    answer, error = await post(f"{provider.url}/api/sms/v1/{path}", body)
    assert (answer, error["error_code"]) == (status, str(status))
    assert provider.emulator.state.received == []


@pytest.mark.parametrize(
    ("contents", "status"),
    [
        ('[{"p1":"8888"}]', 200),  # the list as a string (the seed types contents String)
        ([{"p1": 8888}], 200),
        ([{"p1": "8888", "p2": "x"}], 400),  # more values than placeholders
        ([{"code": "8888"}], 400),  # named, not positional
        ([], 400),
        ({"p1": "8888"}, 400),  # not a list
        ([{"p1": None}], 400),
    ],
)
async def test_the_emulator_fills_templates_only_from_p1_to_pn(
    start: Start, contents: Any, status: int
) -> None:
    provider = await start()
    answer, _ = await post(
        provider.url + "/api/sms/v1/sendsms",
        {
            "client_id": CLIENT_ID,
            "passcode": PASSCODE,
            "phone_number": "13800138000",
            "templet_id": "t1",
            "contents": contents,
        },
    )
    assert answer == status
    expected = ["Dear Member , your auth code is 8888."] if status == 200 else []
    assert [r.content.split(" The")[0] for r in provider.emulator.state.received] == expected


@pytest.mark.parametrize(
    ("e164", "sent_as"),
    [
        ("+8613800138000", "13800138000"),  # China: national number, as in the seed
        ("+14155550123", "14155550123"),  # elsewhere: country code + number
        ("+447911123456", "447911123456"),
    ],
)
async def test_numbers_are_sent_in_the_provider_format(
    start: Start, e164: str, sent_as: str
) -> None:
    provider = await start()
    assert (await provider.transport.send(message(to=e164))).accepted
    assert [r.phone for r in provider.emulator.state.received] == [sent_as]


@pytest.mark.parametrize("bad", ["13800138000", "+86 138 0013 8000", "+0123456789", "+86"])
async def test_a_number_that_is_not_e164_is_rejected_without_a_call(start: Start, bad: str) -> None:
    provider = await start()
    outcome = await provider.transport.send(message(to=bad))
    assert (outcome.accepted, outcome.retryable) == (False, False)
    assert (outcome.final_status, outcome.error_code) == (MessageStatus.REJECTED, "INVALID_NUMBER")
    assert provider.seen == []


@pytest.mark.parametrize("phone", ["+8613800138000", "138-0013-8000", "0138001380", "12345"])
async def test_the_emulator_refuses_malformed_numbers(start: Start, phone: str) -> None:
    provider = await start()
    status, body = await post(
        provider.url + "/api/sms/v1/sendsms",
        {
            "client_id": CLIENT_ID,
            "passcode": PASSCODE,
            "phone_number": phone,
            "templet_id": "t1",
            "contents": [{"p1": "8888"}],
        },
    )
    assert (status, body["error_code"]) == (400, "400")
    assert provider.emulator.state.received == []


async def test_one_message_per_number_per_window(start: Start) -> None:
    provider = await start(per_number_seconds=0.6)
    first = await provider.transport.send(message())
    assert first.accepted
    again = await provider.transport.send(message())
    assert (again.accepted, again.retryable, again.error_code) == (False, True, "HTTP_429")
    assert (await provider.transport.send(message(to="+8613800138001"))).accepted
    await asyncio.sleep(0.65)
    assert (await provider.transport.send(message())).accepted
    phones = [r.phone for r in provider.emulator.state.received]
    assert phones == ["13800138000", "13800138001", "13800138000"]


async def test_the_global_send_rate_is_retried(start: Start) -> None:
    provider = await start(send_rate=2.0)
    outcomes = await asyncio.gather(
        *(provider.transport.send(message(to=f"+861380013800{i}")) for i in range(6))
    )
    accepted = [o for o in outcomes if o.accepted]
    throttled = [o for o in outcomes if not o.accepted]
    assert len(accepted) == 2 == len(provider.emulator.state.received)
    assert {(o.retryable, o.error_code) for o in throttled} == {(True, "HTTP_429")}


async def test_the_query_rate_is_enforced_and_fails_the_query(start: Start) -> None:
    provider = await start(query_rate=2.0)
    sent = await provider.transport.send(message())
    ref = ProviderRef("m1", sent.provider_message_id)
    results = await asyncio.gather(
        *(provider.transport.query_status([ref]) for _ in range(10)), return_exceptions=True
    )
    assert sum(isinstance(r, list) for r in results) == 2
    assert all(isinstance(r, ProviderError) for r in results if not isinstance(r, list))
    status, body = await post(
        provider.url + "/api/sms/v1/querysms",
        {"client_id": CLIENT_ID, "passcode": PASSCODE, "sms_uid": sent.provider_message_id},
    )
    assert (status, body["error_code"]) == (429, "429")
    await asyncio.sleep(0.55)  # the bucket refills at 2 per second
    [receipt] = await provider.transport.query_status([ref])
    assert receipt.status == MessageStatus.DELIVERED


async def _with(provider: Provider, **changes: Any) -> Any:
    transport = provider.transport_with(**changes)
    try:
        return await transport.send(message())
    finally:
        await transport.close()


async def _missing_value(provider: Provider) -> Any:
    return await provider.transport.send(message(data={"name": "Tom"}))  # no p2


async def _wrong_passcode(provider: Provider) -> Any:
    return await _with(provider, passcode="ARDOR-0000-0000-0000-00000")


async def _unknown_client(provider: Provider) -> Any:
    return await _with(provider, client_id="someone_else")


async def _unknown_templet(provider: Provider) -> Any:
    return await provider.transport.send(message(code="gone"))


async def _same_number_twice(provider: Provider) -> Any:
    assert (await provider.transport.send(message())).accepted
    return await provider.transport.send(message())


async def _server_error(provider: Provider) -> Any:
    provider.emulator.state.settings.controls.fail_rate = 1.0
    return await provider.transport.send(message())


async def _blacklisted(provider: Provider) -> Any:
    return await provider.transport.send(message(to="+8613900000000"))


@pytest.mark.parametrize(
    ("answer", "provoke", "retryable", "final_status", "error_code"),
    [
        ("400 bad format", _missing_value, False, MessageStatus.FAILED, "HTTP_400"),
        ("401 passcode", _wrong_passcode, False, MessageStatus.FAILED, "HTTP_401"),
        ("403 client_id", _unknown_client, False, MessageStatus.FAILED, "HTTP_403"),
        ("404 templet_id", _unknown_templet, False, MessageStatus.FAILED, "HTTP_404"),
        ("429 per number", _same_number_twice, True, None, "HTTP_429"),
        ("500 server", _server_error, True, None, "HTTP_500"),
        ("200 status error", _blacklisted, False, MessageStatus.REJECTED, "E_BLACKLIST"),
    ],
)
async def test_every_documented_answer_maps_to_an_outcome(
    start: Start,
    answer: str,
    provoke: Callable[[Provider], Awaitable[Any]],
    retryable: bool,
    final_status: MessageStatus | None,
    error_code: str,
) -> None:
    provider = await start(blocked_numbers={"13900000000"})
    outcome = await provoke(provider)
    assert not outcome.accepted
    assert (outcome.retryable, outcome.error_code) == (retryable, error_code)
    if final_status is not None:
        assert outcome.final_status == final_status
    # Nothing refused was accepted (the 429 case keeps only its first message).
    assert len(provider.emulator.state.received) == (1 if provoke is _same_number_twice else 0)


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (405, {"message": "method not allowed"}),  # undocumented status
        (302, None),
        (200, None),  # no body
        (200, {"sms_uid": "u1", "status": "paused", "error_code": "0"}),  # unknown status
        (200, {"status": "sent", "error_code": "0"}),  # no sms_uid
        (200, {"sms_uid": "u1", "status": ["sent"], "error_code": "0"}),
        (200, ["sent"]),
    ],
)
def test_undocumented_send_answers_are_retried(status: int, body: Any) -> None:
    outcome = send_outcome(status, body)
    assert (outcome.accepted, outcome.retryable, outcome.error_code) == (
        False,
        True,
        "BAD_RESPONSE",
    )


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ({"status": "queuing", "error_code": "0"}, (MessageStatus.SENT, "")),
        ({"status": "sent", "error_code": "0"}, (MessageStatus.SENT, "")),
        ({"status": "delivered", "error_code": "0"}, (MessageStatus.DELIVERED, "")),
        ({"status": "error", "error_code": "UNDELIV"}, (MessageStatus.UNDELIVERED, "UNDELIV")),
        (
            {"status": "error_expired", "error_code": "0"},
            (MessageStatus.UNDELIVERED, "error_expired"),
        ),
        ({"status": "error", "error_code": ""}, (MessageStatus.UNDELIVERED, "error")),
    ],
)
def test_query_statuses_map_to_ours(answer: dict[str, str], expected: object) -> None:
    assert query_status_of({"sms_uid": "u1", **answer}, "u1") == expected


@pytest.mark.parametrize(
    "answer",
    [
        {"sms_uid": "u2", "status": "delivered", "error_code": "0"},  # another message
        {"sms_uid": "u1", "status": "lost", "error_code": "0"},
        {"sms_uid": "u1"},
        None,
    ],
)
def test_malformed_query_answers_fail_the_query(answer: Any) -> None:
    with pytest.raises(ProviderError):
        query_status_of(answer, "u1")


async def test_an_undelivered_message_reports_the_operator_code(start: Start) -> None:
    provider = await start()
    provider.emulator.state.settings.controls.outcome = "undelivered"
    sent = await provider.transport.send(message())
    [receipt] = await provider.transport.query_status([ProviderRef("m1", sent.provider_message_id)])
    assert (receipt.status, receipt.error_code) == (MessageStatus.UNDELIVERED, "UNDELIV")
    assert (receipt.message_id, receipt.provider, receipt.provider_message_id) == (
        "m1",
        "sendsms1",
        sent.provider_message_id,
    )


async def test_query_of_an_unknown_uid_has_no_receipt(start: Start) -> None:
    provider = await start()
    assert await provider.transport.query_status([ProviderRef("m1", str(uuid.uuid4()))]) == []


async def test_query_with_a_wrong_passcode_fails(start: Start) -> None:
    provider = await start()
    sent = await provider.transport.send(message())
    transport = provider.transport_with(passcode="nope")
    try:
        with pytest.raises(ProviderError):
            await transport.query_status([ProviderRef("m1", sent.provider_message_id)])
    finally:
        await transport.close()


async def test_capabilities_and_what_it_can_carry(start: Start) -> None:
    provider = await start()
    transport = provider.transport
    assert transport.capabilities.max_status_ids == 1
    assert not transport.capabilities.free_text
    assert transport.can_carry(message())
    assert not transport.can_carry(message(code=None))  # free text
    assert not transport.can_carry(message(code="no_such_template"))
    outcome = await transport.send(message(code=None))
    assert (outcome.accepted, outcome.retryable) == (False, False)
    assert provider.seen == []


async def test_a_given_session_is_used_and_left_open(start: Start) -> None:
    provider = await start()
    async with aiohttp.ClientSession() as session:
        transport = SendsmsTransport(provider.transport.config, session)
        assert (await transport.send(message())).accepted
        await transport.close()
        assert not session.closed


def test_the_passcode_is_not_in_the_config_repr() -> None:
    config = SendsmsConfig(name="s", base_url="http://x", client_id=CLIENT_ID, passcode=PASSCODE)
    assert PASSCODE not in repr(config)
    assert CLIENT_ID in repr(config)
