"""SendCloud emulator state beyond the shared one: its test controls, bookkeeping,
settling with SMSHook codes, and the SMSHook pusher (a background task)."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from server.emulators.common import STATE_KEY, EmulatorState, Received
from server.providers.sendcloud_hook import signed_hook_form


@dataclass
class SendCloudExtras:
    """SendCloud-only emulator knobs and bookkeeping."""

    clock_skew_ms: int = 0  # the emulator's clock minus the real one
    force_code: int = 0  # answer every authenticated call with this code (0: off)
    answer_delay: float = 0.0  # seconds to hold an answer *after* processing
    unverified_templates: list[str] = field(default_factory=list)  # answer 432
    per_minute: int = 0  # messages per number per minute before 496 (0: no limit)
    per_day: int = 0  # messages per number per day before 498 (0: no limit)
    hooks_sent: int = 0
    requests: dict[str, tuple[float, list[str]]] = field(default_factory=dict)
    history: dict[str, deque[float]] = field(default_factory=dict)
    unhooked: deque[Received] = field(default_factory=deque)  # in acceptance order


EXTRAS_KEY: web.AppKey[SendCloudExtras] = web.AppKey("sendcloud_extras", SendCloudExtras)
_TUNABLE: tuple[str, ...] = ("clock_skew_ms", "force_code", "answer_delay", "unverified_templates")
_TUNABLE += ("per_minute", "per_day")


def server_ms(extras: SendCloudExtras) -> int:
    return int(time.time() * 1000) + extras.clock_skew_ms


def settle(state: EmulatorState, item: Received, now: float) -> None:
    state.settle(item, now)
    if item.status == "undelivered" and not item.error_code:
        item.error_code = str(state.rng.choice((500, 590)))


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
            delivered = item.status == "delivered"
            form = signed_hook_form(
                state.settings.credential_secret,
                "delivered" if delivered else "undelivered",
                item.provider_message_id,
                item.phone,
                "200" if delivered else item.error_code,
                server_ms(extras),
            )
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
    return web.json_response({k: getattr(extras, k) for k in (*_TUNABLE, "hooks_sent")})


async def set_extras(request: web.Request) -> web.Response:
    extras = request.app[EXTRAS_KEY]
    changes: dict[str, Any] = await request.json()
    unknown = sorted(set(changes) - set(_TUNABLE))
    if unknown:
        return web.json_response({"error": f"unknown controls {unknown}"}, status=400)
    for key, value in changes.items():
        setattr(extras, key, type(getattr(extras, key))(value))
    return await get_extras(request)
