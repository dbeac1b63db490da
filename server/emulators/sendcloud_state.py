"""SendCloud emulator state beyond the shared one: its test controls, bookkeeping,
settling with SMSHook codes, and the SMSHook pusher (a background task).

Written from the documents only (seed 001 and SendCloud's public pages), never from
our transport: the SMSHook signature is SendCloud's published recipe, lowercase hex
HMAC-SHA256 keyed with the smsKey over ``timestamp + token``
(https://docs.aurorasendcloud.com/reference/smshook, "verify_signature").
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import string
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import aiohttp
from aiohttp import web

from server.emulators.common import STATE_KEY, EmulatorState, Received

# SendCloud is in Beijing: its days (status/query ``days``) and times are UTC+8.
CHINA = timezone(timedelta(hours=8))


@dataclass
class Record:
    """What SendCloud keeps of one accepted message beyond the shared Received."""

    template_id: str  # "" for sendCode / sendVoice
    msg_type: str  # "0" domestic SMS, "2" international SMS, "3" voice
    requested_at: datetime  # wall clock, China time
    tag: str = ""  # the request's tag, echoed in SMSHook events
    updated_at: datetime | None = None


@dataclass
class SendCloudExtras:
    """SendCloud-only emulator knobs and bookkeeping."""

    clock_skew_ms: int = 0  # the emulator's clock minus the real one
    force_code: int = 0  # answer every authenticated call with this code (0: off)
    answer_delay: float = 0.0  # seconds to hold an answer *after* processing
    unverified_templates: list[str] = field(default_factory=list)  # answer 432
    per_minute: int = 0  # messages per number per minute before 496 (0: no limit)
    per_day: int = 0  # messages per number per day before 498 (0: no limit)
    # Fault injection: the next N send/sendCode/sendVoice calls are processed (the
    # messages go out) and then the connection is closed without an answer.
    drop_answers: int = 0
    # Whether a 400 "duplicate request" answer repeats the first request's smsIds. The
    # seed documents only the code, so by default the answer carries ``info: {}``.
    duplicate_with_ids: bool = False
    # Numbers (as sent: "13800138000") that settle with an SMSHook code at processing:
    # 410/420 intercept lists, 430 unsubscribed.
    intercepted: dict[str, int] = field(default_factory=dict)
    # Requests per second the account is allowed (0: not watched), as a bucket of one
    # second's worth. The seed defines no refusal for a request rate (496/498 are per
    # number), so requests arriving with the bucket empty are counted (``over_rate``)
    # and answered as usual.
    rate_limit: int = 0
    hooks_sent: int = 0
    answers_dropped: int = 0
    calls: dict[str, int] = field(default_factory=dict)  # API requests by path
    peak_per_second: int = 0  # most API requests seen within one second
    first_call_at: float = 0.0  # wall clock (s) of the first API request, 0 if none
    last_call_at: float = 0.0  # and of the latest
    over_rate: int = 0  # API requests that found the ``rate_limit`` bucket empty
    recent: deque[float] = field(default_factory=deque)  # arrivals in the last second
    tokens: float = -1.0  # in the rate bucket (-1: full, nothing counted yet)
    tokens_at: float = 0.0
    requests: dict[str, tuple[float, list[str]]] = field(default_factory=dict)
    history: dict[str, deque[float]] = field(default_factory=dict)
    records: dict[str, Record] = field(default_factory=dict)  # smsId -> Record
    unhooked: deque[Received] = field(default_factory=deque)  # in acceptance order


EXTRAS_KEY: web.AppKey[SendCloudExtras] = web.AppKey("sendcloud_extras", SendCloudExtras)
_TUNABLE: tuple[str, ...] = ("clock_skew_ms", "force_code", "answer_delay", "unverified_templates")
_TUNABLE += ("per_minute", "per_day", "drop_answers", "duplicate_with_ids", "intercepted")
_TUNABLE += ("rate_limit",)
_COUNTERS: tuple[str, ...] = ("hooks_sent", "answers_dropped", "calls", "peak_per_second")
_COUNTERS += ("over_rate", "first_call_at", "last_call_at")


def count_call(extras: SendCloudExtras, path: str, now: float) -> None:
    """Counts one API request as it arrives, and whether it came beyond the rate."""
    extras.calls[path] = extras.calls.get(path, 0) + 1
    extras.last_call_at = time.time()
    extras.first_call_at = extras.first_call_at or extras.last_call_at
    recent = extras.recent
    while recent and now - recent[0] >= 1.0:
        recent.popleft()
    recent.append(now)
    rate = extras.rate_limit
    if rate:
        if extras.tokens < 0:
            extras.tokens = float(rate)
        else:
            extras.tokens = min(float(rate), extras.tokens + (now - extras.tokens_at) * rate)
        extras.tokens_at = now
        if extras.tokens < 1.0:
            extras.over_rate += 1
        else:
            extras.tokens -= 1.0
    extras.peak_per_second = max(extras.peak_per_second, len(recent))


def server_ms(extras: SendCloudExtras) -> int:
    return int(time.time() * 1000) + extras.clock_skew_ms


def china_now(extras: SendCloudExtras) -> datetime:
    return datetime.fromtimestamp(server_ms(extras) / 1000, UTC).astimezone(CHINA)


def settle(state: EmulatorState, item: Received, now: float) -> None:
    state.settle(item, now)
    if item.status == "undelivered" and not item.error_code:
        item.error_code = str(state.rng.choice((500, 590)))


def hook_form(sms_key: str, item: Received, record: Record | None, now_ms: int) -> dict[str, str]:
    """One SMSHook event for a settled message, signed as SendCloud signs it."""
    delivered = item.status == "delivered"
    stamp = str(now_ms)
    token = "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(32))
    form = {
        "event": "delivered" if delivered else "undelivered",
        "smsId": item.provider_message_id,
        "phone": item.phone,
        "statusCode": "200" if delivered else item.error_code,
        "message": "delivered" if delivered else "not delivered",
        "timestamp": stamp,
        "token": token,
        "signature": hmac.new(
            sms_key.encode(), (stamp + token).encode(), hashlib.sha256
        ).hexdigest(),
    }
    if record is not None and record.tag:
        form["tag"] = record.tag
    return form


async def _push_hooks(app: web.Application, session: aiohttp.ClientSession) -> None:
    """Settles accepted messages and POSTs each settled one to the webhook once."""
    state, extras = app[STATE_KEY], app[EXTRAS_KEY]
    while True:
        await asyncio.sleep(0.02)
        url, now = state.settings.webhook_url, time.monotonic()
        while url and extras.unhooked:
            item = extras.unhooked[0]
            settle(state, item, now)
            if item.status == "sent":
                break  # later ones were accepted later: not settled either
            extras.unhooked.popleft()
            record = extras.records.get(item.provider_message_id)
            form = hook_form(state.settings.credential_secret, item, record, server_ms(extras))
            try:
                async with session.post(url, data=form, timeout=aiohttp.ClientTimeout(total=2)):
                    extras.hooks_sent += 1
            except (aiohttp.ClientError, TimeoutError, OSError):
                pass  # SendCloud does not retry either; the status query still works


async def hook_pusher(app: web.Application) -> AsyncIterator[None]:
    async with aiohttp.ClientSession() as session:
        task = asyncio.create_task(_push_hooks(app, session), name="sendcloud-smshook")
        yield
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def get_extras(request: web.Request) -> web.Response:
    extras = request.app[EXTRAS_KEY]
    shown = (*_TUNABLE, *_COUNTERS)
    return web.json_response({k: getattr(extras, k) for k in shown})


async def set_extras(request: web.Request) -> web.Response:
    extras = request.app[EXTRAS_KEY]
    changes: dict[str, Any] = await request.json()
    unknown = sorted(set(changes) - set(_TUNABLE))
    if unknown:
        return web.json_response({"error": f"unknown controls {unknown}"}, status=400)
    for key, value in changes.items():
        setattr(extras, key, type(getattr(extras, key))(value))
    return await get_extras(request)
