"""The exact request each provider receives, held against its document (issue 15).

Each expected body below is copied from the seed's own example request (seed 000:
Skynoo, seed 002: sendsms), and each message is built so the transport must produce
that example: method, path, headers and body, compared whole. The emulator records
what reached it before it reads anything, so nothing here depends on its parsing.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from typing import Any

import pytest

from server.domain.models import OutboundMessage, UseType
from server.domain.ports import ProviderRef
from server.emulators import sendsms as sendsms_emulator
from server.emulators import skynoo as skynoo_emulator
from server.emulators.common import (
    EmulatorControls,
    EmulatorSettings,
    RecordedRequest,
    RunningEmulator,
)
from server.providers.sendsms import SendsmsConfig, SendsmsTransport
from server.providers.skynoo import SkynooConfig
from server.providers.skynoo_bulk import SkynooBulkTransport

pytestmark = pytest.mark.timeout(10)

# Seed 000: "apiKey format: app_xxxxx, apiSecret format: sec_xxxxx".
API_KEY, API_SECRET = "app_123", "sec_1234567890"
# Seed 000: "Authorization: Basic {Base64(apiKey:apiSecret)}".
SKYNOO_AUTH = "Basic " + base64.b64encode(b"app_123:sec_1234567890").decode()
# Seed 002's example credentials.
CLIENT_ID, PASSCODE = "cookpad_Server_001", "ARDOR-7JF3-8F2E-QUWZ-CAN7F"
MOBILE = "+8613800138000"


def message(body: str, use_type: UseType = UseType.NOTIFICATION, **fields: Any) -> OutboundMessage:
    return OutboundMessage(uuid.uuid4().hex, 1, MOBILE, body, use_type, 1, **fields)


def only_request(emulator: RunningEmulator) -> RecordedRequest:
    [request] = emulator.state.requests
    emulator.state.requests.clear()
    return request


def assert_json_post(request: RecordedRequest, path: str, body: Any) -> None:
    assert (request.method, request.path, request.query) == ("POST", path, "")
    assert request.headers["Content-Type"].split(";")[0] == "application/json"
    assert request.json() == body


Started = tuple[RunningEmulator, Any]


@pytest.fixture
async def start() -> AsyncIterator[Callable[[str], Awaitable[Started]]]:
    closers: list[Callable[[], Awaitable[None]]] = []

    async def make(kind: str) -> Started:
        transport: Any
        if kind == "skynoo":
            settings = EmulatorSettings(
                credential_id=API_KEY,
                credential_secret=API_SECRET,
                templates={"15": "Order #orderNo# is #status#."},
                controls=EmulatorControls(delivery_delay=0.05),
            )
            emulator = await RunningEmulator(skynoo_emulator.build_app(settings)).start()
            transport = SkynooBulkTransport(
                SkynooConfig(
                    "sky",
                    emulator.base_url,
                    API_KEY,
                    API_SECRET,
                    timeout=1.0,
                    templates={"order_status": "15"},
                )
            )
        else:
            settings = EmulatorSettings(
                credential_id=CLIENT_ID,
                credential_secret=PASSCODE,
                templates={
                    # The seed's template, and one with two placeholders.
                    "t1": "Dear Member , your auth code is ${code}. The code will expire in "
                    "60 seconds. Have a good time! [Cookpad]",
                    "t2": "Order ${order_no} is ${status}. [Cookpad]",
                },
            )
            app = sendsms_emulator.build_app(settings, per_number_seconds=0.0)
            emulator = await RunningEmulator(app).start()
            transport = SendsmsTransport(
                SendsmsConfig(
                    "sms",
                    emulator.base_url,
                    CLIENT_ID,
                    PASSCODE,
                    timeout=1.0,
                    templates={"auth": "t1", "order": "t2"},
                )
            )
        closers.extend([emulator.stop, transport.close])
        return emulator, transport

    yield make
    for close in reversed(closers):
        await close()


# --- Skynoo (seed 000) -------------------------------------------------------------


async def test_skynoo_verification_text_is_the_seeds_example(start: Any) -> None:
    emulator, transport = await start("skynoo")
    text = "Your verification code is 123456, valid for 5 minutes."
    sent = await transport.send(message(text, UseType.VERIFICATION, code="123456"))
    assert sent.accepted
    request = only_request(emulator)
    assert request.headers["Authorization"] == SKYNOO_AUTH
    # Seed 000, "Send Verification Code (useType=1)".
    assert_json_post(
        request,
        "/api/sms/v1/send",
        json.loads(
            """{
  "mobile": "+8613800138000",
  "useType": 1,
  "text": "Your verification code is 123456, valid for 5 minutes."
}"""
        ),
    )


async def test_skynoo_template_send_is_the_seeds_example(start: Any) -> None:
    emulator, transport = await start("skynoo")
    data = {"orderNo": "ORD-2024-001", "status": "shipped"}
    sent = await transport.send(
        message(
            "Order ORD-2024-001 is shipped.",
            template_id=4,
            template_code="order_status",
            data=data,
            variables=("orderNo", "status"),
            template_content="Order #orderNo# is #status#.",
        )
    )
    assert sent.accepted
    request = only_request(emulator)
    assert request.headers["Authorization"] == SKYNOO_AUTH
    # Seed 000, "Send Notification with Template (useType=2)".
    assert_json_post(
        request,
        "/api/sms/v1/send",
        json.loads(
            """{
  "mobile": "+8613800138000",
  "useType": 2,
  "templateId": 15,
  "data": {"orderNo": "ORD-2024-001", "status": "shipped"}
}"""
        ),
    )
    assert [r.content for r in emulator.state.received] == ["Order ORD-2024-001 is shipped."]


@pytest.mark.parametrize(
    ("use_type", "wire"),
    [(UseType.NOTIFICATION, 2), (UseType.MARKETING, 3), (UseType.UNSPECIFIED, 2)],
)
async def test_skynoo_free_text_and_its_status_query(
    start: Any, use_type: UseType, wire: int
) -> None:
    emulator, transport = await start("skynoo")
    sent = await transport.send(message("Sale today only.", use_type))
    assert_json_post(
        only_request(emulator),
        "/api/sms/v1/send",
        {"mobile": MOBILE, "useType": wire, "text": "Sale today only."},
    )
    await transport.query_status([ProviderRef("m1", sent.provider_message_id)])
    request = only_request(emulator)
    assert request.headers["Authorization"] == SKYNOO_AUTH
    assert_json_post(request, "/api/sms/v1/getStatus", {"ids": [sent.provider_message_id]})


async def test_skynoo_batch_task_is_the_seeds_example(start: Any) -> None:
    emulator, transport = await start("skynoo")
    content = "Your order #order_no# has been shipped."
    messages = [
        replace(
            message(f"Your order {no} has been shipped.", template_id=5, template_code="x"),
            to_number=number,
            data={"order_no": no},
            variables=("order_no",),
            template_content=content,
        )
        for number, no in (("+8613800138000", "A001"), ("+8613900139000", "A002"))
    ]
    assert transport.bulk_key(messages[0]) == transport.bulk_key(messages[1])
    outcomes = await transport.send_bulk(messages)
    request = only_request(emulator)
    assert request.headers["Authorization"] == SKYNOO_AUTH
    # Seed 000, "Create Batch Task API", request example.
    assert_json_post(
        request,
        "/api/sms/v1/batch/create",
        json.loads(
            """{
  "useType": 2,
  "content": "Your order #order_no# has been shipped.",
  "numbers": ["+8613800138000", "+8613900139000"],
  "templateData": {
    "+8613800138000": {"order_no": "A001"},
    "+8613900139000": {"order_no": "A002"}
  }
}"""
        ),
    )
    await transport.query_status([ProviderRef(messages[1].id, outcomes[1].provider_message_id)])
    # "Query Task Details API": taskId, pageNo, pageSize (max 100).
    assert_json_post(
        only_request(emulator),
        "/api/sms/v1/batch/detail",
        {"taskId": 1001, "pageNo": 1, "pageSize": 100},
    )


# --- sendsms (seed 002) ------------------------------------------------------------


async def test_sendsms_auth_code_is_the_seeds_example(start: Any) -> None:
    emulator, transport = await start("sendsms")
    text = (
        "Dear Member , your auth code is 8888. The code will expire in 60 seconds. "
        "Have a good time! [Cookpad]"
    )
    sent = await transport.send(
        message(
            text,
            UseType.VERIFICATION,
            template_id=1,
            template_code="auth",
            data={"code": "8888"},
            variables=("code",),
            code="8888",
        )
    )
    assert sent.accepted
    # Seed 002, "Request Sample", the parameter string as printed.
    assert_json_post(
        only_request(emulator),
        "/api/sms/v1/sendsms",
        json.loads(
            '{"client_id":"cookpad_Server_001","passcode":"ARDOR-7JF3-8F2E-QUWZ-CAN7F",'
            '"phone_number":"13800138000","templet_id":"t1","contents":[{"p1":"8888"}] }'
        ),
    )
    assert [r.content for r in emulator.state.received] == [text]
    await transport.query_status([ProviderRef("m1", sent.provider_message_id)])
    # Seed 002, "Query sms" request sample, with the uid we were given.
    assert_json_post(
        only_request(emulator),
        "/api/sms/v1/querysms",
        {"client_id": CLIENT_ID, "passcode": PASSCODE, "sms_uid": sent.provider_message_id},
    )


async def test_sendsms_template_values_go_in_the_templates_order(start: Any) -> None:
    emulator, transport = await start("sendsms")
    sent = await transport.send(
        message(
            "Order A001 is shipped. [Cookpad]",
            template_id=2,
            template_code="order",
            data={"status": "shipped", "order_no": "A001"},  # not the text's order
            variables=("order_no", "status"),
        )
    )
    assert sent.accepted
    assert_json_post(
        only_request(emulator),
        "/api/sms/v1/sendsms",
        {
            "client_id": CLIENT_ID,
            "passcode": PASSCODE,
            "phone_number": "13800138000",
            "templet_id": "t2",
            "contents": [{"p1": "A001", "p2": "shipped"}],
        },
    )
    assert [r.content for r in emulator.state.received] == ["Order A001 is shipped. [Cookpad]"]


async def test_sendsms_takes_no_free_text_and_no_voice(start: Any) -> None:
    emulator, transport = await start("sendsms")
    assert not transport.can_carry(message("Free text"))
    outcome = await transport.send(message("Free text"))
    assert (outcome.accepted, outcome.error_code) == (False, "NO_TEMPLATE")
    assert not hasattr(transport, "send_voice")
    assert not list(emulator.state.requests)
