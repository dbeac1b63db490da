"""The exact requests Twilio receives from our transport, held against Twilio's docs.

- Create: https://www.twilio.com/docs/messaging/api/message-resource#create-a-message-resource
  "POST https://api.twilio.com/2010-04-01/Accounts/{AccountSid}/Messages.json",
  form-encoded parameters To, From or MessagingServiceSid, Body, StatusCallback.
- Fetch: https://www.twilio.com/docs/messaging/api/message-resource#fetch-a-message-resource
  "GET https://api.twilio.com/2010-04-01/Accounts/{AccountSid}/Messages/{Sid}.json".
- Auth: https://www.twilio.com/docs/usage/requests-to-twilio: HTTP Basic with the
  Account SID as the user name and the auth token as the password.
- Signature: https://www.twilio.com/docs/usage/webhooks/webhooks-security.

The emulator records what reached it before it reads anything, so nothing here
depends on its parsing; the expected values are spelled out from the docs' words.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from twilio.request_validator import RequestValidator

from server.domain.models import OutboundMessage, UseType
from server.domain.ports import ProviderRef
from server.emulators import twilio as twilio_emulator
from server.emulators.common import EmulatorControls, EmulatorSettings, RunningEmulator
from server.providers.twilio import TwilioTransport
from tests.contract.pair_twilio import ACCOUNT_SID, AUTH_TOKEN, FROM, config

pytestmark = pytest.mark.timeout(10)

MOBILE = "+14155552671"
SERVICE = "MG" + "9" * 32
# "Authorization: Basic base64(AccountSid:AuthToken)".
AUTH = "Basic " + base64.b64encode(f"{ACCOUNT_SID}:{AUTH_TOKEN}".encode()).decode()
Start = Callable[..., Awaitable[tuple[RunningEmulator, TwilioTransport]]]


@pytest.fixture
async def start() -> AsyncIterator[Start]:
    closers: list[Callable[[], Awaitable[None]]] = []

    async def make(**changes: Any) -> tuple[RunningEmulator, TwilioTransport]:
        settings = EmulatorSettings(
            credential_id=ACCOUNT_SID,
            credential_secret=AUTH_TOKEN,
            controls=EmulatorControls(delivery_delay=0.0),
        )
        app = twilio_emulator.build_app(settings, numbers=[FROM], services=[SERVICE])
        emulator = await RunningEmulator(app).start()
        transport = TwilioTransport(config(emulator.base_url, **changes))
        closers.extend([emulator.stop, transport.close])
        return emulator, transport

    yield make
    for close in reversed(closers):
        await close()


def text(body: str, message_id: str = "") -> OutboundMessage:
    return OutboundMessage(message_id or uuid.uuid4().hex, 1, MOBILE, body, UseType.NOTIFICATION, 1)


async def test_a_create_from_a_number_is_the_documented_form(start: Start) -> None:
    emulator, transport = await start(status_callback="https://gw.example.com/webhooks/twilio/tw1")
    sent = await transport.send(text("Hello & welcome: 50% off!", "m-1"))
    assert sent.accepted and sent.provider_message_id.startswith("SM")
    [request] = emulator.state.requests
    assert (request.method, request.path, request.query) == (
        "POST",
        f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json",
        "",
    )
    assert request.headers["Authorization"] == AUTH
    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert request.form() == {
        "To": MOBILE,
        "From": FROM,
        "Body": "Hello & welcome: 50% off!",
        # Our message id rides in the URL Twilio signs (see test_twilio.py).
        "StatusCallback": "https://gw.example.com/webhooks/twilio/tw1?smsgw_id=m-1",
    }


async def test_a_create_through_a_messaging_service_names_it_instead_of_from(
    start: Start,
) -> None:
    emulator, transport = await start(from_number="", messaging_service_sid=SERVICE)
    sent = await transport.send(text("Hi"))
    assert sent.accepted
    [request] = emulator.state.requests
    # No StatusCallback without status_callback configured: statuses are polled.
    assert request.form() == {"To": MOBILE, "MessagingServiceSid": SERVICE, "Body": "Hi"}


async def test_a_status_poll_is_the_documented_fetch(start: Start) -> None:
    emulator, transport = await start()
    sent = await transport.send(text("Hi"))
    emulator.state.requests.clear()
    receipts = await transport.query_status([ProviderRef("m-1", sent.provider_message_id)])
    [request] = emulator.state.requests
    assert (request.method, request.path, request.query, request.body) == (
        "GET",
        f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages/{sent.provider_message_id}.json",
        "",
        b"",
    )
    assert request.headers["Authorization"] == AUTH
    assert [(r.message_id, r.provider_message_id) for r in receipts] == [
        ("m-1", sent.provider_message_id)
    ]


def test_the_emulator_signs_as_the_security_page_example() -> None:
    # The webhooks-security page's worked example: this URL, these POST parameters and
    # the auth token 12345 give the X-Twilio-Signature 0/KCTR6DLpKmkAf8muzZqo1nDgQ=.
    url = "https://mycompany.com/myapp.php?foo=1&bar=2"
    params = {
        "CallSid": "CA1234567890ABCDE",
        "Caller": "+12349013030",
        "Digits": "1234",
        "From": "+12349013030",
        "To": "+18005551212",
    }
    expected = "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
    assert twilio_emulator.signature("12345", url, params) == expected
    # The official validator the transport uses agrees with it.
    assert RequestValidator("12345").validate(url, params, expected)
