"""Emulator of Plivo's Message API, written from Plivo's public documentation alone
(the gateway configures Plivo as a declarative "http" provider; nothing of it is
used here):

* Send (https://www.plivo.com/docs/messaging/api/message/send-a-message):
  ``POST /v1/Account/{auth_id}/Message/`` with a JSON body: ``src`` (sender),
  ``dst`` (the number with its country code; "/, -, ., +, (, ) and white spaces"
  are stripped, then it "must begin with the international country code" and be
  "<= 14 characters"), ``text`` (at most 1,600 characters), optional ``url`` and
  ``method`` (GET or POST, default POST) for status callbacks. Answered ``202``
  ``{"api_id", "message": "message(s) queued", "message_uuid": [uuid]}``.
* Get (https://www.plivo.com/docs/messaging/api/messages/): ``GET
  /v1/Account/{auth_id}/Message/{message_uuid}/`` answers the message object with
  ``message_state`` (queued, sent, failed, delivered, undelivered) and
  ``error_code`` ("000" for successful delivery).
* Responses (https://docs.plivo.com/docs/messaging/api/response): JSON with an
  ``api_id``; failures ``{"api_id", "error"}`` with 400 (a parameter missing or
  invalid), 401 (authentication failed: HTTP Basic with the Auth ID and Auth
  Token), 404 (not found), 429 (rate limit exceeded).
* Status callbacks (https://www.plivo.com/docs/messaging/api/message/message-status-callbacks):
  on each status change, the message's attributes (MessageUUID, To, From, Type,
  Status, Units, TotalRate, TotalAmount, ErrorCode for failed or undelivered
  messages, Sequence, ...) as form data to ``url`` (query parameters for GET).

``outcome`` "undelivered" ends messages undelivered with ErrorCode 80; "failed" with
ErrorCode 300 (failed to dispatch).
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from server.emulators.common import STATE_KEY, EmulatorSettings, EmulatorState, Received, new_app

MAX_TEXT = 1600
_STRIPPED = re.compile(r"[/\-.+() \t\n]")
_NUMBER = re.compile(r"[1-9][0-9]{6,13}")  # country code first, at most 14 characters
ERROR_CODES = {"undelivered": "80", "failed": "300"}


@dataclass
class PlivoMessage:
    received: Received
    src: str
    state: str  # queued | sent | delivered | undelivered | failed
    url: str
    method: str
    error_code: str = ""
    sequence: int = 0
    sent_at: float | None = None


@dataclass
class Callback:
    uuid: str
    status: str
    url: str
    http_status: int  # 0: no answer


@dataclass
class PlivoAccount:
    send_rate: float
    messages: dict[str, PlivoMessage] = field(default_factory=dict)
    callbacks: list[Callback] = field(default_factory=list)
    window: list[float] = field(default_factory=list)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    session: aiohttp.ClientSession | None = None


ACCOUNT_KEY: web.AppKey[PlivoAccount] = web.AppKey("plivo_account", PlivoAccount)


def _api_id(state: EmulatorState) -> str:
    return str(uuid.UUID(int=state.rng.getrandbits(128), version=1))


def _error(state: EmulatorState, status: int, error: str) -> web.Response:
    return web.json_response({"api_id": _api_id(state), "error": error}, status=status)


def _authorized(request: web.Request) -> bool:
    settings = request.app[STATE_KEY].settings
    scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        user, _, token = base64.b64decode(encoded, validate=True).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        return False
    return user == settings.credential_id == request.match_info["auth_id"] and hmac.compare_digest(
        token.encode(), settings.credential_secret.encode()
    )


async def _send(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    account = request.app[ACCOUNT_KEY]
    if not _authorized(request):
        return _error(state, 401, "authentication failed")
    now = time.monotonic()
    if account.send_rate:
        account.window[:] = [t for t in account.window if now - t < 1.0]
        if len(account.window) >= account.send_rate:
            return _error(state, 429, "too many requests")
        account.window.append(now)
    try:
        body = json.loads(await request.text())
    except ValueError:
        return _error(state, 400, "invalid json data")
    if not isinstance(body, dict):
        return _error(state, 400, "invalid json data")
    for name in ("src", "dst", "text"):
        if not isinstance(body.get(name), str) or not body[name]:
            return _error(state, 400, f"{name} parameter not present or empty")
    dst = _STRIPPED.sub("", body["dst"])
    if not _NUMBER.fullmatch(dst):
        return _error(state, 400, f"invalid dst: {body['dst']}")
    if len(body["text"]) > MAX_TEXT:
        return _error(state, 400, "text exceeds 1600 characters")
    method = body.get("method", "POST")
    if method not in ("GET", "POST"):
        return _error(state, 400, "method must be GET or POST")
    url = body.get("url", "")
    if not isinstance(url, str) or (url and not url.startswith(("http://", "https://"))):
        return _error(state, 400, "invalid url")
    message_uuid = str(uuid.UUID(int=state.rng.getrandbits(128), version=4))
    item = Received(message_uuid, dst, body["text"], status="queued", accepted_at=now)
    state.received.append(item)
    message = PlivoMessage(item, body["src"], "queued", url, method)
    account.messages[message_uuid] = message
    task = asyncio.create_task(_progress(state, account, message))
    account.tasks.add(task)
    task.add_done_callback(account.tasks.discard)
    return web.json_response(
        {
            "api_id": _api_id(state),
            "message": "message(s) queued",
            "message_uuid": [message_uuid],
        },
        status=202,
    )


def _advance(state: EmulatorState, message: PlivoMessage) -> list[str]:
    entered: list[str] = []
    now = time.monotonic()
    if message.state == "queued":
        message.state, message.sent_at = "sent", now
        entered.append("sent")
    controls = state.settings.controls
    if (
        message.state == "sent"
        and message.sent_at is not None
        and now - message.sent_at >= controls.delivery_delay
    ):
        outcome = controls.outcome if controls.outcome in ERROR_CODES else "delivered"
        message.state = outcome
        message.error_code = ERROR_CODES.get(outcome, "000")
        entered.append(outcome)
    message.received.status = message.state
    message.received.error_code = message.error_code
    return entered


async def _progress(state: EmulatorState, account: PlivoAccount, message: PlivoMessage) -> None:
    await asyncio.sleep(0.01)
    for status in _advance(state, message):
        await _callback(account, message, status)
    await asyncio.sleep(state.settings.controls.delivery_delay)
    for status in _advance(state, message):
        await _callback(account, message, status)


async def _callback(account: PlivoAccount, message: PlivoMessage, status: str) -> None:
    if not message.url:
        return
    item = message.received
    message.sequence += 1
    params = {
        "MessageUUID": item.provider_message_id,
        "To": item.phone,
        "From": message.src,
        "Type": "sms",
        "Status": status,
        "Units": "1",
        "TotalRate": "0.00350",
        "TotalAmount": "0.00350",
        "Sequence": str(message.sequence),
        "ParentMessageUUID": item.provider_message_id,
    }
    if status in ERROR_CODES:
        params["ErrorCode"] = message.error_code
    if account.session is None:
        account.session = aiohttp.ClientSession()
    answered = 0
    timeout = aiohttp.ClientTimeout(total=15)
    try:
        if message.method == "GET":
            request = account.session.get(message.url, params=params, timeout=timeout)
        else:
            request = account.session.post(message.url, data=params, timeout=timeout)
        async with request as reply:
            answered = reply.status
    except (aiohttp.ClientError, OSError, TimeoutError):
        answered = 0
    account.callbacks.append(Callback(item.provider_message_id, status, message.url, answered))


def _object(state: EmulatorState, message: PlivoMessage) -> dict[str, Any]:
    item = message.received
    return {
        "api_id": _api_id(state),
        "error_code": message.error_code,
        "from_number": message.src,
        "message_direction": "outbound",
        "message_state": message.state,
        "message_time": time.strftime("%Y-%m-%d %H:%M:%S+00:00", time.gmtime()),
        "message_type": "sms",
        "message_uuid": item.provider_message_id,
        "resource_uri": f"/v1/Account/{state.settings.credential_id}/Message/"
        f"{item.provider_message_id}/",
        "to_number": item.phone,
        "total_amount": "0.00350",
        "total_rate": "0.00350",
        "units": 1,
    }


async def _get(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    account = request.app[ACCOUNT_KEY]
    if not _authorized(request):
        return _error(state, 401, "authentication failed")
    message = account.messages.get(request.match_info["uuid"])
    if message is None:
        return _error(state, 404, "not found")
    _advance(state, message)
    return web.json_response(_object(state, message))


async def _stop(app: web.Application) -> None:
    account = app[ACCOUNT_KEY]
    for task in list(account.tasks):
        task.cancel()
    await asyncio.gather(*account.tasks, return_exceptions=True)
    if account.session is not None:
        await account.session.close()


def build_app(settings: EmulatorSettings, *, send_rate: float = 0.0) -> web.Application:
    """Plivo's Message API for one account: ``credential_id`` is the Auth ID,
    ``credential_secret`` the Auth Token; ``send_rate`` sends a second before 429
    (0: no limit)."""
    app = new_app(settings)
    app[ACCOUNT_KEY] = PlivoAccount(send_rate=send_rate)
    app.router.add_post("/v1/Account/{auth_id}/Message/", _send)
    app.router.add_get("/v1/Account/{auth_id}/Message/{uuid}/", _get)
    app.on_cleanup.append(_stop)
    return app
