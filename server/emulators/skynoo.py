"""An emulator of the Skynoo SMS API (seed 000): single send, status query and the
OTP verification send/check, with Basic auth (``credential_id:credential_secret``).

Every answer is the documented envelope {"code", "message"[, "data"]} and its HTTP
status equals the envelope code (200, 400, 401, 429): the seed shows only the
envelope, and mirroring it keeps both readings of a failure consistent.
Settings: ``templates`` maps Skynoo template ids ("15") to texts with #var#
variables. Batch tasks (batch/create, batch/status, batch/detail): every number's
text is made from ``content`` and its ``templateData`` before the task is accepted
(any failure refuses the whole task); ``partial_rate`` blocks that share of numbers
(REJECTED records, errorCode BLOCKED). A task is "pending" for the first half of
``delivery_delay``, "executing" until its records settle, then "success" ("fail"
when none went out). Records are also known to getStatus by their id.
Written from the seed alone: nothing here comes from server/providers.

Test-only controls (beside the shared /_emulator/state and /_emulator/controls):
- POST /_emulator/skynoo/answer {"code", "message", "http_status", "times"}: the next
  ``times`` API calls answer this envelope instead (drives every documented code).
- POST /_emulator/skynoo/advance {"seconds"}: moves the OTP clock forward (the 60 s
  per-mobile interval, the hourly account limit and code expiry).
"""

from __future__ import annotations

import base64
import hmac
import math
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from server.emulators.common import STATE_KEY, EmulatorSettings, EmulatorState, Received, new_app

# Everything below is read from the seed (000), not shared with the transport: a
# misreading on either side shows up as a disagreement in the tests.
SEND_PATH = "/api/sms/v1/send"
STATUS_PATH = "/api/sms/v1/getStatus"
OTP_SEND_PATH = "/api/sms/v1/verification/send"
OTP_CHECK_PATH = "/api/sms/v1/verification/check"
BATCH_CREATE_PATH = "/api/sms/v1/batch/create"
BATCH_STATUS_PATH = "/api/sms/v1/batch/status"
BATCH_DETAIL_PATH = "/api/sms/v1/batch/detail"
# "The total length of the SMS body must be controlled within 460 characters.
# Special symbols such as 【】 and ★, ※, →, ●, etc., are not supported."
MAX_TEXT_CHARS = 460
UNSUPPORTED_SYMBOLS = "【】★※→●"
# "Query up to 100 messages per request."
MAX_STATUS_IDS = 100
# batch/detail: "pageSize ... (default 20, max 100)".
DETAIL_PAGE_SIZE = 20
DETAIL_MAX_PAGE_SIZE = 100
# Not in the seed: how many numbers one batch task takes here.
MAX_BATCH_NUMBERS = 10_000
# "Recipient mobile number (E.164 format with country code)": "+", then up to 15 digits.
E164 = re.compile(r"\+[1-9][0-9]{7,14}")
# "Variables are represented by #variable_name# ... letters, numbers, and
# underscores, with a length of less than 24 characters."
VARIABLE = re.compile(r"#([A-Za-z0-9_]{1,23})#")


def content_problem(text: str) -> str | None:
    """Why this SMS body is refused, or None."""
    if len(text) > MAX_TEXT_CHARS:
        return f"SMS body exceeds {MAX_TEXT_CHARS} characters (got {len(text)})"
    for symbol in UNSUPPORTED_SYMBOLS:
        if symbol in text:
            return f"SMS body contains the unsupported symbol {symbol}"
    return None


def render_template(text: str, values: dict[str, str]) -> str:
    """Every #name# replaced by its value; KeyError(name) for a missing one."""
    return VARIABLE.sub(lambda match: values[match.group(1)], text)


OK = "Request successful"
OTP_ATTEMPTS = 3
OTP_MOBILE_INTERVAL = 60.0  # seconds between codes to the same mobile
OTP_ACCOUNT_PER_HOUR = 100
# How settled messages read in getStatus: Received.status → (status, errorCode).
WIRE_STATUSES = {
    "delivered": ("DELIVERED", ""),
    "undelivered": ("UNDELIVERED", "E66"),
    "rejected": ("REJECTED", "BLOCKED"),
    "failed": ("FAILED", "E99"),
}


class Refused(Exception):
    """An API refusal, answered as the envelope {"code": code, "message": message}."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class OtpSession:
    mobile: str
    code: str
    expires_at: float
    attempts_left: int = OTP_ATTEMPTS
    state: str = "pending"  # pending, verified, expired, exhausted


@dataclass
class BatchTask:
    """One batch/create task: its records in the order of ``numbers``."""

    task_id: int
    created_at: float  # monotonic
    records: list[Received]


@dataclass
class SkynooBook:
    """Skynoo-only emulator state: forced answers, OTP sessions and limits."""

    forced: deque[tuple[str, str, int]] = field(default_factory=deque)
    by_id: dict[str, Received] = field(default_factory=dict)
    otp: dict[str, OtpSession] = field(default_factory=dict)
    otp_last_by_mobile: dict[str, float] = field(default_factory=dict)
    otp_sent_at: deque[float] = field(default_factory=deque)
    clock_offset: float = 0.0
    # Every authorized API request: (path, JSON body), for wire-format checks.
    requests: list[tuple[str, Any]] = field(default_factory=list)
    tasks: dict[int, BatchTask] = field(default_factory=dict)
    next_task_id: int = 1001

    def now(self) -> float:
        return time.monotonic() + self.clock_offset


BOOK_KEY: web.AppKey[SkynooBook] = web.AppKey("skynoo_book", SkynooBook)
Handler = Callable[
    [EmulatorState, SkynooBook, dict[str, Any]], Awaitable[dict[str, Any] | list[Any]]
]


def envelope(
    code: str, message: str, data: Any = None, http_status: int | None = None
) -> web.Response:
    payload: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        payload["data"] = data
    return web.json_response(payload, status=http_status or int(code))


def authorized(header: str, settings: EmulatorSettings) -> bool:
    """True for "Basic base64(apiKey:apiSecret)" with this account's credentials."""
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        given = base64.b64decode(token.strip(), validate=True)
    except ValueError:
        return False
    expected = f"{settings.credential_id}:{settings.credential_secret}".encode()
    return hmac.compare_digest(given, expected)


def api(handler: Handler) -> Callable[[web.Request], Awaitable[web.Response]]:
    """Wraps a handler with forced answers, auth, JSON parsing and refusals."""

    async def route(request: web.Request) -> web.Response:
        book = request.app[BOOK_KEY]
        if book.forced:
            code, message, http_status = book.forced.popleft()
            return envelope(code, message, http_status=http_status)
        state = request.app[STATE_KEY]
        if not authorized(request.headers.get("Authorization", ""), state.settings):
            return envelope("401", "Unauthorized")
        try:
            body = await request.json()
        except ValueError:
            return envelope("400", "Request body must be JSON")
        book.requests.append((request.path, body))
        if not isinstance(body, dict):
            return envelope("400", "Request body must be a JSON object")
        try:
            data = await handler(state, book, body)
        except Refused as refusal:
            return envelope(refusal.code, refusal.message)
        return envelope("200", OK, data)

    return route


def mobile_of(body: dict[str, Any]) -> str:
    mobile = body.get("mobile")
    if not isinstance(mobile, str) or not E164.fullmatch(mobile):
        raise Refused("400", "Invalid mobile: use E.164 with country code, e.g. +8613800138000")
    return mobile


def whole_number(body: dict[str, Any], key: str, default: int, low: int, high: int) -> int:
    value = body.get(key, default)
    if type(value) is not int or not low <= value <= high:
        raise Refused("400", f"{key} must be a whole number from {low} to {high}")
    return value


def render(settings: EmulatorSettings, template_id: Any, data: Any) -> str:
    """The text of template ``template_id`` with ``data`` filled in."""
    if type(template_id) is not int or template_id <= 0:
        raise Refused("400", "templateId must be a positive integer")
    text = settings.templates.get(str(template_id))
    if text is None:
        raise Refused("400", f"Template {template_id} does not exist")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise Refused("400", "data must be a JSON object")
    values: dict[str, str] = {}
    for key, value in data.items():
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise Refused("400", f"data.{key} must be a string or a number")
        values[key] = str(value)
    try:
        return render_template(text, values)
    except KeyError as missing:
        raise Refused("400", f"Missing template variable: {missing.args[0]}") from None


def accept(state: EmulatorState, book: SkynooBook, mobile: str, text: str) -> Received:
    problem = content_problem(text)
    if problem is not None:
        raise Refused("400", problem)
    provider_id = f"{state.rng.getrandbits(128):032x}"
    item = Received(provider_id, mobile, text, accepted_at=time.monotonic())
    state.received.append(item)
    book.by_id[item.provider_message_id] = item
    return item


async def send(state: EmulatorState, book: SkynooBook, body: dict[str, Any]) -> dict[str, Any]:
    mobile = mobile_of(body)
    whole_number(body, "useType", 0, 1, 3)
    text, template_id = body.get("text"), body.get("templateId")
    if (text is None) == (template_id is None):
        raise Refused("400", "Provide exactly one of text or templateId")
    if template_id is not None:
        text = render(state.settings, template_id, body.get("data"))
    elif not isinstance(text, str) or not text.strip():
        raise Refused("400", "text must be a non-empty string")
    elif body.get("data") is not None:
        raise Refused("400", "data is only used with templateId")
    item = accept(state, book, mobile, text)
    return {"id": item.provider_message_id, "toNumber": mobile, "status": "pending"}


def wire_status(state: EmulatorState, item: Received, now: float) -> tuple[str, str]:
    state.settle(item, now)
    if item.status == "sent":
        early = now - item.accepted_at < state.settings.controls.delivery_delay / 2
        return ("QUEUED", "") if early else ("SEND", "")
    return WIRE_STATUSES.get(item.status, ("UNKNOWN", ""))


async def get_status(state: EmulatorState, book: SkynooBook, body: dict[str, Any]) -> list[Any]:
    ids = body.get("ids")
    if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
        raise Refused("400", "ids must be a non-empty array of message ids")
    if len(ids) > MAX_STATUS_IDS:
        raise Refused("400", f"At most {MAX_STATUS_IDS} ids per request (got {len(ids)})")
    now = time.monotonic()
    answer = []
    partial = state.settings.controls.partial_rate
    for sid in dict.fromkeys(ids):
        item = book.by_id.get(sid)
        if partial and state.rng.random() < partial:
            continue  # a partial answer: this id is left out, as if not known yet
        if item is not None:
            status, item.error_code = wire_status(state, item, now)
            answer.append({"sid": sid, "status": status, "errorCode": item.error_code})
    return answer


async def otp_send(state: EmulatorState, book: SkynooBook, body: dict[str, Any]) -> dict[str, Any]:
    mobile = mobile_of(body)
    length = whole_number(body, "codeLength", 6, 4, 8)
    minutes = whole_number(body, "expireMinutes", 5, 1, 60)
    if not isinstance(body.get("scene", ""), str):
        raise Refused("400", "scene must be a string")
    now = book.now()
    last = book.otp_last_by_mobile.get(mobile)
    if last is not None and now - last < OTP_MOBILE_INTERVAL:
        wait = math.ceil(OTP_MOBILE_INTERVAL - (now - last))
        raise Refused("429", f"Too many requests: wait {wait} s before sending to this mobile")
    while book.otp_sent_at and now - book.otp_sent_at[0] >= 3600:
        book.otp_sent_at.popleft()
    if len(book.otp_sent_at) >= OTP_ACCOUNT_PER_HOUR:
        raise Refused("429", f"Too many requests: {OTP_ACCOUNT_PER_HOUR} codes per hour")
    code = "".join(str(state.rng.randrange(10)) for _ in range(length))
    values = {"code": code, "expireTime": f"{minutes} minutes", "expireMinutes": str(minutes)}
    if body.get("templateId") is not None:
        text = render(state.settings, body["templateId"], values)
    else:
        text = f"Your verification code is {code}, valid for {minutes} minutes."
    accept(state, book, mobile, text)
    verify_id = f"v_{state.rng.getrandbits(48):012x}"
    book.otp[verify_id] = OtpSession(mobile, code, now + minutes * 60)
    book.otp_last_by_mobile[mobile] = now
    book.otp_sent_at.append(now)
    expire_ms = int((time.time() + book.clock_offset + minutes * 60) * 1000)
    return {"verifyId": verify_id, "expireTime": expire_ms}


async def otp_check(state: EmulatorState, book: SkynooBook, body: dict[str, Any]) -> dict[str, Any]:
    verify_id, mobile, code = (body.get(key) for key in ("verifyId", "mobile", "code"))
    if not all(isinstance(value, str) and value for value in (verify_id, mobile, code)):
        raise Refused("400", "verifyId, mobile and code are required strings")
    session = book.otp.get(str(verify_id))
    if session is None:
        raise Refused("400", "Verification session not found")
    if session.mobile != mobile:
        raise Refused("400", "Mobile does not match the verification session")
    if session.state == "pending" and book.now() >= session.expires_at:
        session.state = "expired"
    if session.state != "pending":
        reason = {"verified": "already used"}.get(session.state, session.state)
        raise Refused("400", f"Verification code {reason}")
    if hmac.compare_digest(str(code).encode(), session.code.encode()):
        session.state = "verified"
        return {"valid": True, "remainingAttempts": 0}
    session.attempts_left -= 1
    if session.attempts_left == 0:
        session.state = "exhausted"
    return {"valid": False, "remainingAttempts": session.attempts_left}


def task_of(book: SkynooBook, body: dict[str, Any]) -> BatchTask:
    task_id = body.get("taskId")
    if type(task_id) is not int:
        raise Refused("400", "taskId must be a number")
    task = book.tasks.get(task_id)
    if task is None:
        raise Refused("400", f"Task {task_id} does not exist")
    return task


def numbers_of(body: dict[str, Any]) -> list[str]:
    numbers = body.get("numbers")
    if not isinstance(numbers, list) or not numbers:
        raise Refused("400", "numbers must be a non-empty array")
    if len(numbers) > MAX_BATCH_NUMBERS:
        raise Refused("400", f"At most {MAX_BATCH_NUMBERS} numbers per task")
    for number in numbers:
        if not isinstance(number, str) or not E164.fullmatch(number):
            raise Refused("400", f"Invalid number {str(number)[:20]!r}: use E.164")
    if len(set(numbers)) != len(numbers):
        raise Refused("400", "numbers must not repeat")
    return numbers


async def batch_create(
    state: EmulatorState, book: SkynooBook, body: dict[str, Any]
) -> dict[str, Any]:
    """All or nothing: a number whose text cannot be made refuses the whole task; a
    number the operator blocks (the ``partial_rate`` control) is a REJECTED record."""
    whole_number(body, "useType", 0, 1, 3)
    content = body.get("content")
    if not isinstance(content, str) or not content.strip():
        raise Refused("400", "content must be a non-empty string")
    numbers = numbers_of(body)
    data = body.get("templateData", {})
    if data is None:
        data = {}
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise Refused("400", "templateData must map numbers to objects of variables")
    unknown = set(data) - set(numbers)
    if unknown:
        raise Refused("400", f"templateData names {sorted(unknown)[0]}, which is not in numbers")
    texts: list[str] = []
    for number in numbers:
        values: dict[str, str] = {}
        for key, value in data.get(number, {}).items():
            if isinstance(value, bool) or not isinstance(value, str | int | float):
                raise Refused("400", f"templateData.{number}.{key} must be a string or a number")
            values[key] = str(value)
        try:
            text = render_template(content, values)
        except KeyError as missing:
            raise Refused(
                "400", f"Missing template variable {missing.args[0]} for {number}"
            ) from None
        problem = content_problem(text)
        if problem is not None:
            raise Refused("400", f"{problem} (for {number})")
        texts.append(text)
    now = time.monotonic()
    partial = state.settings.controls.partial_rate
    records = []
    for number, text in zip(numbers, texts, strict=True):
        item = Received(f"{state.rng.getrandbits(128):032x}", number, text, accepted_at=now)
        if partial and state.rng.random() < partial:
            item.status = "rejected"
        state.received.append(item)
        book.by_id[item.provider_message_id] = item
        records.append(item)
    task = BatchTask(book.next_task_id, now, records)
    book.tasks[task.task_id] = task
    book.next_task_id += 1
    return {"taskId": task.task_id, "status": "pending"}


def task_status(state: EmulatorState, task: BatchTask, now: float) -> str:
    """pending, executing, success (some record went out) or fail (none did)."""
    delay = state.settings.controls.delivery_delay
    if now - task.created_at < delay / 2:
        return "pending"
    for item in task.records:
        state.settle(item, now)
    if any(item.status == "sent" for item in task.records):
        return "executing"
    gone_out = any(item.status in ("delivered", "undelivered") for item in task.records)
    return "success" if gone_out else "fail"


async def batch_status(
    state: EmulatorState, book: SkynooBook, body: dict[str, Any]
) -> dict[str, Any]:
    task = task_of(book, body)
    return {"taskId": task.task_id, "status": task_status(state, task, time.monotonic())}


async def batch_detail(
    state: EmulatorState, book: SkynooBook, body: dict[str, Any]
) -> dict[str, Any]:
    task = task_of(book, body)
    page_no = whole_number(body, "pageNo", 1, 1, 1_000_000)
    page_size = whole_number(body, "pageSize", DETAIL_PAGE_SIZE, 1, DETAIL_MAX_PAGE_SIZE)
    now = time.monotonic()
    wall = time.time()
    records = []
    for item in task.records[(page_no - 1) * page_size : page_no * page_size]:
        status, item.error_code = wire_status(state, item, now)
        records.append(
            {
                "id": item.provider_message_id,
                "toNumber": item.phone,
                "status": status,
                "errorCode": item.error_code,
                "sendTime": int((wall - (now - item.accepted_at)) * 1000),
            }
        )
    return {
        "records": records,
        "total": len(task.records),
        "pageNo": page_no,
        "pageSize": page_size,
    }


async def force_answer(request: web.Request) -> web.Response:
    body = await request.json()
    code = str(body["code"])
    default_status = int(code) if code.isdigit() and 200 <= int(code) <= 599 else 200
    answer = (
        code,
        str(body.get("message", "forced")),
        int(body.get("http_status", default_status)),
    )
    request.app[BOOK_KEY].forced.extend([answer] * int(body.get("times", 1)))
    return web.json_response({"queued": len(request.app[BOOK_KEY].forced)})


async def advance_clock(request: web.Request) -> web.Response:
    book = request.app[BOOK_KEY]
    book.clock_offset += float((await request.json())["seconds"])
    return web.json_response({"offset": book.clock_offset})


def build_app(settings: EmulatorSettings) -> web.Application:
    app = new_app(settings)
    app[BOOK_KEY] = SkynooBook()
    app.router.add_post(SEND_PATH, api(send))
    app.router.add_post(STATUS_PATH, api(get_status))
    app.router.add_post(OTP_SEND_PATH, api(otp_send))
    app.router.add_post(OTP_CHECK_PATH, api(otp_check))
    app.router.add_post(BATCH_CREATE_PATH, api(batch_create))
    app.router.add_post(BATCH_STATUS_PATH, api(batch_status))
    app.router.add_post(BATCH_DETAIL_PATH, api(batch_detail))
    app.router.add_post("/_emulator/skynoo/answer", force_answer)
    app.router.add_post("/_emulator/skynoo/advance", advance_clock)
    return app
