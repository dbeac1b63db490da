"""Emulator of Twilio's Programmable Messaging REST API, written from Twilio's public
documentation alone (never from the gateway's transport):

* Messages resource (https://www.twilio.com/docs/messaging/api/message-resource):
  ``POST /2010-04-01/Accounts/{AccountSid}/Messages.json``, a form with ``To``
  (E.164), ``From`` or ``MessagingServiceSid``, ``Body`` (at most 1,600 characters)
  and optionally ``StatusCallback``; answered ``201 Created`` with the Message as JSON
  (``sid`` "SM" + 32 hex digits, ``status`` "queued", or "accepted" when a Messaging
  Service picks the sender, ``error_code`` null). ``GET
  /2010-04-01/Accounts/{AccountSid}/Messages/{Sid}.json`` fetches one Message.
* Authentication (https://www.twilio.com/docs/usage/requests-to-twilio): HTTP Basic,
  the Account SID as user name and the auth token as password.
* Errors (https://www.twilio.com/docs/usage/twilios-response): a JSON body
  ``{"code", "message", "more_info", "status"}``; codes from
  https://www.twilio.com/docs/api/errors: 20003 (401, authenticate), 20404 (404, not
  found), 20429 (429, too many requests: "never processed and is always safe to
  retry"), 21211 (invalid To), 21602 (Body required), 21603 (From required), 21604
  (To required), 21606 (From is not one of the account's numbers), 21610 (the
  recipient replied STOP: unsubscribed), 21617 (Body over 1,600 characters).
* Status (https://www.twilio.com/docs/messaging/guides/outbound-message-status-in-status-callbacks):
  queued/accepted -> sent -> delivered or undelivered (ErrorCode 30003, unreachable
  handset) or failed (30008, unknown error). No callback for the initial status; one
  form POST to ``StatusCallback`` for each later one, with ``MessageSid``,
  ``SmsSid``, ``MessageStatus``, ``SmsStatus``, ``AccountSid``, ``From``, ``To``,
  ``ApiVersion`` and, for a failure, ``ErrorCode``.
* Signatures (https://www.twilio.com/docs/usage/webhooks/webhooks-security): header
  ``X-Twilio-Signature`` = base64(HMAC-SHA1(auth token, the full callback URL followed
  by each POST parameter's name and value, sorted by name)).

* Incoming messages (https://www.twilio.com/docs/messaging/guides/webhook-request):
  when a message reaches one of the account's numbers, Twilio POSTs a form to the
  number's "A message comes in" webhook (its ``SmsUrl``) with ``MessageSid``,
  ``SmsSid``, ``SmsMessageSid``, ``AccountSid``, ``MessagingServiceSid`` (when the
  number is in a service), ``From``, ``To``, ``Body``, ``NumMedia``, ``NumSegments``,
  ``SmsStatus`` "received" and ``ApiVersion``, signed like status callbacks.
* Opt-out handling (https://help.twilio.com/articles/223134027): an incoming message
  that is exactly one of STOP, STOPALL, UNSUBSCRIBE, CANCEL, END, QUIT (any case,
  trimmed) opts the sender out of the account (later sends answer 21610); START,
  YES, UNSTOP opt them in again. The message is still passed to the webhook.

Not from the document: ``POST /_emulator/inbound`` (a form or JSON with ``From``,
``To``, ``Body``, optionally ``SmsUrl``) stands for a handset sending a message to
one of the account's numbers: the emulator posts it to the number's ``SmsUrl``
(``sms_url`` given to ``build_app`` unless the request names one) and answers with
the MessageSid and the webhook's HTTP status.

The ``outcome`` control picks how messages end ("delivered", "undelivered" or
"failed"); ``delivery_delay`` how long after "sent" they do.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import re
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Any

import aiohttp
from aiohttp import web

from server.emulators.common import STATE_KEY, EmulatorSettings, EmulatorState, Received, new_app

API_VERSION = "2010-04-01"
MAX_BODY = 1600
E164 = re.compile(r"\+[1-9][0-9]{6,14}")  # + country code and subscriber number
FINAL_ERRORS = {"undelivered": 30003, "failed": 30008}
DEFAULT_NUMBER = "+15005550006"
DEFAULT_SERVICE = "MG" + "0" * 32
OPT_OUT_WORDS = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"})
OPT_IN_WORDS = frozenset({"START", "YES", "UNSTOP"})


def signature(auth_token: str, url: str, params: Mapping[str, str]) -> str:
    """X-Twilio-Signature as the webhooks-security page describes it."""
    data = url + "".join(name + params[name] for name in sorted(params))
    digest = hmac.new(auth_token.encode(), data.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


@dataclass
class TwilioMessage:
    received: Received
    sender: str  # From, or "" until a Messaging Service picks one
    service: str
    status: str  # queued | accepted | sent | delivered | undelivered | failed
    callback: str
    created: str
    error_code: int | None = None
    sent_at: float | None = None


@dataclass
class Callback:
    """One status callback the emulator made, for tests."""

    sid: str
    status: str
    url: str
    http_status: int  # 0: no answer (refused, timed out)


@dataclass
class TwilioAccount:
    numbers: frozenset[str]
    services: frozenset[str]
    opted_out: set[str]
    send_rate: float  # accepted creates per second before 429 (0: unlimited)
    messages: dict[str, TwilioMessage] = field(default_factory=dict)
    callbacks: list[Callback] = field(default_factory=list)
    window: list[float] = field(default_factory=list)  # create times within 1 s
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    session: aiohttp.ClientSession | None = None
    sms_url: str = ""  # the numbers' "A message comes in" webhook


ACCOUNT_KEY: web.AppKey[TwilioAccount] = web.AppKey("twilio_account", TwilioAccount)


def _error(status: int, code: int, message: str) -> web.Response:
    return web.json_response(
        {
            "code": code,
            "message": message,
            "more_info": f"https://www.twilio.com/docs/errors/{code}",
            "status": status,
        },
        status=status,
    )


def _authorized(request: web.Request) -> bool:
    settings = request.app[STATE_KEY].settings
    header = request.headers.get("Authorization", "")
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        user, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        return False
    return (
        user == settings.credential_id
        and request.match_info["account"] == settings.credential_id
        and hmac.compare_digest(password.encode(), settings.credential_secret.encode())
    )


def _resource(account_sid: str, message: TwilioMessage) -> dict[str, Any]:
    item = message.received
    return {
        "account_sid": account_sid,
        "api_version": API_VERSION,
        "body": item.content,
        "date_created": message.created,
        "date_sent": None,
        "date_updated": formatdate(usegmt=True),
        "direction": "outbound-api",
        "error_code": message.error_code,
        "error_message": None,
        "from": message.sender or None,
        "messaging_service_sid": message.service or None,
        "num_media": "0",
        "num_segments": "1",
        "price": None,
        "price_unit": "USD",
        "sid": item.provider_message_id,
        "status": message.status,
        "to": item.phone,
        "uri": f"/{API_VERSION}/Accounts/{account_sid}/Messages/{item.provider_message_id}.json",
    }


def _too_many(account: TwilioAccount, now: float) -> bool:
    if not account.send_rate:
        return False
    account.window[:] = [t for t in account.window if now - t < 1.0]
    if len(account.window) >= account.send_rate:
        return True
    account.window.append(now)
    return False


async def _create(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    account = request.app[ACCOUNT_KEY]
    if not _authorized(request):
        return _error(401, 20003, "Authenticate")
    if _too_many(account, time.monotonic()):
        return _error(429, 20429, "Too Many Requests")
    form = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
    to, body = form.get("To", ""), form.get("Body", "")
    sender, service = form.get("From", ""), form.get("MessagingServiceSid", "")
    if not to:
        return _error(400, 21604, "A 'To' phone number is required.")
    if not E164.fullmatch(to):
        return _error(400, 21211, f"Invalid 'To' Phone Number: {to}")
    if not sender and not service:
        return _error(400, 21603, "A 'From' phone number is required.")
    if service and service not in account.services:
        return _error(404, 20404, f"The requested resource {service} was not found")
    if sender and sender not in account.numbers:
        return _error(
            400,
            21606,
            f"The From phone number {sender} is not a valid, SMS-capable inbound phone "
            "number or short code for your account.",
        )
    if not body:
        return _error(400, 21602, "Message body is required.")
    if len(body) > MAX_BODY:
        return _error(400, 21617, "The concatenated message body exceeds the 1600 character limit.")
    if to in account.opted_out:
        return _error(400, 21610, "Attempt to send to unsubscribed recipient")
    sid = "SM" + f"{state.rng.getrandbits(128):032x}"
    item = Received(sid, to, body, status="queued", accepted_at=time.monotonic())
    state.received.append(item)
    message = TwilioMessage(
        item,
        sender="" if service else sender,
        service=service,
        status="accepted" if service else "queued",
        callback=form.get("StatusCallback", ""),
        created=formatdate(usegmt=True),
    )
    account.messages[sid] = message
    answer = _resource(state.settings.credential_id, message)
    task = asyncio.create_task(_progress(state, account, message))
    account.tasks.add(task)
    task.add_done_callback(account.tasks.discard)
    return web.json_response(answer, status=201)


def _advance(state: EmulatorState, account: TwilioAccount, message: TwilioMessage) -> list[str]:
    """Moves a message as far as time allows; returns the statuses it entered."""
    entered: list[str] = []
    now = time.monotonic()
    if message.status in ("queued", "accepted"):
        message.status = "sent"
        message.sender = message.sender or sorted(account.numbers)[0]
        message.sent_at = now
        entered.append("sent")
    controls = state.settings.controls
    if (
        message.status == "sent"
        and message.sent_at is not None
        and now - message.sent_at >= controls.delivery_delay
    ):
        outcome = controls.outcome if controls.outcome in ("undelivered", "failed") else "delivered"
        message.status = outcome
        message.error_code = FINAL_ERRORS.get(outcome)
        entered.append(outcome)
    message.received.status = message.status
    message.received.error_code = str(message.error_code or "")
    return entered


async def _progress(state: EmulatorState, account: TwilioAccount, message: TwilioMessage) -> None:
    """Sends the message on, posting a status callback for each status it enters."""
    await asyncio.sleep(0.01)
    for status in _advance(state, account, message):
        await _callback(state, account, message, status)
    await asyncio.sleep(state.settings.controls.delivery_delay)
    for status in _advance(state, account, message):
        await _callback(state, account, message, status)


async def _callback(
    state: EmulatorState, account: TwilioAccount, message: TwilioMessage, status: str
) -> None:
    if not message.callback:
        return
    item = message.received
    params = {
        "AccountSid": state.settings.credential_id,
        "ApiVersion": API_VERSION,
        "From": message.sender,
        "MessageSid": item.provider_message_id,
        "MessageStatus": status,
        "SmsSid": item.provider_message_id,
        "SmsStatus": status,
        "To": item.phone,
    }
    if message.service:
        params["MessagingServiceSid"] = message.service
    if status in FINAL_ERRORS and message.error_code is not None:
        params["ErrorCode"] = str(message.error_code)
    headers = {
        "X-Twilio-Signature": signature(state.settings.credential_secret, message.callback, params)
    }
    if account.session is None:
        account.session = aiohttp.ClientSession()
    answered = 0
    try:
        async with account.session.post(
            message.callback,
            data=params,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=15),
        ) as reply:
            answered = reply.status
    except (aiohttp.ClientError, OSError, TimeoutError):
        answered = 0
    account.callbacks.append(Callback(item.provider_message_id, status, message.callback, answered))


async def _fetch(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    account = request.app[ACCOUNT_KEY]
    if not _authorized(request):
        return _error(401, 20003, "Authenticate")
    sid = request.match_info["sid"]
    message = account.messages.get(sid)
    if message is None:
        return _error(
            404,
            20404,
            f"The requested resource /{API_VERSION}/Accounts/"
            f"{state.settings.credential_id}/Messages/{sid}.json was not found",
        )
    _advance(state, account, message)
    return web.json_response(_resource(state.settings.credential_id, message))


async def _inbound(request: web.Request) -> web.Response:
    """A handset sends a message to one of the account's numbers (emulator control)."""
    state = request.app[STATE_KEY]
    account = request.app[ACCOUNT_KEY]
    if request.content_type == "application/json":
        raw = await request.json()
        fields = {k: str(v) for k, v in raw.items()} if isinstance(raw, dict) else {}
    else:
        fields = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
    sender, to, body = fields.get("From", ""), fields.get("To", ""), fields.get("Body", "")
    url = fields.get("SmsUrl") or account.sms_url
    if not E164.fullmatch(sender) or to not in account.numbers or not url:
        return web.json_response(
            {"error": "From must be E.164, To one of the account's numbers, and an SmsUrl set"},
            status=400,
        )
    word = " ".join(body.split()).upper()
    if word in OPT_OUT_WORDS:
        account.opted_out.add(sender)
    elif word in OPT_IN_WORDS:
        account.opted_out.discard(sender)
    sid = "SM" + f"{state.rng.getrandbits(128):032x}"
    params = {
        "AccountSid": state.settings.credential_id,
        "ApiVersion": API_VERSION,
        "Body": body,
        "From": sender,
        "MessageSid": sid,
        "NumMedia": "0",
        "NumSegments": "1",
        "SmsMessageSid": sid,
        "SmsSid": sid,
        "SmsStatus": "received",
        "To": to,
    }
    headers = {"X-Twilio-Signature": signature(state.settings.credential_secret, url, params)}
    if account.session is None:
        account.session = aiohttp.ClientSession()
    answered = 0
    try:
        async with account.session.post(
            url, data=params, headers=headers, timeout=aiohttp.ClientTimeout(total=15)
        ) as reply:
            answered = reply.status
    except (aiohttp.ClientError, OSError, TimeoutError):
        answered = 0
    return web.json_response({"sid": sid, "http_status": answered})


async def _stop(app: web.Application) -> None:
    account = app[ACCOUNT_KEY]
    for task in list(account.tasks):
        task.cancel()
    await asyncio.gather(*account.tasks, return_exceptions=True)
    if account.session is not None:
        await account.session.close()


def build_app(
    settings: EmulatorSettings,
    *,
    numbers: Collection[str] = (DEFAULT_NUMBER,),
    services: Collection[str] = (DEFAULT_SERVICE,),
    opted_out: Collection[str] = (),
    send_rate: float = 0.0,
    sms_url: str = "",
) -> web.Application:
    """Twilio's Messages API for one account: ``settings.credential_id`` is the Account
    SID, ``credential_secret`` the auth token. ``numbers`` are the account's sending
    numbers, ``services`` its Messaging Service SIDs, ``opted_out`` recipients who
    replied STOP (21610); ``send_rate`` creates a second before 429 (0: no limit);
    ``sms_url`` the numbers' "A message comes in" webhook (POST /_emulator/inbound)."""
    app = new_app(settings)
    app[ACCOUNT_KEY] = TwilioAccount(
        numbers=frozenset(numbers),
        services=frozenset(services),
        opted_out=set(opted_out),
        send_rate=send_rate,
        sms_url=sms_url,
    )
    base = f"/{API_VERSION}/Accounts/{{account}}/Messages"
    app.router.add_post(base + ".json", _create)
    app.router.add_get(base + "/{sid}.json", _fetch)
    app.router.add_post("/_emulator/inbound", _inbound)
    app.on_cleanup.append(_stop)
    return app
