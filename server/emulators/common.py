"""What every provider emulator shares: fault injection, run-time controls, a record
of what it received, and a runner for tests."""

from __future__ import annotations

import asyncio
import json
import random
import socket
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web

FAULTS = ("http_500", "timeout", "garbage", "html", "drop")


@dataclass
class EmulatorControls:
    """Faults and timing; mutable while running (tests, or POST /_emulator/controls)."""

    fail_rate: float = 0.0  # share of API calls answered with ``fault``
    fault: str = "http_500"  # one of FAULTS
    latency: float = 0.0  # seconds added before every API answer
    delivery_delay: float = 0.2  # seconds until an accepted message settles
    outcome: str = "delivered"  # "delivered" or "undelivered" (how messages settle)
    # Partial answers: the share of numbers refused in a multi-number send
    # (SendCloud 311), or of ids left out of a status answer (Skynoo getStatus).
    partial_rate: float = 0.0
    timeout_seconds: float = 30.0  # how long the "timeout" fault hangs


@dataclass
class EmulatorSettings:
    """Credentials and provider-side data of one emulated account."""

    credential_id: str = "emulator-user"  # apiKey / smsUser / client_id
    credential_secret: str = "emulator-secret"  # apiSecret / smsKey / passcode
    # Provider template ids the account has, with their text (variables in the
    # provider's own syntax). Template-only providers refuse other ids.
    templates: dict[str, str] = field(default_factory=dict)
    webhook_url: str | None = None  # where delivery events are pushed (SendCloud)
    controls: EmulatorControls = field(default_factory=EmulatorControls)
    seed: int | None = None


@dataclass
class Received:
    """One message the emulator accepted."""

    provider_message_id: str
    phone: str
    content: str
    request_key: str = ""  # the caller's idempotency key, if any
    status: str = "sent"
    error_code: str = ""
    # time.monotonic() when it was accepted: one clock for every process on the machine
    # (Linux CLOCK_MONOTONIC), so a benchmark compares it with its own readings.
    accepted_at: float = 0.0


@dataclass(frozen=True)
class RecordedRequest:
    """One API request as it reached the emulator (before any fault), for tests that
    check the exact wire format against the provider's document."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def form(self) -> dict[str, str]:
        return dict(parse_qsl(self.body.decode(), keep_blank_values=True))


@dataclass
class EmulatorState:
    settings: EmulatorSettings
    received: list[Received] = field(default_factory=list)
    # The latest API requests (a long benchmark run keeps only the last ones).
    requests: deque[RecordedRequest] = field(default_factory=lambda: deque(maxlen=100_000))
    rng: random.Random = field(default_factory=random.Random)

    def by_id(self, provider_message_id: str) -> Received | None:
        for item in self.received:
            if item.provider_message_id == provider_message_id:
                return item
        return None

    def settle(self, item: Received, now: float) -> None:
        """Moves an accepted message to its final state once delivery_delay passed."""
        controls = self.settings.controls
        if item.status == "sent" and now - item.accepted_at >= controls.delivery_delay:
            item.status = controls.outcome


STATE_KEY: web.AppKey[EmulatorState] = web.AppKey("emulator_state", EmulatorState)


def fault_middleware() -> Callable[..., Awaitable[web.StreamResponse]]:
    """Applies latency and faults to the API routes (not to /_emulator/)."""

    @web.middleware
    async def middleware(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if request.path.startswith("/_emulator/"):
            return await handler(request)
        state = request.app[STATE_KEY]
        state.requests.append(
            RecordedRequest(
                request.method,
                request.path,
                request.query_string,
                dict(request.headers),
                await request.read(),  # kept by aiohttp for the handler
            )
        )
        controls = state.settings.controls
        if controls.latency:
            await asyncio.sleep(controls.latency)
        if controls.fail_rate and state.rng.random() < controls.fail_rate:
            if controls.fault == "timeout":
                await asyncio.sleep(controls.timeout_seconds)
                return web.json_response({"message": "too late"}, status=504)
            if controls.fault == "garbage":
                return web.Response(status=200, text='{"code": "200", "data": [trunc')
            if controls.fault == "html":
                return web.Response(
                    status=502, content_type="text/html", text="<html><h1>502 Bad Gateway</h1>"
                )
            if controls.fault == "drop":
                if request.transport is not None:
                    request.transport.close()
                raise ConnectionResetError("emulator dropped the connection")
            return web.json_response({"message": "internal error"}, status=500)
        return await handler(request)

    return middleware


async def _get_state(request: web.Request) -> web.Response:
    """Controls and the messages received; ``?phone_prefix=+86139`` keeps only those
    to numbers that start so (a benchmark's few among a campaign's many)."""
    state = request.app[STATE_KEY]
    prefix = request.query.get("phone_prefix", "")
    return web.json_response(
        {
            "controls": asdict(state.settings.controls),
            "received": [asdict(r) for r in state.received if r.phone.startswith(prefix)],
        }
    )


async def _set_controls(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    changes: dict[str, Any] = await request.json()
    controls = state.settings.controls
    for key, value in changes.items():
        if not hasattr(controls, key):
            return web.json_response({"error": f"unknown control {key!r}"}, status=400)
        setattr(controls, key, type(getattr(controls, key))(value))
    return web.json_response(asdict(controls))


def new_app(settings: EmulatorSettings) -> web.Application:
    """An aiohttp app with the shared state, fault middleware and control routes."""
    app = web.Application(middlewares=[fault_middleware()])
    state = EmulatorState(settings)
    if settings.seed is not None:
        state.rng.seed(settings.seed)
    app[STATE_KEY] = state
    app.router.add_get("/_emulator/state", _get_state)
    app.router.add_post("/_emulator/controls", _set_controls)
    return app


class RunningEmulator:
    """An emulator app served on 127.0.0.1 (port 0 by default), for tests and the CLI."""

    def __init__(self, app: web.Application, port: int = 0, host: str = "127.0.0.1") -> None:
        self.app = app
        self._host = host
        self._port = port
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def state(self) -> EmulatorState:
        return self.app[STATE_KEY]

    @property
    def base_url(self) -> str:
        return f"http://{self._host}:{self.port}"

    async def start(self) -> RunningEmulator:
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self._host, self._port))
        self.port = sock.getsockname()[1]
        await web.SockSite(self._runner, sock).start()
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
