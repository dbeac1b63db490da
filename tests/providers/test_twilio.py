"""Twilio transport against its emulator: Twilio's error codes as outcomes, status
callbacks verified with the official validator, the configuration it refuses."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from server.domain.models import MessageStatus, OutboundMessage, UseType
from server.domain.ports import ProviderError, Receipt
from server.emulators import twilio as twilio_emulator
from server.emulators.common import EmulatorControls, EmulatorSettings, RunningEmulator
from server.providers.twilio import TwilioConfig, TwilioTransport
from server.providers.webhooks import HookRequest
from tests.contract.pair_twilio import ACCOUNT_SID, AUTH_TOKEN, FROM, config

pytestmark = pytest.mark.timeout(10)

MOBILE = "+14155552671"
CALLBACK = "https://gw.example.com/webhooks/twilio/tw1"
Start = Callable[..., Awaitable[tuple[RunningEmulator, TwilioTransport]]]


@pytest.fixture
async def start() -> AsyncIterator[Start]:
    closers: list[Callable[[], Awaitable[None]]] = []

    async def make(**emulator_options: Any) -> tuple[RunningEmulator, TwilioTransport]:
        settings = EmulatorSettings(
            credential_id=ACCOUNT_SID, credential_secret=AUTH_TOKEN, controls=EmulatorControls()
        )
        app = twilio_emulator.build_app(settings, numbers=[FROM], **emulator_options)
        emulator = await RunningEmulator(app).start()
        transport = TwilioTransport(config(emulator.base_url, status_callback=CALLBACK))
        closers.extend([emulator.stop, transport.close])
        return emulator, transport

    yield make
    for close in reversed(closers):
        await close()


def text(to: str = MOBILE, body: str = "Hi") -> OutboundMessage:
    return OutboundMessage(uuid.uuid4().hex, 1, to, body, UseType.MARKETING, 1)


@pytest.mark.parametrize(
    ("to", "body", "code", "status"),
    [
        ("+1415", "Hi", "21211", MessageStatus.REJECTED),  # invalid To
        ("+14155550000", "Hi", "21610", MessageStatus.REJECTED),  # replied STOP
        (MOBILE, "x" * 1601, "21617", MessageStatus.FAILED),  # body over 1,600
    ],
)
async def test_twilio_refusals_are_final_with_twilio_s_code(
    start: Start, to: str, body: str, code: str, status: MessageStatus
) -> None:
    emulator, transport = await start(opted_out=["+14155550000"])
    outcome = await transport.send(text(to, body))
    assert (outcome.accepted, outcome.retryable, outcome.error_code, outcome.final_status) == (
        False,
        False,
        code,
        status,
    )
    assert emulator.state.received == []


async def test_a_from_number_not_on_the_account_is_our_configuration(start: Start) -> None:
    emulator, _ = await start()
    other = TwilioTransport(config(emulator.base_url, from_number="+15005550009"))
    try:
        outcome = await other.send(text())
    finally:
        await other.close()
    assert (outcome.retryable, outcome.error_code) == (False, "21606")


async def test_too_many_requests_is_retryable_after_a_wait(start: Start) -> None:
    emulator, transport = await start(send_rate=1)
    assert (await transport.send(text())).accepted
    throttled = await transport.send(text("+14155552672"))
    # 20429: "never processed and is always safe to retry".
    assert (throttled.accepted, throttled.retryable, throttled.error_code) == (
        False,
        True,
        "20429",
    )
    assert throttled.retry_after > 0
    assert len(emulator.state.received) == 1


def signed(form: dict[str, str], path: str, token: str = AUTH_TOKEN) -> HookRequest:
    """A callback as Twilio posts it to CALLBACK's host at ``path`` (the emulator's
    signing, written from the docs, not the validator's)."""
    url = "https://gw.example.com" + path
    return HookRequest(path, {"X-Twilio-Signature": twilio_emulator.signature(token, url, form)})


def callback_form(status: str, **extra: str) -> dict[str, str]:
    return {
        "AccountSid": ACCOUNT_SID,
        "ApiVersion": "2010-04-01",
        "From": FROM,
        "MessageSid": "SM" + "a" * 32,
        "MessageStatus": status,
        "SmsSid": "SM" + "a" * 32,
        "SmsStatus": status,
        "To": MOBILE,
        **extra,
    }


def transport_only() -> TwilioTransport:
    return TwilioTransport(config("https://api.twilio.com", status_callback=CALLBACK))


def test_a_signed_callback_names_our_message_and_its_status() -> None:
    transport = transport_only()
    path = "/webhooks/twilio/tw1?smsgw_id=m-42"
    delivered = callback_form("delivered")
    assert transport.parse_hook(delivered, request=signed(delivered, path)) == [
        Receipt("tw1", "m-42", MessageStatus.DELIVERED, "", "SM" + "a" * 32)
    ]
    failed = callback_form("undelivered", ErrorCode="30003")
    assert transport.parse_hook(failed, request=signed(failed, path)) == [
        Receipt("tw1", "m-42", MessageStatus.UNDELIVERED, "30003", "SM" + "a" * 32)
    ]
    # A status on the way is acknowledged without a receipt.
    sent = callback_form("sent")
    assert transport.parse_hook(sent, request=signed(sent, path)) == []


def test_a_callback_without_our_id_is_matched_by_sid() -> None:
    form = callback_form("failed", ErrorCode="30008")
    (receipt,) = transport_only().parse_hook(form, request=signed(form, "/webhooks/twilio/tw1"))
    assert (receipt.message_id, receipt.provider_message_id, receipt.status) == (
        "",
        "SM" + "a" * 32,
        MessageStatus.FAILED,
    )


@pytest.mark.parametrize("forgery", ["changed field", "other token", "other path", "unsigned"])
def test_forged_callbacks_are_refused(forgery: str) -> None:
    path = "/webhooks/twilio/tw1?smsgw_id=m-42"
    form = callback_form("delivered")
    request = signed(form, path)
    if forgery == "changed field":
        form = {**form, "MessageSid": "SM" + "b" * 32}
    elif forgery == "other token":
        request = signed(form, path, token="not-the-token")
    elif forgery == "other path":
        # The signature covers the URL: our id cannot be swapped for another.
        request = HookRequest(path.replace("m-42", "m-43"), request.headers)
    else:
        request = HookRequest(path, {})
    with pytest.raises(ProviderError):
        transport_only().parse_hook(form, request=request)


def test_without_status_callback_no_callback_is_taken() -> None:
    transport = TwilioTransport(config("https://api.twilio.com"))
    form = callback_form("delivered")
    with pytest.raises(ProviderError, match="status_callback"):
        transport.parse_hook(form, request=signed(form, "/webhooks/twilio/tw1"))


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"from_number": ""}, "exactly one"),
        ({"messaging_service_sid": "MG" + "1" * 32}, "exactly one"),
        ({"status_callback": "ftp://gw.example.com/x"}, "http"),
        ({"status_callback": "https://my_host.example.com/x"}, "underscores"),
        ({"auth_token": ""}, "auth_token"),
    ],
)
def test_config_mistakes_are_named(changes: dict[str, str], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        config("https://api.twilio.com", **changes)
    assert isinstance(config("https://api.twilio.com"), TwilioConfig)


def test_a_callback_is_checked_against_the_url_we_gave_twilio() -> None:
    # A proxy that serves /sms/webhooks/... as /webhooks/... changes the path our port
    # sees; Twilio signed the StatusCallback we sent, which the transport rebuilds.
    transport = TwilioTransport(
        config("https://api.twilio.com", status_callback="https://gw.example.com/sms/hook")
    )
    form = callback_form("delivered")
    given = "https://gw.example.com/sms/hook?smsgw_id=m-5"
    headers = {"X-Twilio-Signature": twilio_emulator.signature(AUTH_TOKEN, given, form)}
    (receipt,) = transport.parse_hook(
        form, request=HookRequest("/webhooks/twilio/tw1?smsgw_id=m-5", headers)
    )
    assert (receipt.message_id, receipt.status) == ("m-5", MessageStatus.DELIVERED)
    # Our id is part of what is signed: another id does not verify.
    with pytest.raises(ProviderError):
        transport.parse_hook(
            form, request=HookRequest("/webhooks/twilio/tw1?smsgw_id=m-6", headers)
        )
