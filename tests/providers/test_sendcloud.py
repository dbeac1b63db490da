"""SendCloud transport and emulator: wire format, documented limits, codes, SMSHook.

Everything goes over real HTTP on 127.0.0.1 (the emulator, or a small capture server
where the test must see the exact bytes the transport sends).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Any
from urllib.parse import parse_qsl

import aiohttp
import pytest
from aiohttp import web

from server.domain.models import MessageStatus, OutboundMessage, UseType
from server.domain.ports import ProviderError, ProviderRef, Receipt
from server.emulators.common import EmulatorControls, RunningEmulator
from server.emulators.sendcloud import build_app
from server.providers.sendcloud import SendCloudConfig, SendCloudTransport, sign_request
from server.providers.sendcloud_codes import HOOK_CODES, RETURN_CODES, failed_status
from server.providers.sendcloud_hook import hook_signature
from tests.contract.pair_sendcloud import SMS_KEY, SMS_USER, TEMPLATE_ID, config, settings
from tests.eventually import eventually

pytestmark = pytest.mark.timeout(10)

MOBILE = "+8613800138000"


def message(to: str = MOBILE, message_id: str | None = None, **data: str) -> OutboundMessage:
    return OutboundMessage(
        id=message_id or uuid.uuid4().hex,
        account_id=1,
        to_number=to,
        body="Your order A-1 has shipped.",
        use_type=UseType.NOTIFICATION,
        attempts=1,
        template_code="order_shipped",
        data=data or {"order_no": "A-1"},
    )


def md5_signature(params: dict[str, str], key: str) -> str:
    """The documented scheme, written out independently of the transport."""
    text = key + "&" + "&".join(f"{k}={params[k]}" for k in sorted(params)) + "&" + key
    return hashlib.md5(text.encode()).hexdigest()


class Emulator:
    def __init__(self, running: RunningEmulator, session: aiohttp.ClientSession) -> None:
        self.running = running
        self.session = session
        self.url = running.base_url

    @property
    def received(self) -> list[Any]:
        return self.running.state.received

    async def tune(self, **knobs: Any) -> None:
        async with self.session.post(f"{self.url}/_emulator/sendcloud", json=knobs) as r:
            assert r.status == 200, await r.text()

    async def call(
        self, endpoint: str, key: str = SMS_KEY, *, sign: bool = True, **params: str
    ) -> dict[str, Any]:
        """A hand-signed call, as a third-party client would make it."""
        form = {"smsUser": SMS_USER, "timestamp": str(int(time.time() * 1000)), **params}
        form = {k: v for k, v in form.items() if v is not None}
        if sign:
            form["signature"] = md5_signature(form, key)
        async with self.session.post(f"{self.url}/smsapi/{endpoint}", data=form) as r:
            assert r.status == 200
            body: dict[str, Any] = await r.json()
            return body


@pytest.fixture
async def emulator() -> AsyncIterator[Emulator]:
    running = await RunningEmulator(build_app(settings(EmulatorControls()))).start()
    async with aiohttp.ClientSession() as session:
        yield Emulator(running, session)
    await running.stop()


@pytest.fixture
async def transport(emulator: Emulator) -> AsyncIterator[SendCloudTransport]:
    t = SendCloudTransport(config(emulator.url))
    yield t
    await t.close()


# -- wire format ---------------------------------------------------------------


def test_signature_follows_the_documented_recipe() -> None:
    params = {"smsUser": "u", "templateId": "7", "vars": '{"%a%":"b c"}', "signature": "x"}
    expected = hashlib.md5(
        b'k&smsUser=u&templateId=7&vars={"%a%":"b c"}&k'
    ).hexdigest()  # sorted, raw values, signature left out, key on both ends
    assert sign_request(params, "k") == expected
    assert sign_request({**params, "smsKey": "k"}, "k") == expected


async def capture_server(answer: dict[str, Any]) -> tuple[RunningEmulator, list[Any]]:
    seen: list[Any] = []

    async def record(request: web.Request) -> web.Response:
        seen.append((request.path, request.content_type, await request.read()))
        return web.json_response(answer)

    app = web.Application()
    app.router.add_post("/{tail:.*}", record)
    return await RunningEmulator(app).start(), seen


@pytest.mark.parametrize(
    ("to", "phone"), [(MOBILE, "13800138000"), ("+85261234567", "0085261234567")]
)
async def test_send_posts_a_signed_form(to: str, phone: str) -> None:
    ok = {"result": True, "statusCode": 200, "message": "ok", "info": {"smsIds": ["s-1"]}}
    server, seen = await capture_server(ok)
    transport = SendCloudTransport(config(server.base_url))
    try:
        sent = message(to)
        before = int(time.time() * 1000)
        outcome = await transport.send(sent)
    finally:
        await transport.close()
        await server.stop()
    assert outcome.accepted and outcome.provider_message_id == "s-1"
    ((path, content_type, raw),) = seen
    assert path == "/smsapi/send"
    assert content_type == "application/x-www-form-urlencoded"
    assert b"%25order_no%25" in raw  # the form is URL-encoded on the wire
    form = dict(parse_qsl(raw.decode(), keep_blank_values=True, strict_parsing=True))
    signature = form.pop("signature")
    assert signature == md5_signature(form, SMS_KEY)
    stamp = int(form.pop("timestamp"))
    assert before - 1000 <= stamp <= int(time.time() * 1000) + 1000  # milliseconds
    assert form == {
        "smsUser": SMS_USER,
        "templateId": TEMPLATE_ID,
        "msgType": "0",
        "phone": phone,
        "vars": '{"%order_no%":"A-1"}',
        "sendRequestId": sent.id,
        "tag": json.dumps({"smsgw": sent.id}, separators=(",", ":")),
    }


# -- the emulator enforces the document ---------------------------------------


async def test_emulator_checks_user_signature_and_timestamp(emulator: Emulator) -> None:
    # Any: the form fields go through **params, beside call's own key= and sign=.
    params: dict[str, Any] = {"templateId": TEMPLATE_ID, "phone": "13800138000"}
    assert (await emulator.call("send", **params))["statusCode"] == 200
    assert (await emulator.call("send", key="wrong", **params))["statusCode"] == 422
    assert (await emulator.call("send", sign=False, **params))["statusCode"] == 421
    assert (await emulator.call("send", smsUser="", **params))["statusCode"] == 472
    assert (await emulator.call("send", smsUser="nobody", **params))["statusCode"] == 471
    old = str(int(time.time() * 1000) - 7000)
    assert (await emulator.call("send", timestamp=old, **params))["statusCode"] == 461
    recent = str(int(time.time() * 1000) - 4000)
    assert (await emulator.call("send", timestamp=recent, **params))["statusCode"] == 200
    assert len(emulator.received) == 2


async def test_emulator_takes_at_most_2000_distinct_numbers(emulator: Emulator) -> None:
    numbers = [f"139{i:08d}" for i in range(2001)]
    too_many = await emulator.call("send", templateId=TEMPLATE_ID, phone=",".join(numbers))
    assert (too_many["statusCode"], too_many["result"]) == (412, False)
    dup = await emulator.call("send", templateId=TEMPLATE_ID, phone="13800138000,13800138000")
    assert dup["statusCode"] == 413
    assert (await emulator.call("send", templateId=TEMPLATE_ID, phone=""))["statusCode"] == 411
    assert emulator.received == []
    full = await emulator.call("send", templateId=TEMPLATE_ID, phone=",".join(numbers[:2000]))
    assert full["statusCode"] == 200
    assert full["info"]["successCount"] == 2000 == len(set(full["info"]["smsIds"]))


async def test_emulator_answers_partial_and_total_failure(emulator: Emulator) -> None:
    partial = await emulator.call("send", templateId=TEMPLATE_ID, phone="13800138000,12345")
    assert partial["statusCode"] == 311 and partial["result"] is True
    assert partial["info"]["failedCount"] == 1 and partial["info"]["items"][0]["phone"] == "12345"
    assert [r.phone for r in emulator.received] == ["13800138000"]
    none = await emulator.call("send", templateId=TEMPLATE_ID, phone="12345,678")
    assert none["statusCode"] == 312 and none["result"] is False


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"templateId": ""}, 433),
        ({"templateId": "999"}, 431),
        ({"vars": '{"%order_no%":"' + "x" * 33 + '"}'}, 483),
        ({"vars": '{"order_no":"https://evil.example"}'}, 441),
        ({"vars": "not json"}, 441),
        ({"sendRequestId": "r" * 129}, 441),
        ({"tag": "[1]"}, 441),
        ({"phone": "+8613800138000"}, 412),
    ],
)
async def test_emulator_refuses_bad_sends(
    emulator: Emulator, params: dict[str, Any], code: int
) -> None:
    body = await emulator.call(
        "send", **{"templateId": TEMPLATE_ID, "phone": "13800138000", **params}
    )
    assert body["statusCode"] == code
    assert emulator.received == []


async def test_emulator_renders_both_var_styles(emulator: Emulator) -> None:
    for name in ("order_no", "%order_no%"):
        body = await emulator.call(
            "send", templateId=TEMPLATE_ID, phone="13800138000", vars=json.dumps({name: "B-2"})
        )
        assert body["statusCode"] == 200
    assert [r.content for r in emulator.received] == ["【Shop】Your order B-2 has shipped."] * 2


async def test_emulator_refuses_unverified_templates(emulator: Emulator) -> None:
    await emulator.tune(unverified_templates=[TEMPLATE_ID])
    body = await emulator.call("send", templateId=TEMPLATE_ID, phone="13800138000")
    assert body["statusCode"] == 432


async def test_status_query_takes_at_most_100_ids(
    emulator: Emulator, transport: SendCloudTransport
) -> None:
    many = ";".join(["x"] * 101)
    assert (await emulator.call("status/query", smsIds=many, days="1"))["statusCode"] == 412
    # The published page requires a time span (days, or startDate and endDate).
    assert (await emulator.call("status/query", smsIds="x"))["statusCode"] == 481
    # The transport splits longer lists itself; records still "requesting" are left out.
    sent = await transport.send(message())
    refs = [ProviderRef(f"m{i}", f"unknown-{i}") for i in range(150)]
    refs.append(ProviderRef("mine", sent.provider_message_id))
    assert await transport.query_status(refs) == []
    receipt = await settled(transport, refs[-1])
    assert (receipt.message_id, receipt.status) == ("mine", MessageStatus.DELIVERED)


async def test_emulator_answers_the_published_status_shape(
    emulator: Emulator, transport: SendCloudTransport
) -> None:
    emulator.running.state.settings.controls.delivery_delay = 0.0
    sent = [await transport.send(message(f"+86138001380{i:02d}")) for i in range(3)]
    ids = [o.provider_message_id for o in sent]
    body = await emulator.call("status/query", smsIds=";".join(ids), days="1", limit="2")
    assert (body["result"], body["statusCode"]) == (True, 200)
    info = body["info"]
    assert (info["voListSize"], info["total"]) == (2, "3")  # total is a string
    record = info["voList"][0]
    assert set(record) == {
        "smsId", "msgType", "receiver", "requestTime", "sendLog", "smsUser", "status",
        "statusCode", "templateId", "templateName", "updateTime",
    }  # fmt: skip
    assert (record["smsId"], record["receiver"], record["templateId"]) == (
        ids[0],
        "13800138000",
        TEMPLATE_ID,
    )
    assert (record["status"], record["statusCode"], record["msgType"]) == ("送达", 200, "国内短信")
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", record["requestTime"])
    rest = await emulator.call("status/query", smsIds=";".join(ids), days="1", start="2")
    assert [r["smsId"] for r in rest["info"]["voList"]] == ids[2:]
    by_phone = await emulator.call("status/query", phones="13800138001", days="1")
    assert [r["smsId"] for r in by_phone["info"]["voList"]] == [ids[1]]
    # A span is required and at most 30 days.
    assert (await emulator.call("status/query", smsIds=ids[0]))["statusCode"] == 481
    assert (await emulator.call("status/query", smsIds=ids[0], days="31"))["statusCode"] == 441
    dates: dict[str, Any] = {"startDate": "2020-01-01", "endDate": "2020-01-02"}
    assert (await emulator.call("status/query", smsIds=ids[0], **dates))["info"]["voList"] == []


# -- idempotency (sendRequestId) -----------------------------------------------


async def test_repeated_send_is_accepted_once(
    emulator: Emulator, transport: SendCloudTransport
) -> None:
    sent = message()
    first = await transport.send(sent)
    again = await transport.send(replace(sent, attempts=2))
    assert first.accepted and again.accepted
    assert again.provider_message_id == first.provider_message_id
    assert len(emulator.received) == 1
    assert emulator.received[0].request_key == sent.id
    raw = await emulator.call(
        "send", templateId=TEMPLATE_ID, phone="13800138000", sendRequestId=sent.id
    )
    # The seed documents only the code: the repeat brings no smsIds, the transport
    # recovered the first request's id with a status query by phone.
    assert (raw["statusCode"], raw["info"]) == (400, {})


async def test_retry_after_a_lost_answer_does_not_send_twice(
    emulator: Emulator, transport: SendCloudTransport
) -> None:
    await emulator.tune(answer_delay=1.3)  # processed, but the answer comes too late
    sent = message()
    lost = await transport.send(sent)
    assert (lost.accepted, lost.retryable, lost.error_code) == (False, True, "TIMEOUT")
    await emulator.tune(answer_delay=0.0)
    retried = await transport.send(replace(sent, attempts=2))
    assert retried.accepted
    assert [r.provider_message_id for r in emulator.received] == [retried.provider_message_id]


# -- codes ---------------------------------------------------------------------

REFUSALS = {
    312: (False, MessageStatus.REJECTED),
    411: (False, MessageStatus.FAILED),
    412: (False, MessageStatus.REJECTED),
    413: (False, MessageStatus.FAILED),
    421: (False, MessageStatus.FAILED),
    422: (False, MessageStatus.FAILED),
    431: (False, MessageStatus.FAILED),
    432: (False, MessageStatus.FAILED),
    433: (False, MessageStatus.FAILED),
    441: (False, MessageStatus.REJECTED),
    451: (False, MessageStatus.FAILED),
    452: (False, MessageStatus.FAILED),
    461: (True, None),
    471: (False, MessageStatus.FAILED),
    472: (False, MessageStatus.FAILED),
    473: (False, MessageStatus.FAILED),
    474: (False, MessageStatus.FAILED),
    481: (False, MessageStatus.FAILED),
    482: (False, MessageStatus.REJECTED),
    483: (False, MessageStatus.REJECTED),
    496: (True, None),
    498: (True, None),
    499: (False, MessageStatus.FAILED),
    501: (True, None),
    601: (False, MessageStatus.FAILED),
}


def test_every_documented_code_is_mapped() -> None:
    assert set(RETURN_CODES) == set(REFUSALS) | {200, 311, 400}
    assert set(HOOK_CODES) == {410, 420, 430, 440, 450, 460, 500, 510, 550, 580, 590}


@pytest.mark.parametrize(("code", "expected"), sorted(REFUSALS.items()))
async def test_refusal_codes_map_to_outcomes(
    emulator: Emulator,
    transport: SendCloudTransport,
    code: int,
    expected: tuple[bool, MessageStatus | None],
) -> None:
    await emulator.tune(force_code=code)
    outcome = await transport.send(message())
    retryable, status = expected
    assert (outcome.accepted, outcome.retryable, outcome.error_code) == (
        False,
        retryable,
        str(code),
    )
    if status is not None:
        assert outcome.final_status == status
    await emulator.tune(force_code=0)
    assert emulator.received == []


@pytest.mark.parametrize("code", [200, 999])
async def test_answers_without_an_smsid_or_undocumented_are_retried(
    emulator: Emulator, transport: SendCloudTransport, code: int
) -> None:
    await emulator.tune(force_code=code)
    outcome = await transport.send(message())
    assert (outcome.accepted, outcome.retryable, outcome.error_code) == (
        False,
        True,
        "BAD_RESPONSE",
    )


async def test_accepting_codes_without_our_smsid(
    emulator: Emulator, transport: SendCloudTransport
) -> None:
    # A repeat answered without the original ids: sent earlier, so still accepted.
    await emulator.tune(force_code=400)
    repeat = await transport.send(message())
    assert (repeat.accepted, repeat.provider_message_id) == (True, "")
    # "Partially successful" without an smsId for our one number: it was refused.
    await emulator.tune(force_code=311)
    partial = await transport.send(message())
    assert (partial.accepted, partial.retryable, partial.error_code) == (False, False, "311")
    assert partial.final_status == MessageStatus.REJECTED


async def test_per_number_limits_are_retried_later(
    emulator: Emulator, transport: SendCloudTransport
) -> None:
    await emulator.tune(per_minute=2)
    outcomes = [await transport.send(message()) for _ in range(3)]
    assert [o.accepted for o in outcomes] == [True, True, False]
    assert (outcomes[2].retryable, outcomes[2].error_code) == (True, "496")
    assert (await transport.send(message("+8613900139000"))).accepted
    await emulator.tune(per_minute=0, per_day=2)
    day = await transport.send(message())
    assert (day.accepted, day.retryable, day.error_code) == (False, True, "498")


async def test_clock_skew_is_learnt_from_the_server(
    emulator: Emulator, transport: SendCloudTransport
) -> None:
    await emulator.tune(clock_skew_ms=60_000)
    first = await transport.send(message())
    assert first.accepted
    # The learnt offset is kept: a hand call with our clock is refused, the transport's not.
    assert (await emulator.call("send", templateId=TEMPLATE_ID, phone="1"))["statusCode"] == 461
    assert (await transport.send(message())).accepted
    assert len(emulator.received) == 2


# -- status and SMSHook codes --------------------------------------------------


@pytest.mark.parametrize(("code", "status"), sorted(HOOK_CODES.items()))
def test_smshook_codes(code: int, status: MessageStatus) -> None:
    refused = code in (410, 420, 430, 440, 450, 460, 550)
    assert status == (MessageStatus.REJECTED if refused else MessageStatus.UNDELIVERED)
    assert failed_status(code) == status


async def settled(transport: SendCloudTransport, ref: ProviderRef) -> Receipt:
    """The receipt of ``ref`` once SendCloud stops "requesting" (left out until then)."""
    for _ in range(100):
        receipts = await transport.query_status([ref])
        if receipts:
            (receipt,) = receipts
            return receipt
        await asyncio.sleep(0.05)
    raise AssertionError("never settled")


@pytest.mark.parametrize(
    ("data", "status", "codes"),
    [
        ({"order_no": "A-1"}, MessageStatus.UNDELIVERED, {"500", "590"}),
        ({"other": "x"}, MessageStatus.REJECTED, {"450"}),  # %order_no% left unfilled
    ],
)
async def test_status_query_maps_failures(
    emulator: Emulator,
    transport: SendCloudTransport,
    data: dict[str, str],
    status: MessageStatus,
    codes: set[str],
) -> None:
    emulator.running.state.settings.controls.outcome = "undelivered"
    emulator.running.state.settings.controls.delivery_delay = 0.05
    sent = message(**data)
    outcome = await transport.send(sent)
    receipt = await settled(transport, ProviderRef(sent.id, outcome.provider_message_id))
    assert (receipt.message_id, receipt.status, receipt.provider) == (sent.id, status, "sc1")
    assert receipt.error_code in codes


async def test_status_query_refusal_raises(emulator: Emulator) -> None:
    wrong = SendCloudTransport(config(emulator.url, sms_key="nope"))
    try:
        with pytest.raises(ProviderError, match="422"):
            await wrong.query_status([ProviderRef("m", "s")])
    finally:
        await wrong.close()


# -- verification and voice codes ----------------------------------------------


@pytest.mark.parametrize(
    ("to", "phone"), [(MOBILE, "13800138000"), ("+85261234567", "0085261234567")]
)
async def test_send_code(
    emulator: Emulator, transport: SendCloudTransport, to: str, phone: str
) -> None:
    sent = message(to)
    outcome = await transport.send_code(sent, "482913")
    assert outcome.accepted
    again = await transport.send_code(sent, "482913")
    assert again.provider_message_id == outcome.provider_message_id
    (received,) = emulator.received
    assert (received.phone, received.content) == (
        phone,
        "【Shop】Your verification code is 482913.",
    )


async def test_send_code_checks_the_code(emulator: Emulator, transport: SendCloudTransport) -> None:
    assert (await transport.send_code(message(), "12")).error_code == "INVALID_CODE"
    raw = await emulator.call(
        "sendCode", msgType="0", phone="13800138000", code="1234567", signName="S"
    )
    assert raw["statusCode"] == 441
    mismatch = await emulator.call(
        "sendCode", msgType="2", phone="13800138000", code="1234", signName="S"
    )
    assert mismatch["statusCode"] == 412
    nosign = await emulator.call("sendCode", msgType="0", phone="13800138000", code="1234")
    assert nosign["statusCode"] == 421
    assert emulator.received == []


async def test_send_voice(emulator: Emulator, transport: SendCloudTransport) -> None:
    outcome = await transport.send_voice(message(), "7351")
    assert outcome.accepted
    assert "7351" in emulator.received[0].content
    abroad = await transport.send_voice(message("+85261234567"), "7351")
    assert (abroad.retryable, abroad.error_code, abroad.final_status) == (
        False,
        "412",
        MessageStatus.REJECTED,
    )
    assert len(emulator.received) == 1


# -- SMSHook -------------------------------------------------------------------


async def until(condition: Callable[[], bool]) -> None:
    await eventually(condition, within=2, interval=0.01)


async def test_smshook_delivers_verified_receipts() -> None:
    transport = SendCloudTransport(config("http://127.0.0.1:9"))
    forms: list[dict[str, str]] = []
    receipts: list[Receipt] = []

    async def hook(request: web.Request) -> web.Response:
        form = {k: str(v) for k, v in (await request.post()).items()}
        forms.append(form)
        receipts.extend(transport.parse_hook(form))
        return web.Response(text="ok")

    receiver_app = web.Application()
    receiver_app.router.add_post("/hook", hook)
    receiver = await RunningEmulator(receiver_app).start()
    controls = EmulatorControls(delivery_delay=0.05)
    running = await RunningEmulator(
        build_app(settings(controls, webhook_url=f"{receiver.base_url}/hook"))
    ).start()
    sender = SendCloudTransport(config(running.base_url))
    second = message("+8613900139000")
    try:
        delivered = await sender.send(message())
        await until(lambda: len(receipts) == 1)
        controls.outcome = "undelivered"
        undelivered = await sender.send(second)
        await until(lambda: len(receipts) == 2)
        await asyncio.sleep(0.1)  # no second hook per message
    finally:
        await sender.close()
        await running.stop()
        await receiver.stop()
    by_id = {r.provider_message_id: r for r in receipts}
    assert len(receipts) == 2 == len(by_id)
    assert by_id[delivered.provider_message_id].status == MessageStatus.DELIVERED
    failed = by_id[undelivered.provider_message_id]
    assert (failed.status, failed.message_id, failed.provider) == (
        MessageStatus.UNDELIVERED,
        second.id,  # the tag we sent came back with the event
        "sc1",
    )
    assert failed.error_code in {"500", "590"}
    first = forms[0]
    assert len(first["token"]) == 32 and first["token"].isalnum()
    mac = hmac.new(SMS_KEY.encode(), (first["timestamp"] + first["token"]).encode(), "sha256")
    assert first["signature"] == mac.hexdigest()
    assert abs(int(first["timestamp"]) - time.time() * 1000) < 5000

    # Replays, forgeries and stale events are refused.
    with pytest.raises(ProviderError, match="already used"):
        transport.parse_hook(forms[0])
    stamp = int(time.time() * 1000)
    fresh = {**forms[0], "timestamp": str(stamp), "token": "t" * 32}
    with pytest.raises(ProviderError, match="signature"):
        transport.parse_hook(fresh)
    for shift, reason in ((-301_000, "older"), (61_000, "future")):
        stamp_s = str(stamp + shift)
        form = {
            **fresh,
            "timestamp": stamp_s,
            "signature": hook_signature(SMS_KEY, stamp_s, "t" * 32),
        }
        with pytest.raises(ProviderError, match=reason):
            transport.parse_hook(form)
    fresh["signature"] = hook_signature(SMS_KEY, fresh["timestamp"], fresh["token"])
    assert transport.parse_hook(fresh)[0].status == MessageStatus.DELIVERED
    await transport.close()


def test_parse_hook_honours_the_given_clock() -> None:
    transport = SendCloudTransport(config("http://127.0.0.1:9"))
    stamp, token = "1700000000000", "a" * 32
    form = {
        "event": "failed",
        "smsId": "s-1",
        "statusCode": "430",
        "timestamp": stamp,
        "token": token,
        "signature": hook_signature(SMS_KEY, stamp, token),
    }
    (receipt,) = transport.parse_hook(form, now=1_700_000_010.0)
    assert (receipt.status, receipt.error_code) == (MessageStatus.REJECTED, "430")
    with pytest.raises(ProviderError, match="lacks"):
        transport.parse_hook({**form, "token": ""}, now=1_700_000_010.0)


# -- capabilities and config ---------------------------------------------------


def test_capabilities_and_can_carry() -> None:
    transport = SendCloudTransport(config("http://127.0.0.1:9"))
    caps = transport.capabilities
    assert (caps.free_text, caps.templates, caps.voice, caps.max_status_ids) == (
        False,
        True,
        True,
        100,
    )
    assert transport.can_carry(message())
    assert not transport.can_carry(replace(message(), template_code="unknown"))
    assert not transport.can_carry(replace(message(), template_code=None))


def test_config_fails_fast() -> None:
    with pytest.raises(ValueError, match="sms_key"):
        SendCloudConfig(name="sc", base_url="http://x", sms_user="u", sms_key="")
