"""The exact requests Plivo receives from the declarative "http" provider configured by
tests/contract/plivo.toml, held against Plivo's docs:

- Send: https://www.plivo.com/docs/messaging/api/message/send-a-message
  "POST https://api.plivo.com/v1/Account/{auth_id}/Message/", JSON src, dst (country
  code "but without the '+' sign"), text, url and method for status callbacks.
- Get: https://www.plivo.com/docs/messaging/api/messages/
  "GET https://api.plivo.com/v1/Account/{auth_id}/Message/{message_uuid}/".
- Auth: HTTP Basic with the Auth ID and the Auth Token.

Also what the routing file may not say: mistakes in it stop the process at load,
naming the key.
"""

from __future__ import annotations

import base64
import re
import tomllib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from server.domain.models import MessageStatus, OutboundMessage, UseType
from server.domain.ports import ProviderError, ProviderRef, Transport
from server.emulators.common import EmulatorControls, EmulatorSettings, RunningEmulator
from server.emulators.plivo import build_app
from server.providers.webhooks import HookRequest, WebhookTransport
from server.routes_file import RoutingConfigError, parse_routing
from tests.contract.pair_http import (
    AUTH_ID,
    AUTH_TOKEN,
    ENV,
    HOOK_TOKEN,
    ROUTES,
    routing,
    transport,
)

pytestmark = pytest.mark.timeout(10)

MOBILE = "+14155552671"
AUTH = "Basic " + base64.b64encode(f"{AUTH_ID}:{AUTH_TOKEN}".encode()).decode()
GATEWAY = "https://sms.example.com"
Start = Callable[..., Awaitable[tuple[RunningEmulator, Transport]]]


@pytest.fixture
async def start() -> AsyncIterator[Start]:
    closers: list[Callable[[], Awaitable[None]]] = []

    async def make(**emulator: Any) -> tuple[RunningEmulator, Transport]:
        settings = EmulatorSettings(
            credential_id=AUTH_ID,
            credential_secret=AUTH_TOKEN,
            controls=EmulatorControls(delivery_delay=0.0),
        )
        running = await RunningEmulator(build_app(settings, **emulator)).start()
        sender = transport(routing(running.base_url, GATEWAY))
        closers.extend([running.stop, sender.close])
        return running, sender

    yield make
    for close in reversed(closers):
        await close()


def text(body: str, message_id: str = "") -> OutboundMessage:
    return OutboundMessage(message_id or uuid.uuid4().hex, 1, MOBILE, body, UseType.MARKETING, 1)


async def test_a_send_is_the_documented_request(start: Start) -> None:
    emulator, sender = await start()
    sent = await sender.send(text("Sale: 20% off \u2013 today", "m-7"))
    assert sent.accepted
    [request] = emulator.state.requests
    assert (request.method, request.path, request.query) == (
        "POST",
        f"/v1/Account/{AUTH_ID}/Message/",
        "",
    )
    assert request.headers["Authorization"] == AUTH
    assert request.headers["Content-Type"].split(";")[0] == "application/json"
    assert request.json() == {
        "src": "14155550100",
        "dst": "14155552671",
        "text": "Sale: 20% off \u2013 today",
        "url": f"{GATEWAY}/webhooks/http/plivo?smsgw_id=m-7&token={HOOK_TOKEN}",
        "method": "POST",
    }
    # "message_uuid": [uuid] in the 202 answer is the provider's id.
    assert sent.provider_message_id == emulator.state.received[0].provider_message_id


async def test_a_status_poll_is_the_documented_get(start: Start) -> None:
    emulator, sender = await start()
    sent = await sender.send(text("Hi"))
    emulator.state.requests.clear()
    (receipt,) = await sender.query_status([ProviderRef("m-1", sent.provider_message_id)])
    [request] = emulator.state.requests
    assert (request.method, request.path, request.body) == (
        "GET",
        f"/v1/Account/{AUTH_ID}/Message/{sent.provider_message_id}/",
        b"",
    )
    assert request.headers["Authorization"] == AUTH
    # error_code "000" ("successful delivery") is not an error.
    assert (receipt.status, receipt.error_code) == (MessageStatus.DELIVERED, "")


async def test_plivo_s_refusals_become_outcomes(start: Start) -> None:
    emulator, sender = await start()
    # 400 "a parameter is missing or is invalid": final, with Plivo's error text.
    bad = await sender.send(OutboundMessage(uuid.uuid4().hex, 1, "+12", "x", UseType.MARKETING, 1))
    assert (bad.accepted, bad.retryable, bad.final_status) == (False, False, MessageStatus.FAILED)
    assert bad.error_code.startswith("invalid dst")
    assert emulator.state.received == []
    limited, sender = await start(send_rate=1)
    assert (await sender.send(text("one"))).accepted
    throttled = await sender.send(text("two"))  # 429 "rate limit exceeded"
    assert (throttled.retryable, throttled.error_code) == (True, "too many requests")
    assert throttled.retry_after > 0
    assert len(limited.state.received) == 1


def push(form: dict[str, str], query: str) -> HookRequest:
    return HookRequest(f"/webhooks/http/plivo?{query}")


def test_pushed_receipts_need_the_token_and_name_our_message() -> None:
    sender = transport(routing("https://api.plivo.com", GATEWAY))
    assert isinstance(sender, WebhookTransport)
    hook = sender.parse_hook
    form = {"MessageUUID": "u-1", "Status": "undelivered", "ErrorCode": "80", "To": "1"}
    (receipt,) = hook(form, request=push(form, f"smsgw_id=m-9&token={HOOK_TOKEN}"))
    assert (receipt.message_id, receipt.provider_message_id, receipt.status) == (
        "m-9",
        "u-1",
        MessageStatus.UNDELIVERED,
    )
    assert receipt.error_code == "80"
    assert hook({**form, "Status": "sent"}, request=push(form, f"token={HOOK_TOKEN}")) == []
    for query in ("smsgw_id=m-9", "smsgw_id=m-9&token=guess"):
        with pytest.raises(ProviderError):
            hook(form, request=push(form, query))


def _document(**send: Any) -> dict[str, Any]:
    document = tomllib.loads(
        ROUTES.read_text().replace("@PLIVO@", "https://api.plivo.com").replace("@GATEWAY@", GATEWAY)
    )
    document["providers"]["plivo"]["options"]["send"].update(send)
    return document


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (
            {"body": {"dst": "{recipient}"}},
            "options.send.body.dst: unknown placeholder {recipient}",
        ),
        ({"format": "xml"}, "options.send.format"),
        ({"errors": {"7": "maybe"}}, "options.send.errors.7"),
        ({"id": ""}, "options.send.id"),
    ],
)
def test_routing_file_mistakes_name_the_key(change: dict[str, Any], named: str) -> None:
    with pytest.raises(RoutingConfigError, match=re.escape(named)):
        parse_routing(_document(**change), ENV)


def test_a_receipt_table_without_a_token_is_refused() -> None:
    document = _document()
    del document["providers"]["plivo"]["options"]["receipt"]["token"]
    with pytest.raises(RoutingConfigError, match=re.escape("options.receipt.token")):
        parse_routing(document, ENV)
    # The file as written loads (the other tests send with it).
    assert parse_routing(_document(), ENV).providers[0].kind == "http"
