"""The exact requests SendCloud receives from our transport, checked against seed 001
and SendCloud's status page (https://www.sendcloud.net/doc/en/sms/sms_status).

A small capture server on 127.0.0.1 records the raw bytes and answers as the document
shows; the expected signature is computed here from the seed README's words, not
with the transport's code.
"""

from __future__ import annotations

import ast
import hashlib
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import pytest
from aiohttp import web

from server.domain.models import Channel, MessageStatus, OutboundMessage, UseType
from server.domain.ports import BulkTransport, ProviderRef, Receipt
from server.emulators.common import RunningEmulator
from server.providers.sendcloud import SendCloudConfig, SendCloudTransport

pytestmark = pytest.mark.timeout(10)

USER, KEY = "wire-user", "wire-key-9f8e7d"
SMS_ID = "1458113381893_15_3_11_1ainnq$13800138000"


def documented_signature(form: dict[str, str], key: str) -> str:
    """Seed README: "sort all request parameters except smsKey and signature by name,
    join them as k=v pairs with &, wrap the result as SMS_KEY + "&" + params + "&" +
    SMS_KEY, and send the lowercase hex MD5 of that string as signature"."""
    names = sorted(n for n in form if n not in ("smsKey", "signature"))
    params = "&".join(n + "=" + form[n] for n in names)
    return hashlib.md5((key + "&" + params + "&" + key).encode("utf-8")).hexdigest()


@dataclass
class Capture:
    server: RunningEmulator
    answers: list[dict[str, Any]]
    seen: list[tuple[str, str, bytes]] = field(default_factory=list)

    def form(self, index: int = 0) -> tuple[str, dict[str, str]]:
        """(path, form) of a request, after checking its encoding and signature."""
        path, content_type, raw = self.seen[index]
        assert content_type == "application/x-www-form-urlencoded"
        pairs = parse_qsl(raw.decode("ascii"), keep_blank_values=True, strict_parsing=True)
        form = dict(pairs)
        assert len(form) == len(pairs)  # no field twice
        assert form.pop("signature") == documented_signature(form, KEY)
        return path, form


@pytest.fixture
async def capture() -> AsyncIterator[Capture]:
    answers: list[dict[str, Any]] = []
    holder: list[Capture] = []

    async def record(request: web.Request) -> web.Response:
        holder[0].seen.append((request.path, request.content_type, await request.read()))
        return web.json_response(answers.pop(0))

    app = web.Application()
    app.router.add_post("/{tail:.*}", record)
    server = await RunningEmulator(app).start()
    holder.append(Capture(server, answers))
    yield holder[0]
    await server.stop()


@pytest.fixture
async def transport(capture: Capture) -> AsyncIterator[SendCloudTransport]:
    t = SendCloudTransport(
        SendCloudConfig(
            name="cloud",
            base_url=capture.server.base_url,
            sms_user=USER,
            sms_key=KEY,
            timeout=2.0,
            templates={"order_shipped": "30215"},
            sign_name="Shop",
        )
    )
    yield t
    await t.close()


def ok(*ids: str) -> dict[str, Any]:
    """The seed's success answer."""
    return {
        "message": "请求成功",
        "info": {"successCount": len(ids), "smsIds": list(ids)},
        "result": True,
        "statusCode": 200,
    }


def message(
    to: str = "+8613800138000",
    *,
    template_code: str | None = "order_shipped",
    use_type: UseType = UseType.NOTIFICATION,
    code: str | None = None,
    channel: Channel = Channel.SMS,
    **data: str,
) -> OutboundMessage:
    return OutboundMessage(
        id=uuid.uuid4().hex,
        account_id=1,
        to_number=to,
        body="text",
        use_type=use_type,
        attempts=1,
        template_code=template_code,
        data=data,
        channel=channel,
        code=code,
    )


def tag(message_id: str) -> str:
    return '{"smsgw":"' + message_id + '"}'


def stamped(form: dict[str, str]) -> dict[str, str]:
    """Checks the send's ``timestamp`` (UNIX time in ms, near now) and removes it."""
    stamp = int(form.pop("timestamp"))
    assert abs(stamp - time.time() * 1000) < 5000
    return form


async def test_a_template_send(capture: Capture, transport: SendCloudTransport) -> None:
    capture.answers.append(ok(SMS_ID))
    sent = message(order_no="A 1&2", name="Lü")
    outcome = await transport.send(sent)
    assert (outcome.accepted, outcome.provider_message_id) == (True, SMS_ID)
    path, form = capture.form()
    assert path == "/smsapi/send"
    assert stamped(form) == {
        "smsUser": USER,
        "templateId": "30215",
        "msgType": "0",
        "phone": "13800138000",
        # Seed: JSON of substitution variables; SendCloud's %name% keys.
        "vars": '{"%name%":"Lü","%order_no%":"A 1&2"}',
        "sendRequestId": sent.id,
        "tag": tag(sent.id),
    }


async def test_free_text_is_never_sent(capture: Capture, transport: SendCloudTransport) -> None:
    # Seed 001 has no free-text endpoint: send takes a templateId.
    text = message(template_code=None)
    assert not transport.can_carry(text)
    outcome = await transport.send(text)
    assert (outcome.accepted, outcome.error_code) == (False, "NO_TEMPLATE")
    assert capture.seen == []


@pytest.mark.parametrize(
    ("to", "phone", "msg_type"),
    [("+8613800138000", "13800138000", "0"), ("+85261234567", "0085261234567", "2")],
)
async def test_an_sms_code_uses_send_code(
    capture: Capture, transport: SendCloudTransport, to: str, phone: str, msg_type: str
) -> None:
    capture.answers.append(ok(SMS_ID))
    code = message(to, template_code=None, use_type=UseType.VERIFICATION, code="482913")
    assert transport.can_carry(code)
    assert (await transport.send(code)).accepted
    path, form = capture.form()
    assert path == "/smsapi/sendCode"
    assert stamped(form) == {
        "smsUser": USER,
        "msgType": msg_type,  # 0 SMS, 2 international SMS
        "phone": phone,
        "signName": "Shop",  # the sign_name option
        "code": "482913",
        "sendRequestId": code.id,
        "tag": tag(code.id),
    }


async def test_sign_id_wins_over_sign_name(capture: Capture) -> None:
    config = SendCloudConfig(
        name="c", base_url=capture.server.base_url, sms_user=USER, sms_key=KEY,
        sign_name="Shop", sign_id="7788",
    )  # fmt: skip
    transport = SendCloudTransport(config)
    capture.answers.append(ok(SMS_ID))
    try:
        code = message(template_code=None, use_type=UseType.VERIFICATION, code="1234")
        assert (await transport.send(code)).accepted
    finally:
        await transport.close()
    _, form = capture.form()
    assert form["signId"] == "7788" and "signName" not in form


@pytest.mark.parametrize("digits", ["123", "1234567", "12345678", "12a4"])
async def test_codes_outside_4_to_6_digits_are_not_carried(
    capture: Capture, transport: SendCloudTransport, digits: str
) -> None:
    sms = message(template_code=None, use_type=UseType.VERIFICATION, code=digits)
    voice = replace(sms, channel=Channel.VOICE)
    assert not transport.can_carry(sms) and not transport.can_carry(voice)
    assert capture.seen == []


async def test_a_voice_code(capture: Capture, transport: SendCloudTransport) -> None:
    capture.answers.append(ok(SMS_ID))
    voice = message(template_code=None, use_type=UseType.VERIFICATION, code="7351")
    voice = replace(voice, channel=Channel.VOICE)
    assert transport.can_carry(voice)
    assert (await transport.send_voice(voice, "7351")).accepted
    path, form = capture.form()
    assert path == "/smsapi/sendVoice"
    assert stamped(form) == {
        "smsUser": USER,
        "phone": "13800138000",
        "code": "7351",
        "sendRequestId": voice.id,
        "tag": tag(voice.id),
    }


def vo(sms_id: str, status: str, code: int) -> dict[str, Any]:
    """A voList record as the published example shows it."""
    return {
        "smsId": sms_id,
        "msgType": "国内短信",
        "receiver": sms_id.rpartition("$")[2],
        "requestTime": "2017-02-19 00:21:20",
        "sendLog": "发送成功",
        "smsUser": USER,
        "status": status,
        "statusCode": code,
        "templateId": "30215",
        "templateName": "SendCloud验证码",
        "updateTime": "2017-02-19 00:21:21",
    }


async def test_the_status_query(capture: Capture, transport: SendCloudTransport) -> None:
    ids = [f"1487_15_3_11_x{i}$1380013800{i}" for i in range(5)]
    capture.answers.append(
        {
            "info": {
                "voList": [
                    vo(ids[0], "送达", 200),
                    vo(ids[1], "处理失败-局部拦截列表", 420),
                    vo(ids[2], "发送失败", 580),
                    vo(ids[3], "请求", 0),
                ],  # ids[4] unknown to SendCloud: left out
                "voListSize": 4,
                "total": "4",
            },
            "message": "请求成功",
            "result": True,
            "statusCode": 200,
        }
    )
    refs = [ProviderRef(f"m{i}", sms_id) for i, sms_id in enumerate(ids)]
    receipts = await transport.query_status(refs)
    path, form = capture.form()
    assert path == "/smsapi/status/query"
    # The page lists no timestamp for this call; a time span is required.
    assert form == {"smsUser": USER, "smsIds": ";".join(ids), "days": "3"}
    assert receipts == [
        Receipt("cloud", "m0", MessageStatus.DELIVERED, "", ids[0]),
        # 420 (local intercept list): the number is suppressed with the receipt.
        Receipt("cloud", "m1", MessageStatus.REJECTED, "420", ids[1], suppress=4),
        Receipt("cloud", "m2", MessageStatus.UNDELIVERED, "580", ids[2]),
    ]


async def test_a_bulk_send(capture: Capture, transport: SendCloudTransport) -> None:
    assert isinstance(transport, BulkTransport) and transport.max_bulk == 2000
    group = [message(f"+861380013800{i}", order_no="A-1") for i in range(3)]
    phones = [f"1380013800{i}" for i in range(3)]
    # The answer lists the numbers in another order: each id goes to its own number.
    capture.answers.append(ok(*(f"1458_15_3_11_abc${p}" for p in reversed(phones))))
    outcomes = await transport.send_bulk(group)
    assert [o.provider_message_id for o in outcomes] == [f"1458_15_3_11_abc${p}" for p in phones]
    path, form = capture.form()
    assert path == "/smsapi/send"
    request_id = form["sendRequestId"]
    assert stamped(form) == {
        "smsUser": USER,
        "templateId": "30215",
        "msgType": "0",
        "phone": ",".join(phones),  # seed: separated by commas
        "vars": '{"%order_no%":"A-1"}',
        "sendRequestId": request_id,
    }
    # The same group (in any order) repeats the same sendRequestId; another does not.
    capture.answers.extend([ok(), ok()])
    await transport.send_bulk(list(reversed(group)))
    await transport.send_bulk(group[:2])
    assert capture.form(1)[1]["sendRequestId"] == request_id
    assert capture.form(2)[1]["sendRequestId"] != request_id
    assert len(request_id) <= 128


EMULATOR = Path(__file__).parents[2] / "server" / "emulators"


@pytest.mark.parametrize("module", ["sendcloud.py", "sendcloud_state.py"])
def test_the_emulator_imports_nothing_of_the_gateway(module: str) -> None:
    """Written from the documents: only the emulators' own shared runner may be used."""
    tree = ast.parse((EMULATOR / module).read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    ours = {m for m in imported if m == "server" or m.startswith("server.")}
    assert ours <= {"server.emulators.common", "server.emulators.sendcloud_state"}
