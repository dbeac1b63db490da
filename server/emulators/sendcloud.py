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
content over 500 characters as 460, a number in ``intercepted`` as its code (410,
420, 430); the "undelivered" outcome uses 500 or 590.
API requests are counted as they arrive (``/_emulator/sendcloud``: ``calls`` by path,
``peak_per_second``, and with ``rate_limit`` set, ``over_rate``: requests that found a
bucket of one second's worth empty; the seed has no code to refuse them with).
With ``settings.webhook_url`` set, every settled message is POSTed once as an
SMSHook form (event, smsId, phone, statusCode, message, timestamp, token, signature,
and the request's ``tag`` when it had one).

``status/query`` follows SendCloud's published page
(https://www.sendcloud.net/doc/en/sms/sms_status, Chinese original
https://www.sendcloud.net/doc/sms/sms_status): ``smsIds`` / ``phones`` (``;``-separated),
a time span (``days``, days=1 is today, or ``startDate`` + ``endDate``, at most 30
days; neither -> 481), ``templateId``, ``msgTypeStr``, ``start``, ``limit`` (0-100).
Its answer is ``info: {"voList": [...], "voListSize": n, "total": "<all matches>"}``,
each record {smsId, msgType, receiver, requestTime, sendLog, smsUser, status,
statusCode, templateId, templateName, updateTime}; ``status`` is 请求 (requesting,
statusCode 0 here: the page gives none), 送达 (delivered, 200), 处理失败-<reason>
(processing failed, 4xx) or 发送失败 (sending failed, 5xx).

This module imports nothing from the gateway (server.providers, server.domain): codes,
signing and parsing are written here from the documents, so a misreading on either
side shows up as a disagreement in the tests.
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
from datetime import date, timedelta
from typing import Any

from aiohttp import web

from server.emulators.common import (
    STATE_KEY,
    EmulatorSettings,
    EmulatorState,
    Received,
    new_app,
)
from server.emulators.sendcloud_state import (
    EXTRAS_KEY,
    Record,
    SendCloudExtras,
    china_now,
    count_call,
    get_extras,
    hook_pusher,
    server_ms,
    set_extras,
    settle,
)

# The seed's "API return code meaning" table.
MEANINGS: dict[int, str] = {
    200: "request was successful",
    311: "requests numbers were partially successful",
    312: "all request failed",
    400: "duplicate request",
    411: "phone number cannot be empty",
    412: "invalid phone number format",
    413: "duplicate phone numbers",
    421: "incorrect signature parameter",
    422: "incorrect signature",
    431: "template does not exist",
    432: "template not submitted for verification or verify unsuccessfully",
    433: "template ID cannot be empty",
    441: "invalid substituted variable format",
    451: "invalid scheduled time format",
    452: "scheduled time is earlier than sever time",
    461: "invalid timestamp, time interval between timestamp and sever time is longer than 6s",
    471: "smsUser does not exist",
    472: "smsUser cannot be empty",
    473: "no permission, free registered users are not eligible for SMS",
    474: "user does not exist",
    481: "phone number and substitution variable cannot be empty",
    482: "invalid format of phone number and substituted variable",
    483: "substituted variable cannot be longer than 32 characters",
    496: "too many messages sent to this number within one minute",
    498: "too many messages sent to this number in one day",
    499: "insufficient balance",
    501: "sever exception",
    601: "no permission",
}
# The seed's SMSHook codes, as the status page words them (处理失败 / 发送失败).
HOOK_REASONS: dict[int, str] = {
    410: "处理失败-全局拦截列表",
    420: "处理失败-局部拦截列表",
    430: "处理失败-取消订阅",
    440: "处理失败-关键词过滤",
    450: "处理失败-替换变量错误",
    460: "处理失败-内容超长",
    500: "发送失败-号码不存在",
    510: "发送失败-号码停机",
    550: "发送失败-模板内容被投诉",
    580: "发送失败-关机",
    590: "发送失败-其他原因",
}
MSG_TYPES = {"0": "国内短信", "1": "彩信", "2": "国际短信", "3": "语音"}
MAX_QUERY_DAYS = 30
SENDS = frozenset({"/smsapi/send", "/smsapi/sendCode", "/smsapi/sendVoice"})

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
    text = message or MEANINGS.get(code, "error")
    body = {"result": code in (200, 311), "statusCode": code, "message": text, "info": info or {}}
    return web.json_response(body)


def signature(params: dict[str, str], key: str) -> str:
    """MD5 of key&k1=v1&k2=v2...&key over the raw values sorted by name, signature and
    smsKey left out (seed README, "SendCloud request signature")."""
    joined = "&".join(
        f"{k}={v}" for k, v in sorted(params.items()) if k not in ("signature", "smsKey")
    )
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
        if extras.duplicate_with_ids:
            raise Refusal(400, info={"successCount": len(seen[1]), "smsIds": seen[1]})
        raise Refusal(400)


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


def accept(
    request: web.Request,
    form: dict[str, str],
    phone: str,
    content: str,
    *,
    template_id: str = "",
    msg_type: str = "0",
    hook_code: int = 0,
) -> str:
    state, extras = request.app[STATE_KEY], request.app[EXTRAS_KEY]
    # SendCloud's smsIds end with "$" and the number (seed: "..._1ainnq$131112345678").
    sms_id = f"{server_ms(extras)}_{len(state.received) + 1}_1_1_{secrets.token_hex(3)}${phone}"
    key = form.get("sendRequestId", "")
    item = Received(sms_id, phone, content, request_key=key, accepted_at=time.monotonic())
    if hook_code:  # refused at processing: settles at once
        item.status, item.error_code = "undelivered", str(hook_code)
    state.received.append(item)
    extras.records[sms_id] = Record(template_id, msg_type, china_now(extras), form.get("tag", ""))
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
    msg_type = form.get("msgType", "0")
    if msg_type not in ("0", "1"):
        raise Refusal(441, "msgType must be 0 (SMS) or 1 (MMS)")
    for phone in phones:
        code = 0 if DOMESTIC.fullmatch(phone) or INTERNATIONAL.fullmatch(phone) else 412
        code = code or throttled(extras, phone)
        if code and len(phones) == 1:
            raise Refusal(code)
        text = MEANINGS[code] if code else "refused by the operator"
        if code or (len(phones) > 1 and state.rng.random() < controls.partial_rate):
            failed.append({"phone": phone, "vars": values, "message": text})
        else:
            sms_ids.append(
                accept(
                    request,
                    form,
                    phone,
                    content,
                    template_id=template_id,
                    hook_code=hook_code or extras.intercepted.get(phone, 0),
                )
            )
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
    text = f"【{sign}】Your verification code is {code}."
    return await _single(request, form, phone, text, msg_type)


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
    text = f"[voice call] Your verification code is {code}."
    return await _single(request, form, phone, text, "3")


async def _single(
    request: web.Request, form: dict[str, str], phone: str, text: str, msg_type: str
) -> web.Response:
    extras = request.app[EXTRAS_KEY]
    limited = throttled(extras, phone)
    if limited:
        raise Refusal(limited)
    sms_id = accept(request, form, phone, text, msg_type=msg_type)
    remember(extras, form.get("sendRequestId", ""), [sms_id])
    return answer(200, {"successCount": 1, "smsIds": [sms_id]})


def _span(form: dict[str, str], today: date) -> tuple[date, date]:
    """The days a query covers: ``days`` (1 = today) or startDate..endDate."""
    days, start, end = form.get("days", ""), form.get("startDate", ""), form.get("endDate", "")
    if days:
        if not (days.isascii() and days.isdigit()) or not 1 <= int(days) <= MAX_QUERY_DAYS:
            raise Refusal(441, f"days must be 1 to {MAX_QUERY_DAYS}")
        return today - timedelta(days=int(days) - 1), today
    if not (start and end):
        raise Refusal(481, "days, or startDate and endDate, is required")
    try:
        first, last = date.fromisoformat(start), date.fromisoformat(end)
    except ValueError:
        raise Refusal(441, "dates are yyyy-MM-dd") from None
    if first > last or (last - first).days >= MAX_QUERY_DAYS:
        raise Refusal(441, f"the span is at most {MAX_QUERY_DAYS} days")
    return first, last


def _bounded(form: dict[str, str], name: str, default: int, top: int | None) -> int:
    raw = form.get(name, "")
    if not raw:
        return default
    if not (raw.isascii() and raw.isdigit()) or (top is not None and int(raw) > top):
        raise Refusal(441, f"{name} out of range")
    return int(raw)


async def status_query(request: web.Request) -> web.Response:
    state, extras = request.app[STATE_KEY], request.app[EXTRAS_KEY]
    form = await authenticated(request)
    ids = [i for i in form.get("smsIds", "").split(";") if i]
    phones = {p for p in form.get("phones", "").split(";") if p}
    if len(ids) > MAX_STATUS_IDS:
        raise Refusal(412, f"at most {MAX_STATUS_IDS} smsIds per query")
    if len(phones) > MAX_STATUS_IDS:
        raise Refusal(412, f"at most {MAX_STATUS_IDS} phones per query")
    first, last = _span(form, china_now(extras).date())
    start = _bounded(form, "start", 0, None)
    limit = _bounded(form, "limit", MAX_STATUS_IDS, MAX_STATUS_IDS)
    template, msg_type = form.get("templateId", ""), form.get("msgTypeStr", "")
    wanted = set(ids)
    now, matches = time.monotonic(), []
    for item in state.received:
        record = extras.records.get(item.provider_message_id)
        if record is None or not first <= record.requested_at.date() <= last:
            continue
        if (wanted and item.provider_message_id not in wanted) or (
            phones and item.phone not in phones
        ):
            continue
        if (template and record.template_id != template) or (
            msg_type and record.msg_type != msg_type
        ):
            continue
        matches.append((item, record))
    page = [_vo(state, extras, item, record, now) for item, record in matches[start:]][:limit]
    info = {"voList": page, "voListSize": len(page), "total": str(len(matches))}
    return answer(200, info, "请求成功")


def _vo(
    state: EmulatorState, extras: SendCloudExtras, item: Received, record: Record, now: float
) -> dict[str, Any]:
    settle(state, item, now)
    if item.status == "sent":
        status, code, log = "请求", 0, "请求成功"
    elif item.status == "delivered":
        status, code, log = "送达", 200, "发送成功"
    else:
        code = int(item.error_code)
        status = HOOK_REASONS.get(code, "处理失败" if code < 500 else "发送失败")
        log = f"smsworker:{status}"
    if item.status != "sent" and record.updated_at is None:
        record.updated_at = china_now(extras)
    stamp = "%Y-%m-%d %H:%M:%S"
    return {
        "smsId": item.provider_message_id,
        "msgType": MSG_TYPES.get(record.msg_type, "国内短信"),
        "receiver": item.phone,
        "requestTime": record.requested_at.strftime(stamp),
        "sendLog": log,
        "smsUser": state.settings.credential_id,
        "status": status,
        "statusCode": code,
        "templateId": record.template_id,
        "templateName": f"template {record.template_id}" if record.template_id else "验证码",
        "updateTime": (record.updated_at or record.requested_at).strftime(stamp),
    }


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
    extras = request.app[EXTRAS_KEY]
    if extras.drop_answers > 0 and request.path in SENDS:
        # Processed, and the answer is lost on the way back.
        extras.drop_answers -= 1
        extras.answers_dropped += 1
        if request.transport is not None:
            request.transport.close()
        raise ConnectionResetError("emulator dropped the answer")
    delay = extras.answer_delay
    if delay:
        await asyncio.sleep(delay)
    return response


@web.middleware
async def _count(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Counts API requests as they arrive (before the latency control)."""
    if request.path.startswith("/smsapi/"):
        count_call(request.app[EXTRAS_KEY], request.path, time.monotonic())
    return await handler(request)


def build_app(settings: EmulatorSettings) -> web.Application:
    app = new_app(settings)
    app[EXTRAS_KEY] = SendCloudExtras()
    app.middlewares.insert(0, _count)
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
