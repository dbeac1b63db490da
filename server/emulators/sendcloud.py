"""SendCloud SMS API emulator (seed 001), strict about what the document says.

Routes: POST /smsapi/send, /smsapi/sendCode, /smsapi/sendVoice, /smsapi/status/query,
GET /smsapi/timestamp/get; test controls at /_emulator/sendcloud (GET/POST JSON of
``SendCloudExtras`` fields). Checks, in order: smsUser (472 empty, 471 unknown),
signature (421 missing, 422 wrong; MD5 of smsKey&sorted k=v&smsKey), timestamp in
ms (461 if not a number or more than 6 s from server time), ``force_code``, then the
endpoint's own rules. A repeated sendRequestId within an hour answers 400 with the
original smsIds. Templates use ``%name%`` variables; vars may use "name" or "%name%"
keys. Where the seed gives no code of its own, the emulator answers: more than 2,000
numbers -> 412, over-long sendRequestId/tag -> 441, status query with no ids -> 411
or more than 100 -> 412. A template variable left unfilled settles as SMSHook 450,
content over 500 characters as 460; the "undelivered" outcome uses 500 or 590.
With ``settings.webhook_url`` set, every settled message is POSTed once as an
SMSHook form (see server.providers.sendcloud_hook).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from server.emulators.common import STATE_KEY, EmulatorSettings, Received, new_app
from server.emulators.sendcloud_state import (
    EXTRAS_KEY,
    SendCloudExtras,
    get_extras,
    hook_pusher,
    server_ms,
    set_extras,
    settle,
)
from server.providers.sendcloud_codes import RETURN_CODES

MAX_PHONES = 2000
MAX_STATUS_IDS = 100
MAX_VAR_LENGTH = 32
MAX_CONTENT = 500
MAX_SKEW_MS = 6000
DEDUPE_SECONDS = 3600.0
DOMESTIC = re.compile(r"1[3-9][0-9]{9}")
INTERNATIONAL = re.compile(r"00[1-9][0-9]{6,14}")
CODE = re.compile(r"[0-9]{4,6}")
PLACEHOLDER = re.compile(r"%([A-Za-z0-9_]+)%")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Refusal(Exception):
    def __init__(self, code: int, message: str = "", info: dict[str, Any] | None = None) -> None:
        super().__init__(code)
        self.code, self.message, self.info = code, message, info or {}


def answer(code: int, info: dict[str, Any] | None = None, message: str = "") -> web.Response:
    rule = RETURN_CODES.get(code)
    text = message or (rule.meaning if rule else "error")
    body = {"result": code in (200, 311), "statusCode": code, "message": text, "info": info or {}}
    return web.json_response(body)


def signature(params: dict[str, str], key: str) -> str:
    joined = "&".join(f"{k}={v}" for k, v in sorted(params.items()) if k != "signature")
    return hashlib.md5(f"{key}&{joined}&{key}".encode()).hexdigest()


async def authenticated(request: web.Request) -> dict[str, str]:
    """The form of a signed call, or Refusal as SendCloud answers bad ones."""
    state, extras = request.app[STATE_KEY], request.app[EXTRAS_KEY]
    form = {k: str(v) for k, v in (await request.post()).items()}
    form.pop("smsKey", None)
    if not form.get("smsUser"):
        raise Refusal(472)
    if form["smsUser"] != state.settings.credential_id:
        raise Refusal(471)
    if not form.get("signature"):
        raise Refusal(421)
    expected = signature(form, state.settings.credential_secret)
    if not hmac.compare_digest(expected.encode(), form["signature"].lower().encode()):
        raise Refusal(422)
    stamp = form.get("timestamp")
    if stamp is not None and (
        not (stamp.isascii() and stamp.isdigit())
        or abs(server_ms(extras) - int(stamp)) > MAX_SKEW_MS
    ):
        raise Refusal(461)
    if extras.force_code:
        raise Refusal(extras.force_code)
    return form


def repeated(extras: SendCloudExtras, form: dict[str, str]) -> None:
    """Raise the 400 answer for a sendRequestId already processed within the hour."""
    key = form.get("sendRequestId", "")
    if len(key) > 128:
        raise Refusal(441, "sendRequestId longer than 128 characters")
    tag = form.get("tag")
    if tag is not None and (len(tag) > 128 or not _is_json_object(tag)):
        raise Refusal(441, "tag must be a JSON object of at most 128 characters")
    seen = extras.requests.get(key) if key else None
    if seen and time.monotonic() - seen[0] < DEDUPE_SECONDS:
        raise Refusal(400, info={"successCount": len(seen[1]), "smsIds": seen[1]})


def remember(extras: SendCloudExtras, key: str, sms_ids: list[str]) -> None:
    """Keeps a processed sendRequestId for an hour (stale ones are dropped now and then)."""
    if not key:
        return
    now = time.monotonic()
    if len(extras.requests) % 1000 == 999:
        stale = [k for k, (at, _) in extras.requests.items() if now - at >= DEDUPE_SECONDS]
        for old in stale:
            del extras.requests[old]
    extras.requests[key] = (now, sms_ids)


def _is_json_object(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except ValueError:
        return False


def throttled(extras: SendCloudExtras, phone: str) -> int:
    """496/498 when this number had its share, else 0."""
    now = time.monotonic()
    times = extras.history.get(phone, deque())
    while times and now - times[0] > 86400:
        times.popleft()
    if not (extras.per_day or extras.per_minute):
        return 0
    if extras.per_day and len(times) >= extras.per_day:
        return 498
    if extras.per_minute and sum(1 for t in times if now - t <= 60) >= extras.per_minute:
        return 496
    return 0


def accept(request: web.Request, phone: str, content: str, key: str, hook_code: int = 0) -> str:
    state, extras = request.app[STATE_KEY], request.app[EXTRAS_KEY]
    sms_id = f"{server_ms(extras)}_{len(state.received) + 1}_1_1_{secrets.token_hex(3)}${phone}"
    item = Received(sms_id, phone, content, request_key=key, accepted_at=time.monotonic())
    if hook_code:  # refused at processing: settles at once
        item.status, item.error_code = "undelivered", str(hook_code)
    state.received.append(item)
    if extras.per_day or extras.per_minute:
        extras.history.setdefault(phone, deque()).append(item.accepted_at)
    if state.settings.webhook_url:
        extras.unhooked.append(item)
    return sms_id


def parse_vars(raw: str) -> dict[str, str]:
    try:
        data = json.loads(raw) if raw else {}
    except ValueError:
        raise Refusal(441, "vars is not JSON") from None
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise Refusal(441, "vars must be a JSON object of strings")
    for value in data.values():
        if len(value) > MAX_VAR_LENGTH:
            raise Refusal(483)
        if "http://" in value.lower() or "https://" in value.lower():
            raise Refusal(441, "HTTP links are not allowed in variables")
    return {k.strip("%"): v for k, v in data.items()}


async def send(request: web.Request) -> web.Response:
    state, extras = request.app[STATE_KEY], request.app[EXTRAS_KEY]
    form = await authenticated(request)
    repeated(extras, form)
    template_id = form.get("templateId", "")
    if not template_id:
        raise Refusal(433)
    if template_id not in state.settings.templates:
        raise Refusal(431)
    if template_id in extras.unverified_templates:
        raise Refusal(432)
    phones = [p.strip() for p in form.get("phone", "").split(",") if p.strip()]
    if not phones:
        raise Refusal(411)
    if len(phones) > MAX_PHONES:
        raise Refusal(412, f"at most {MAX_PHONES} numbers per request")
    if len(set(phones)) != len(phones):
        raise Refusal(413)
    values = parse_vars(form.get("vars", ""))
    content = PLACEHOLDER.sub(
        lambda m: values.get(m.group(1), m.group(0)), state.settings.templates[template_id]
    )
    hook_code = 450 if PLACEHOLDER.search(content) else 460 if len(content) > MAX_CONTENT else 0
    failed: list[dict[str, Any]] = []
    sms_ids: list[str] = []
    request_key, controls = form.get("sendRequestId", ""), state.settings.controls
    for phone in phones:
        code = 0 if DOMESTIC.fullmatch(phone) or INTERNATIONAL.fullmatch(phone) else 412
        code = code or throttled(extras, phone)
        if code and len(phones) == 1:
            raise Refusal(code)
        text = RETURN_CODES[code].meaning if code else "refused by the operator"
        if code or (len(phones) > 1 and state.rng.random() < controls.partial_rate):
            failed.append({"phone": phone, "vars": values, "message": text})
        else:
            sms_ids.append(accept(request, phone, content, request_key, hook_code))
    if not sms_ids:
        raise Refusal(312, info={"successCount": 0, "failedCount": len(failed), "items": failed})
    remember(extras, request_key, sms_ids)
    info: dict[str, Any] = {"successCount": len(sms_ids), "smsIds": sms_ids}
    if failed:
        info.update(failedCount=len(failed), items=failed)
    return answer(311 if failed else 200, info)


async def send_code(request: web.Request) -> web.Response:
    extras = request.app[EXTRAS_KEY]
    form = await authenticated(request)
    repeated(extras, form)
    phone, msg_type = form.get("phone", ""), form.get("msgType", "0")
    if not phone:
        raise Refusal(411)
    pattern = {"0": DOMESTIC, "2": INTERNATIONAL}.get(msg_type)
    if pattern is None or not pattern.fullmatch(phone):
        raise Refusal(412, "phone does not match msgType (0: domestic, 2: international)")
    code = form.get("code", "")
    if not CODE.fullmatch(code):
        raise Refusal(441, "code must be 4 to 6 digits")
    sign = f"sign#{form['signId']}" if form.get("signId") else form.get("signName", "")
    if not sign:
        raise Refusal(421, "signId or signName is required")
    return await _single(request, form, phone, f"【{sign}】Your verification code is {code}.")


async def send_voice(request: web.Request) -> web.Response:
    extras = request.app[EXTRAS_KEY]
    form = await authenticated(request)
    repeated(extras, form)
    phone, code = form.get("phone", ""), form.get("code", "")
    if not phone:
        raise Refusal(411)
    if not DOMESTIC.fullmatch(phone):
        raise Refusal(412, "voice codes go to mainland China mobiles only")
    if not CODE.fullmatch(code):
        raise Refusal(441, "code must be 4 to 6 digits")
    return await _single(request, form, phone, f"[voice call] Your verification code is {code}.")


async def _single(
    request: web.Request, form: dict[str, str], phone: str, text: str
) -> web.Response:
    extras = request.app[EXTRAS_KEY]
    limited = throttled(extras, phone)
    if limited:
        raise Refusal(limited)
    sms_id = accept(request, phone, text, form.get("sendRequestId", ""))
    remember(extras, form.get("sendRequestId", ""), [sms_id])
    return answer(200, {"successCount": 1, "smsIds": [sms_id]})


async def status_query(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    form = await authenticated(request)
    ids = [i for i in form.get("smsIds", "").split(";") if i]
    if not ids:
        raise Refusal(411, "smsIds cannot be empty")
    if len(ids) > MAX_STATUS_IDS:
        raise Refusal(412, f"at most {MAX_STATUS_IDS} smsIds per query")
    now, items = time.monotonic(), []
    for sms_id in ids:
        item = state.by_id(sms_id)
        if item is None:
            continue
        settle(state, item, now)
        status = {"sent": "sent", "delivered": "delivered"}.get(item.status, "failed")
        code = int(item.error_code) if status == "failed" else 0
        text = {"sent": "sending", "delivered": "delivered"}.get(status, "not delivered")
        items.append(
            {"smsId": sms_id, "phone": item.phone, "status": status, "statusCode": code}
            | {"message": text}
        )
    return answer(200, {"items": items})


async def timestamp_get(request: web.Request) -> web.Response:
    return answer(200, {"timestamp": server_ms(request.app[EXTRAS_KEY])})


@web.middleware
async def _envelope(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turns Refusal into SendCloud's answer; holds answers by ``answer_delay``."""
    if not request.path.startswith("/smsapi/"):
        return await handler(request)
    try:
        response = await handler(request)
    except Refusal as refusal:
        response = answer(refusal.code, refusal.info, refusal.message)
    delay = request.app[EXTRAS_KEY].answer_delay
    if delay:
        await asyncio.sleep(delay)
    return response


def build_app(settings: EmulatorSettings) -> web.Application:
    app = new_app(settings)
    app[EXTRAS_KEY] = SendCloudExtras()
    app.middlewares.append(_envelope)
    app.router.add_post("/smsapi/send", send)
    app.router.add_post("/smsapi/sendCode", send_code)
    app.router.add_post("/smsapi/sendVoice", send_voice)
    app.router.add_post("/smsapi/status/query", status_query)
    app.router.add_get("/smsapi/timestamp/get", timestamp_get)
    app.router.add_get("/_emulator/sendcloud", get_extras)
    app.router.add_post("/_emulator/sendcloud", set_extras)
    app.cleanup_ctx.append(hook_pusher)
    return app
