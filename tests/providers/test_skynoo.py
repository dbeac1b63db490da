"""Skynoo specifics over real HTTP: the transport against its emulator, the
emulator's documented limits, the code and status tables, and the OTP endpoints."""

from __future__ import annotations

import asyncio
import base64
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any

import aiohttp
import pytest

from server.domain.models import MessageStatus, OutboundMessage, UseType
from server.domain.ports import ProviderError, ProviderRef, SendOutcome
from server.emulators.common import EmulatorControls, EmulatorSettings, RunningEmulator
from server.emulators.skynoo import BOOK_KEY, SkynooBook, build_app
from server.providers.http import HttpAnswer
from server.providers.skynoo import SkynooConfig, SkynooTransport, receipts_from, send_outcome
from server.providers.skynoo_codes import OTP_CHECK_PATH, OTP_SEND_PATH, SEND_PATH, STATUS_PATH
from tests.contract.pair_skynoo import API_KEY, API_SECRET

pytestmark = pytest.mark.timeout(5)

MOBILE = "+8613800138000"
TEMPLATES = {
    "15": "Your order #order_no# has shipped.",
    "8": "Code #code#, valid for #expireTime#.",
    "9": "Hello #name#, your code is #code#.",
}
HEX32 = re.compile(r"[0-9a-f]{32}")


def basic(key: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{key}:{secret}".encode()).decode()


@dataclass
class Sky:
    emulator: RunningEmulator
    transport: SkynooTransport
    http: aiohttp.ClientSession
    config: SkynooConfig

    @property
    def book(self) -> SkynooBook:
        return self.emulator.app[BOOK_KEY]

    @property
    def controls(self) -> EmulatorControls:
        return self.emulator.state.settings.controls

    async def post(
        self, path: str, body: Any, auth: str | None = basic(API_KEY, API_SECRET)
    ) -> tuple[int, dict[str, Any]]:
        headers = {"Authorization": auth} if auth is not None else {}
        url = self.emulator.base_url + path
        async with self.http.post(url, json=body, headers=headers) as response:
            return response.status, await response.json()

    async def force(self, code: str, http_status: int | None = None, times: int = 1) -> None:
        body: dict[str, Any] = {"code": code, "message": "forced", "times": times}
        if http_status is not None:
            body["http_status"] = http_status
        url = self.emulator.base_url + "/_emulator/skynoo/answer"
        async with self.http.post(url, json=body) as response:
            assert response.status == 200

    async def advance(self, seconds: float) -> None:
        url = self.emulator.base_url + "/_emulator/skynoo/advance"
        async with self.http.post(url, json={"seconds": seconds}) as response:
            assert response.status == 200

    def transport_with(self, **changes: Any) -> SkynooTransport:
        return SkynooTransport(replace(self.config, **changes), self.http)


@pytest.fixture
async def sky() -> AsyncIterator[Sky]:
    settings = EmulatorSettings(
        credential_id=API_KEY,
        credential_secret=API_SECRET,
        templates=dict(TEMPLATES),
        controls=EmulatorControls(delivery_delay=0.2),
    )
    emulator = await RunningEmulator(build_app(settings)).start()
    config = SkynooConfig(
        name="sky1",
        base_url=emulator.base_url,
        api_key=API_KEY,
        api_secret=API_SECRET,
        timeout=1.0,
        templates={"order_shipped": "15"},
    )
    async with aiohttp.ClientSession() as http:
        transport = SkynooTransport(config)
        yield Sky(emulator, transport, http, config)
        await transport.close()
    await emulator.stop()


def message(
    body: str = "Your order A-1 has shipped.",
    *,
    to: str = MOBILE,
    template_code: str | None = "order_shipped",
    data: dict[str, str] | None = None,
    use_type: UseType = UseType.NOTIFICATION,
) -> OutboundMessage:
    return OutboundMessage(
        id="m-1",
        account_id=1,
        to_number=to,
        body=body,
        use_type=use_type,
        attempts=1,
        template_code=template_code,
        data={"order_no": "A-1"} if data is None else data,
    )


# --- wire format -------------------------------------------------------------------


async def test_mapped_template_goes_out_as_template_id_and_data(sky: Sky) -> None:
    outcome = await sky.transport.send(message())
    assert outcome.accepted, outcome
    assert HEX32.fullmatch(outcome.provider_message_id)
    assert sky.book.requests == [
        (SEND_PATH, {"mobile": MOBILE, "useType": 2, "templateId": 15, "data": {"order_no": "A-1"}})
    ]
    assert [(r.phone, r.content) for r in sky.emulator.state.received] == [
        (MOBILE, "Your order A-1 has shipped.")
    ]


@pytest.mark.parametrize("template_code", [None, "not_mapped_here"])
@pytest.mark.parametrize(
    ("use_type", "wire_use_type"),
    [
        (UseType.VERIFICATION, 1),
        (UseType.NOTIFICATION, 2),
        (UseType.MARKETING, 3),
        (UseType.UNSPECIFIED, 2),
    ],
)
async def test_other_messages_go_out_as_text(
    sky: Sky, template_code: str | None, use_type: UseType, wire_use_type: int
) -> None:
    text = "Your code is 123456"
    sent = await sky.transport.send(message(text, template_code=template_code, use_type=use_type))
    assert sky.transport.can_carry(message(text, template_code=template_code))
    assert sent.accepted, sent
    assert sky.book.requests == [
        (SEND_PATH, {"mobile": MOBILE, "useType": wire_use_type, "text": text})
    ]
    assert sky.emulator.state.received[0].content == text


async def test_message_ids_are_distinct_32_hex(sky: Sky) -> None:
    ids = [(await sky.transport.send(message())).provider_message_id for _ in range(5)]
    assert len(set(ids)) == 5
    assert all(HEX32.fullmatch(i) for i in ids)


@pytest.mark.parametrize(
    "auth",
    [
        None,
        basic(API_KEY, "sec_wrong"),
        basic("app_other", API_SECRET),
        basic(API_KEY, ""),
        "Bearer " + base64.b64encode(f"{API_KEY}:{API_SECRET}".encode()).decode(),
        "Basic not*base64",
        f"Basic {API_KEY}:{API_SECRET}",
    ],
)
@pytest.mark.parametrize("path", [SEND_PATH, STATUS_PATH, OTP_SEND_PATH, OTP_CHECK_PATH])
async def test_every_endpoint_requires_basic_auth(sky: Sky, auth: str | None, path: str) -> None:
    status, body = await sky.post(path, {"mobile": MOBILE, "useType": 1, "text": "hi"}, auth)
    assert (status, body) == (401, {"code": "401", "message": "Unauthorized"})
    assert sky.emulator.state.received == []


async def test_the_documented_header_is_accepted(sky: Sky) -> None:
    status, body = await sky.post(SEND_PATH, {"mobile": MOBILE, "useType": 1, "text": "hi"})
    assert status == 200
    assert body["code"] == "200"
    assert body["data"]["toNumber"] == MOBILE
    assert body["data"]["status"] == "pending"


# --- documented limits ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"mobile": "8613800138000", "useType": 1, "text": "hi"}, "Invalid mobile"),
        ({"mobile": "+1234567", "useType": 1, "text": "hi"}, "Invalid mobile"),
        ({"mobile": "+1234567890123456", "useType": 1, "text": "hi"}, "Invalid mobile"),
        ({"mobile": "+86 138 0013 8000", "useType": 1, "text": "hi"}, "Invalid mobile"),
        ({"useType": 1, "text": "hi"}, "Invalid mobile"),
        ({"mobile": MOBILE, "useType": 0, "text": "hi"}, "useType"),
        ({"mobile": MOBILE, "useType": 4, "text": "hi"}, "useType"),
        ({"mobile": MOBILE, "useType": "2", "text": "hi"}, "useType"),
        ({"mobile": MOBILE, "text": "hi"}, "useType"),
        ({"mobile": MOBILE, "useType": 2}, "exactly one of text or templateId"),
        (
            {"mobile": MOBILE, "useType": 2, "text": "hi", "templateId": 15},
            "exactly one of text or templateId",
        ),
        ({"mobile": MOBILE, "useType": 2, "text": ""}, "non-empty"),
        ({"mobile": MOBILE, "useType": 2, "text": "hi", "data": {"a": "b"}}, "templateId"),
        ({"mobile": MOBILE, "useType": 2, "text": "x" * 461}, "460 characters"),
        ({"mobile": MOBILE, "useType": 2, "templateId": 99}, "Template 99 does not exist"),
        ({"mobile": MOBILE, "useType": 2, "templateId": "15"}, "positive integer"),
        ({"mobile": MOBILE, "useType": 2, "templateId": 15}, "variable: order_no"),
        (
            {"mobile": MOBILE, "useType": 2, "templateId": 15, "data": {"order": "A-1"}},
            "variable: order_no",
        ),
        (
            {"mobile": MOBILE, "useType": 2, "templateId": 15, "data": {"order_no": ["A"]}},
            "string or a number",
        ),
        (
            {"mobile": MOBILE, "useType": 2, "templateId": 15, "data": {"order_no": "y" * 440}},
            "460 characters",
        ),
        ([MOBILE], "JSON object"),
    ]
    + [
        ({"mobile": MOBILE, "useType": 3, "text": f"Sale {symbol} today"}, "unsupported symbol")
        for symbol in "【】★※→●"
    ],
)
async def test_emulator_refuses_what_the_seed_forbids(sky: Sky, body: Any, says: str) -> None:
    status, answer = await sky.post(SEND_PATH, body)
    assert (status, answer["code"]) == (400, "400")
    assert says in answer["message"]
    assert sky.emulator.state.received == []


async def test_text_of_460_characters_is_the_longest_accepted(sky: Sky) -> None:
    longest = await sky.transport.send(message("x" * 460, template_code=None))
    too_long = await sky.transport.send(message("x" * 461, template_code=None))
    assert longest.accepted
    assert (too_long.accepted, too_long.retryable, too_long.error_code) == (False, False, "400")
    assert too_long.final_status == MessageStatus.REJECTED
    assert [len(r.content) for r in sky.emulator.state.received] == [460]


@pytest.mark.parametrize(
    ("msg", "templates"),
    [
        (message(to="+12"), None),
        (message(to="+861380013800012345"), None),
        (message("Hot deal ★ now", template_code=None), None),
        (message("Go → shop.example", template_code=None), None),
        (message(data={}), None),
        (message(), {"order_shipped": "99"}),
    ],
    ids=["short-mobile", "long-mobile", "star", "arrow", "missing-variable", "unknown-template"],
)
async def test_refused_content_is_a_final_rejection(
    sky: Sky, msg: OutboundMessage, templates: dict[str, str] | None
) -> None:
    transport = sky.transport_with(templates=templates) if templates else sky.transport
    outcome = await transport.send(msg)
    assert outcome == SendOutcome(
        accepted=False, error_code="400", retryable=False, final_status=MessageStatus.REJECTED
    )
    assert sky.emulator.state.received == []


async def test_wrong_secret_is_a_final_failure(sky: Sky) -> None:
    outcome = await sky.transport_with(api_secret="sec_wrong").send(message())
    assert outcome == SendOutcome(
        accepted=False, error_code="401", final_status=MessageStatus.FAILED
    )
    with pytest.raises(ProviderError, match="401"):
        await sky.transport_with(api_secret="sec_wrong").query_status([ProviderRef("m", "p")])


# --- envelope code table -------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "http_status", "retryable", "final_status", "error_code"),
    [
        ("400", 400, False, MessageStatus.REJECTED, "400"),
        ("400", 200, False, MessageStatus.REJECTED, "400"),
        ("401", 401, False, MessageStatus.FAILED, "401"),
        ("401", 200, False, MessageStatus.FAILED, "401"),
        ("403", 403, False, MessageStatus.FAILED, "403"),
        ("429", 429, True, None, "429"),
        ("429", 200, True, None, "429"),
        ("500", 200, True, None, "500"),
        ("503", 200, True, None, "503"),
        ("500", 500, True, None, "HTTP_500"),
        ("503", 503, True, None, "HTTP_503"),
        ("418", 418, True, None, "BAD_RESPONSE"),
        ("E42", 200, True, None, "BAD_RESPONSE"),
        ("200", 200, True, None, "BAD_RESPONSE"),  # "200" without data.id
    ],
)
async def test_envelope_codes_map_to_outcomes(
    sky: Sky,
    code: str,
    http_status: int,
    retryable: bool,
    final_status: MessageStatus | None,
    error_code: str,
) -> None:
    await sky.force(code, http_status)
    outcome = await sky.transport.send(message())
    assert not outcome.accepted
    assert (outcome.retryable, outcome.error_code) == (retryable, error_code)
    if final_status is not None:
        assert outcome.final_status == final_status
    assert sky.emulator.state.received == []
    assert (await sky.transport.send(message())).accepted  # the forced answer was one-off


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (HttpAnswer(401, None), SendOutcome(False, error_code="HTTP_401")),
        (HttpAnswer(403, {"error": "ip"}), SendOutcome(False, error_code="HTTP_403")),
        (HttpAnswer(404, {"detail": "no"}), SendOutcome(False, "", "BAD_RESPONSE", True)),
        (HttpAnswer(200, ["200"]), SendOutcome(False, "", "BAD_RESPONSE", True)),
        (HttpAnswer(200, {"code": True}), SendOutcome(False, "", "BAD_RESPONSE", True)),
        (
            HttpAnswer(400, {"code": "200", "data": {"id": "x"}}),
            SendOutcome(False, "", "BAD_RESPONSE", True),
        ),
        (
            HttpAnswer(200, {"code": "200", "data": {"id": ""}}),
            SendOutcome(False, "", "BAD_RESPONSE", True),
        ),
        (HttpAnswer(200, {"code": 200, "data": {"id": "ab12"}}), SendOutcome(True, "ab12")),
        (
            HttpAnswer(200, {"code": 400, "message": "bad"}),
            SendOutcome(False, "", "400", False, MessageStatus.REJECTED),
        ),
    ],
)
def test_answers_the_emulator_never_gives(answer: HttpAnswer, expected: SendOutcome) -> None:
    assert send_outcome(answer) == expected


# --- status query --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("wire", "error", "status", "error_code"),
    [
        ("UNKNOWN", "", MessageStatus.SENT, ""),
        ("QUEUED", "", MessageStatus.SENT, ""),
        ("SEND", "", MessageStatus.SENT, ""),
        ("DELIVERED", "", MessageStatus.DELIVERED, ""),
        ("UNDELIVERED", "E66", MessageStatus.UNDELIVERED, "E66"),
        ("UNDELIVERED", "", MessageStatus.UNDELIVERED, "UNDELIVERED"),
        ("FAILED", "E99", MessageStatus.FAILED, "E99"),
        ("FAILED", None, MessageStatus.FAILED, "FAILED"),
        ("REJECTED", "BLOCKED", MessageStatus.REJECTED, "BLOCKED"),
    ],
)
def test_status_table(wire: str, error: str | None, status: MessageStatus, error_code: str) -> None:
    refs = {"p1": [ProviderRef("m1", "p1")]}
    body = {"code": "200", "data": [{"sid": "p1", "status": wire, "errorCode": error}]}
    receipts = receipts_from("sky1", HttpAnswer(200, body), refs)
    assert [(r.provider, r.message_id, r.provider_message_id) for r in receipts] == [
        ("sky1", "m1", "p1")
    ]
    assert (receipts[0].status, receipts[0].error_code) == (status, error_code)


def test_undocumented_statuses_and_unasked_ids_are_left_out() -> None:
    refs = {
        "p1": [ProviderRef("m1", "p1"), ProviderRef("m2", "p1")],
        "p2": [ProviderRef("m3", "p2")],
    }
    body = {
        "code": "200",
        "data": [
            {"sid": "p1", "status": "DELIVERED", "errorCode": ""},
            {"sid": "p2", "status": "EXPIRED", "errorCode": ""},
            {"sid": "p9", "status": "DELIVERED", "errorCode": ""},
        ],
    }
    receipts = receipts_from("sky1", HttpAnswer(200, body), refs)
    assert [r.message_id for r in receipts] == ["m1", "m2"]


@pytest.mark.parametrize(
    "body",
    [
        None,
        {"code": "200"},
        {"code": "200", "data": {}},
        {"code": "200", "data": ["x"]},
        {"code": "200", "data": [{"sid": 1, "status": "SEND"}]},
        {"code": "400", "message": "bad"},
    ],
)
def test_malformed_status_answers_raise_provider_error(body: Any) -> None:
    with pytest.raises(ProviderError):
        receipts_from("sky1", HttpAnswer(200, body), {"p1": [ProviderRef("m1", "p1")]})


@pytest.mark.parametrize(
    ("outcome", "status", "error_code"),
    [
        ("delivered", MessageStatus.DELIVERED, ""),
        ("undelivered", MessageStatus.UNDELIVERED, "E66"),
        ("rejected", MessageStatus.REJECTED, "BLOCKED"),
        ("failed", MessageStatus.FAILED, "E99"),
    ],
)
async def test_emulated_delivery_goes_queued_send_then_final(
    sky: Sky, outcome: str, status: MessageStatus, error_code: str
) -> None:
    sky.controls.delivery_delay = 0.8  # QUEUED for 0.4 s, then SEND, final from 0.8 s
    sky.controls.outcome = outcome
    sent = await sky.transport.send(message())
    ref = ProviderRef("m-1", sent.provider_message_id)
    wire = []
    for pause in (0.0, 0.5, 0.4):
        await asyncio.sleep(pause)
        _, body = await sky.post(STATUS_PATH, {"ids": [sent.provider_message_id]})
        wire.append(body["data"][0]["status"])
    assert wire == ["QUEUED", "SEND", status.name]
    receipts = await sky.transport.query_status([ref])
    assert [(r.status, r.error_code) for r in receipts] == [(status, error_code)]


async def test_unknown_ids_are_absent_and_pending_ones_are_sent(sky: Sky) -> None:
    sky.controls.delivery_delay = 60
    sent = await sky.transport.send(message())
    refs = [ProviderRef("m-1", sent.provider_message_id), ProviderRef("m-2", "f" * 32)]
    receipts = await sky.transport.query_status(refs)
    assert [(r.message_id, r.status, r.error_code) for r in receipts] == [
        ("m-1", MessageStatus.SENT, "")
    ]
    assert await sky.transport.query_status([]) == []
    assert [path for path, _ in sky.book.requests].count(STATUS_PATH) == 1


@pytest.mark.parametrize(
    ("ids", "accepted"),
    [
        ([], False),
        ([f"{i:032x}" for i in range(101)], False),
        ([f"{i:032x}" for i in range(100)], True),
        ("abc", False),
        ([1, 2], False),
    ],
)
async def test_get_status_takes_1_to_100_ids(sky: Sky, ids: Any, accepted: bool) -> None:
    status, body = await sky.post(STATUS_PATH, {"ids": ids})
    if accepted:
        assert (status, body["code"], body["data"]) == (200, "200", [])
    else:
        assert (status, body["code"]) == (400, "400")


async def test_transport_splits_larger_queries_into_hundreds(sky: Sky) -> None:
    sky.controls.delivery_delay = 0.0
    real = [(await sky.transport.send(message())).provider_message_id for _ in range(3)]
    refs = [ProviderRef(f"m{i}", f"{i:032x}") for i in range(147)]
    refs[5:5] = [ProviderRef(f"real{i}", pid) for i, pid in enumerate(real)]
    receipts = await sky.transport.query_status(refs)
    assert sorted(r.message_id for r in receipts) == ["real0", "real1", "real2"]
    sizes = [len(body["ids"]) for path, body in sky.book.requests if path == STATUS_PATH]
    assert sizes == [100, 50]


@pytest.mark.parametrize(
    ("code", "http_status"), [("400", 400), ("429", 429), ("503", 200), ("200", 200), ("500", 500)]
)
async def test_failed_status_queries_raise_provider_error(
    sky: Sky, code: str, http_status: int
) -> None:
    await sky.force(code, http_status)
    with pytest.raises(ProviderError):
        await sky.transport.query_status([ProviderRef("m-1", "a" * 32)])


# --- OTP verification endpoints (the transport does not call them) ---------------------


async def otp_send(sky: Sky, mobile: str = MOBILE, **extra: Any) -> tuple[int, dict[str, Any]]:
    return await sky.post(OTP_SEND_PATH, {"mobile": mobile, **extra})


def last_code(sky: Sky) -> str:
    match = re.search(r"\d{4,8}", sky.emulator.state.received[-1].content)
    assert match is not None
    return match.group(0)


async def test_otp_send_texts_a_code_and_returns_a_session(sky: Sky) -> None:
    status, body = await otp_send(sky, scene="login")
    assert (status, body["code"]) == (200, "200")
    assert body["data"]["verifyId"].startswith("v_")
    expected_ms = (time.time() + 5 * 60) * 1000
    assert abs(body["data"]["expireTime"] - expected_ms) < 5000
    [received] = sky.emulator.state.received
    assert received.phone == MOBILE
    assert re.fullmatch(r"Your verification code is \d{6}, valid for 5 minutes\.", received.content)
    assert HEX32.fullmatch(received.provider_message_id)


@pytest.mark.parametrize("length", [4, 8])
async def test_otp_code_length_is_honoured(sky: Sky, length: int) -> None:
    status, _ = await otp_send(sky, codeLength=length, expireMinutes=10)
    assert status == 200
    assert len(last_code(sky)) == length
    assert "valid for 10 minutes" in sky.emulator.state.received[-1].content


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        ({"codeLength": 3}, "codeLength"),
        ({"codeLength": 9}, "codeLength"),
        ({"codeLength": "6"}, "codeLength"),
        ({"expireMinutes": 0}, "expireMinutes"),
        ({"scene": 5}, "scene"),
        ({"templateId": 77}, "Template 77 does not exist"),
        ({"templateId": 9}, "variable: name"),
        ({"mobile": "13800138000"}, "Invalid mobile"),
    ],
)
async def test_otp_send_refuses_bad_requests(sky: Sky, extra: dict[str, Any], says: str) -> None:
    status, body = await sky.post(OTP_SEND_PATH, {"mobile": MOBILE, **extra})
    assert (status, body["code"]) == (400, "400")
    assert says in body["message"]
    assert sky.emulator.state.received == []


async def test_otp_send_with_a_custom_template(sky: Sky) -> None:
    status, _ = await otp_send(sky, templateId=8, expireMinutes=3)
    assert status == 200
    assert re.fullmatch(
        r"Code \d{6}, valid for 3 minutes\.", sky.emulator.state.received[0].content
    )


async def test_otp_right_code_is_valid_once(sky: Sky) -> None:
    _, sent = await otp_send(sky)
    check = {"verifyId": sent["data"]["verifyId"], "mobile": MOBILE, "code": last_code(sky)}
    status, body = await sky.post(OTP_CHECK_PATH, check)
    assert (status, body["code"], body["data"]) == (
        200,
        "200",
        {"valid": True, "remainingAttempts": 0},
    )
    status, body = await sky.post(OTP_CHECK_PATH, check)
    assert (status, body["code"]) == (400, "400")
    assert "already used" in body["message"]


async def test_otp_three_wrong_codes_exhaust_the_session(sky: Sky) -> None:
    _, sent = await otp_send(sky)
    right = last_code(sky)
    wrong = "0000000" if right != "0000000" else "1111111"
    check = {"verifyId": sent["data"]["verifyId"], "mobile": MOBILE}
    answers = [await sky.post(OTP_CHECK_PATH, {**check, "code": wrong}) for _ in range(3)]
    assert [(s, b["data"]) for s, b in answers] == [
        (200, {"valid": False, "remainingAttempts": 2}),
        (200, {"valid": False, "remainingAttempts": 1}),
        (200, {"valid": False, "remainingAttempts": 0}),
    ]
    status, body = await sky.post(OTP_CHECK_PATH, {**check, "code": right})
    assert (status, body) == (400, {"code": "400", "message": "Verification code exhausted"})


async def test_otp_code_expires(sky: Sky) -> None:
    _, sent = await otp_send(sky, expireMinutes=1)
    check = {"verifyId": sent["data"]["verifyId"], "mobile": MOBILE, "code": last_code(sky)}
    await sky.advance(61)
    status, body = await sky.post(OTP_CHECK_PATH, check)
    assert (status, body) == (400, {"code": "400", "message": "Verification code expired"})


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"verifyId": "v_000000000000"}, "session not found"),
        ({"mobile": "+8613900139000"}, "does not match"),
        ({"code": ""}, "required"),
        ({"verifyId": None}, "required"),
    ],
)
async def test_otp_check_refuses_bad_requests(sky: Sky, change: dict[str, Any], says: str) -> None:
    _, sent = await otp_send(sky)
    check = {"verifyId": sent["data"]["verifyId"], "mobile": MOBILE, "code": last_code(sky)}
    status, body = await sky.post(OTP_CHECK_PATH, {**check, **change})
    assert (status, body["code"]) == (400, "400")
    assert says in body["message"]


async def test_otp_same_mobile_waits_60_seconds(sky: Sky) -> None:
    assert (await otp_send(sky))[0] == 200
    status, body = await otp_send(sky)
    assert (status, body["code"]) == (429, "429")
    assert "wait 60 s" in body["message"]
    await sky.advance(59)
    assert (await otp_send(sky))[0] == 429
    assert (await otp_send(sky, "+8613900139000"))[0] == 200  # another mobile is fine
    await sky.advance(1.5)
    assert (await otp_send(sky))[0] == 200
    assert len(sky.emulator.state.received) == 3


async def test_otp_account_sends_at_most_100_codes_an_hour(sky: Sky) -> None:
    for i in range(100):
        status, _ = await otp_send(sky, f"+86139{i:08d}")
        assert status == 200
    status, body = await otp_send(sky, "+447700900123")
    assert (status, body["code"]) == (429, "429")
    assert "100 codes per hour" in body["message"]
    await sky.advance(3600)
    assert (await otp_send(sky, "+447700900123"))[0] == 200


# --- configuration and session ownership ----------------------------------------------


@pytest.mark.parametrize(
    ("changes", "says"),
    [
        ({"templates": {"order_shipped": "tpl-15"}}, "numbers"),
        ({"templates": {"order_shipped": ""}}, "numbers"),
        ({"templates": {"order_shipped": 15}}, "numbers"),
        ({"api_secret": ""}, "api_secret"),
        ({"api_key": ""}, "api_key"),
        ({"base_url": "api.skynoo.com"}, "base_url"),
        ({"timeout": 0}, "timeout"),
    ],
)
def test_config_fails_fast(changes: dict[str, Any], says: str) -> None:
    good = SkynooConfig("sky1", "https://api.skynoo.com", "app_1", "sec_1")
    with pytest.raises(ValueError, match=says):
        replace(good, **changes)


def test_config_repr_hides_the_secret() -> None:
    config = SkynooConfig("sky1", "https://api.skynoo.com", "app_1", "sec_topsecret")
    assert "sec_topsecret" not in repr(config)


async def test_a_given_session_is_left_open(sky: Sky) -> None:
    transport = sky.transport_with()
    assert (await transport.send(message())).accepted
    await transport.close()
    assert not sky.http.closed
