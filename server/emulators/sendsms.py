"""Emulator of the sendsms API (seed 002): ``sendsms`` and ``querysms``.

What it enforces, answered as the seed's "Common Error Codes" (JSON error bodies
``{"error_code": "<http status>", "message": ...}``, a shape the seed leaves open):

- 400: a body that is not a JSON object, missing or non-string fields, a phone number
  that is not 6-15 digits (national for China, country code + number otherwise),
  ``contents`` that do not fill the template's placeholders exactly.
- 403: an unknown ``client_id`` (no access); 401: a wrong ``passcode``.
- 404: an unknown ``templet_id`` (sendsms) or ``sms_uid`` (querysms).
- 429: more than one accepted message per number within ``per_number_seconds`` (60 s
  in the seed), more than ``send_rate`` sends (80,000/s) or ``query_rate`` queries
  (1,000/s) per second, as token buckets holding one second's worth.
- 200 with status "error": a number on the account's blacklist (``blocked_numbers``),
  error_code "E_BLACKLIST"; the message is not accepted.

Templates: ``EmulatorSettings.templates`` maps templet_id -> text with ``${name}``
placeholders; the k-th distinct placeholder takes ``contents`` value ``pk``. Accepted
messages answer status "sent"; querysms reports "delivered" (error_code "0") or
"error" with the operator's delivery-report code "UNDELIV" once they settle.
"""

from __future__ import annotations

import hmac
import json
import re
import time
import uuid
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from server.emulators.common import STATE_KEY, EmulatorSettings, EmulatorState, Received, new_app

PER_NUMBER_SECONDS = 60.0  # one message per number per 60 s
SEND_RATE = 80_000.0  # sends per second, whole system
QUERY_RATE = 1_000.0  # queries per second, whole system
UNDELIVERED_CODE = "UNDELIV"
BLACKLISTED_CODE = "E_BLACKLIST"

_PLACEHOLDER = re.compile(r"\$\{([^}]+)\}")
_PHONE = re.compile(r"[1-9]\d{5,14}")


class TokenBucket:
    """``rate`` tokens per second, holding at most one second's worth."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self._tokens = rate
        self._at = time.monotonic()

    def take(self, now: float) -> bool:
        self._tokens = min(self.rate, self._tokens + (now - self._at) * self.rate)
        self._at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


@dataclass
class SendsmsAccount:
    """Provider-side state beyond the shared EmulatorState."""

    per_number_seconds: float
    sends: TokenBucket
    queries: TokenBucket
    blocked_numbers: frozenset[str]
    last_accepted: dict[str, float] = field(default_factory=dict)  # phone -> monotonic
    by_uid: dict[str, Received] = field(default_factory=dict)


ACCOUNT_KEY: web.AppKey[SendsmsAccount] = web.AppKey("sendsms_account", SendsmsAccount)


class Refusal(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error_code": str(status), "message": message}, status=status)


async def _authorized_body(request: web.Request) -> dict[str, Any]:
    """The JSON body of a call with valid credentials; raises Refusal otherwise."""
    try:
        body = json.loads(await request.text())
    except ValueError as exc:
        raise Refusal(400, "Invalid request format: body is not JSON") from exc
    if not isinstance(body, dict):
        raise Refusal(400, "Invalid request format: body is not a JSON object")
    settings = request.app[STATE_KEY].settings
    client_id, passcode = body.get("client_id"), body.get("passcode")
    if not isinstance(client_id, str) or not isinstance(passcode, str):
        raise Refusal(400, "Invalid request format: client_id and passcode are required")
    if client_id != settings.credential_id:
        raise Refusal(403, "You do not have access to the requested resource")
    if not hmac.compare_digest(passcode.encode(), settings.credential_secret.encode()):
        raise Refusal(401, "Invalid passcode")
    return body


def _field(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value:
        raise Refusal(400, f"Invalid request format: {name} is required")
    return value


def _values(contents: Any) -> dict[str, str]:
    """``contents`` (a list of objects, or that list as a JSON string) as p-keys."""
    if isinstance(contents, str):
        try:
            contents = json.loads(contents)
        except ValueError as exc:
            raise Refusal(400, "Invalid request format: contents") from exc
    if not isinstance(contents, list) or not all(isinstance(c, dict) for c in contents):
        raise Refusal(400, "Invalid request format: contents must be a list of objects")
    values: dict[str, str] = {}
    for item in contents:
        for key, value in item.items():
            if isinstance(value, bool) or not isinstance(value, str | int | float):
                raise Refusal(400, f"Invalid request format: contents {key} is not a string")
            values[key] = str(value)
    return values


def render(template: str, values: dict[str, str]) -> str:
    """Fills the k-th distinct ``${name}`` placeholder with ``values["pk"]``; raises
    Refusal unless the values are exactly p1..pn."""
    names = list(dict.fromkeys(_PLACEHOLDER.findall(template)))
    wanted = {f"p{i}" for i in range(1, len(names) + 1)}
    if set(values) != wanted:
        raise Refusal(400, f"Invalid request format: contents must be p1..p{len(names)}")
    by_name = {name: values[f"p{i}"] for i, name in enumerate(names, start=1)}
    return _PLACEHOLDER.sub(lambda m: by_name[m.group(1)], template)


def _new_uid(state: EmulatorState) -> str:
    return str(uuid.UUID(int=state.rng.getrandbits(128), version=4))


async def _send(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    account = request.app[ACCOUNT_KEY]
    now = time.monotonic()
    if not account.sends.take(now):
        return _error(429, "Too Many Requests: global send rate")
    try:
        body = await _authorized_body(request)
        phone = _field(body, "phone_number")
        templet_id = _field(body, "templet_id")
        if "contents" not in body:
            raise Refusal(400, "Invalid request format: contents is required")
        template = state.settings.templates.get(templet_id)
        if template is None:
            raise Refusal(404, "Not Found: templet_id")
        if not _PHONE.fullmatch(phone):
            raise Refusal(400, "Invalid request format: phone_number")
        content = render(template, _values(body["contents"]))
    except Refusal as refusal:
        return _error(refusal.status, refusal.message)
    if phone in account.blocked_numbers:
        return web.json_response(
            {"sms_uid": _new_uid(state), "status": "error", "error_code": BLACKLISTED_CODE}
        )
    last = account.last_accepted.get(phone)
    if last is not None and now - last < account.per_number_seconds:
        return _error(429, "Too Many Requests: one message per number per window")
    account.last_accepted[phone] = now
    item = Received(_new_uid(state), phone, content, accepted_at=now)
    state.received.append(item)
    account.by_uid[item.provider_message_id] = item
    return web.json_response(
        {"sms_uid": item.provider_message_id, "status": "sent", "error_code": "0"}
    )


def _answer(item: Received) -> dict[str, str]:
    if item.status == "delivered":
        return {"sms_uid": item.provider_message_id, "status": "delivered", "error_code": "0"}
    if item.status == "undelivered":
        item.error_code = UNDELIVERED_CODE
        return {
            "sms_uid": item.provider_message_id,
            "status": "error",
            "error_code": item.error_code,
        }
    return {"sms_uid": item.provider_message_id, "status": "sent", "error_code": "0"}


async def _query(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    account = request.app[ACCOUNT_KEY]
    now = time.monotonic()
    if not account.queries.take(now):
        return _error(429, "Too Many Requests: global query rate")
    try:
        body = await _authorized_body(request)
        item = account.by_uid.get(_field(body, "sms_uid"))
        if item is None:
            raise Refusal(404, "Not Found: sms_uid")
    except Refusal as refusal:
        return _error(refusal.status, refusal.message)
    state.settle(item, now)
    return web.json_response(_answer(item))


def build_app(
    settings: EmulatorSettings,
    *,
    per_number_seconds: float = PER_NUMBER_SECONDS,
    send_rate: float = SEND_RATE,
    query_rate: float = QUERY_RATE,
    blocked_numbers: Collection[str] = (),
) -> web.Application:
    """The sendsms API for ``settings``; the keyword arguments change the documented
    limits (tests use short windows) and the account's blacklist."""
    app = new_app(settings)
    app[ACCOUNT_KEY] = SendsmsAccount(
        per_number_seconds=per_number_seconds,
        sends=TokenBucket(send_rate),
        queries=TokenBucket(query_rate),
        blocked_numbers=frozenset(blocked_numbers),
    )
    app.router.add_post("/api/sms/v1/sendsms", _send)
    app.router.add_post("/api/sms/v1/querysms", _query)
    return app
