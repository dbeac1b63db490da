"""Parts of the crash test: a ``smsgw serve`` that restarts on the same ports, two
provider emulators routed by country, calls retried until their answer is definite,
and what the database says about leases at the moment of a kill.

The gateway keeps its ports across restarts, as a supervised process would, so the
callers' channel and SendCloud's webhook URL stay valid (``outage_support.serve``
with fixed ``ports``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TypeVar

import asyncpg
import grpc

from server.emulators import sendcloud as sendcloud_emulator
from server.emulators import skynoo as skynoo_emulator
from server.emulators.common import EmulatorControls, EmulatorSettings, RunningEmulator
from tests.e2e.emulated import CLOUD, SKY
from tests.eventually import eventually

T = TypeVar("T")

# Answers that say nothing about the outcome: the call is made again, same request_id.
INDEFINITE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
# SendCloud template ids (texts in SendCloud's %var% syntax) for our template codes.
CLOUD_TEMPLATES = {
    "30215": "Your order %order_no% has shipped.",
    "30216": "Your login code is %code%.",
}
CLOUD_IDS = {"order_shipped": "30215", "login_code": "30216"}
CLOUD_PREFIX = "+86"  # routed to SendCloud; every other number goes to Skynoo


async def start_emulators(
    emulators: list[RunningEmulator], webhook_url: str, delivery_delay: float
) -> tuple[RunningEmulator, RunningEmulator]:
    """A Skynoo and a SendCloud emulator (SMSHook to ``webhook_url``), both delivering
    every message ``delivery_delay`` s after accepting it."""
    sky = EmulatorSettings(
        credential_id=SKY["api_key"],
        credential_secret=SKY["api_secret"],
        controls=EmulatorControls(delivery_delay=delivery_delay),
    )
    cloud = EmulatorSettings(
        credential_id=CLOUD["sms_user"],
        credential_secret=CLOUD["sms_key"],
        templates=dict(CLOUD_TEMPLATES),
        webhook_url=webhook_url,
        controls=EmulatorControls(delivery_delay=delivery_delay),
    )
    for app in (skynoo_emulator.build_app(sky), sendcloud_emulator.build_app(cloud)):
        emulators.append(await RunningEmulator(app).start())
    return emulators[-2], emulators[-1]


def routing_config(folder: Path, sky_url: str, cloud_url: str) -> dict[str, str]:
    """Environment for smsgw serve: +86 numbers to SendCloud (templates only, with
    our message id as sendRequestId), all others to Skynoo (no idempotency key)."""
    templates = ", ".join(f'{code} = "{tid}"' for code, tid in CLOUD_IDS.items())
    path = folder / "smsgw.toml"
    path.write_text(
        "[providers.sky]\n"
        'kind = "skynoo"\n'
        f'base_url = "{sky_url}"\n'
        'credentials = { api_key = "CRASH_SKY_KEY", api_secret = "CRASH_SKY_SECRET" }\n'
        "[providers.cloud]\n"
        'kind = "sendcloud"\n'
        f'base_url = "{cloud_url}"\n'
        'credentials = { sms_user = "CRASH_CLOUD_USER", sms_key = "CRASH_CLOUD_KEY" }\n'
        f"templates = {{ {templates} }}\n"
        "[[routes]]\n"
        f'prefixes = ["{CLOUD_PREFIX}"]\n'
        'providers = ["cloud"]\n'
        "[[routes]]\n"
        'providers = ["sky"]\n'
    )
    return {
        "SMSGW_CONFIG": str(path),
        "CRASH_SKY_KEY": SKY["api_key"],
        "CRASH_SKY_SECRET": SKY["api_secret"],
        "CRASH_CLOUD_USER": CLOUD["sms_user"],
        "CRASH_CLOUD_KEY": CLOUD["sms_key"],
    }


@dataclass
class Outcome:
    """How one call ended after its retries: OK with a reply, or a definite refusal."""

    code: grpc.StatusCode
    reply: object | None
    retries: int
    details: str = ""


async def until_definite(
    call: Callable[[], Awaitable[T]], *, within: float, pause: float = 0.1
) -> Outcome:
    """Makes ``call`` (the same request, so the same request_id) until it answers OK or
    a definite refusal; UNAVAILABLE and DEADLINE_EXCEEDED (the server died, or is
    starting) are retried. Raises AssertionError if no definite answer comes in time."""
    deadline = time.monotonic() + within
    retries = 0
    while True:
        try:
            return Outcome(grpc.StatusCode.OK, await call(), retries)
        except grpc.aio.AioRpcError as exc:
            if exc.code() not in INDEFINITE:
                return Outcome(exc.code(), None, retries, exc.details() or "")
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"no definite answer within {within} s: {exc.code().name} {exc.details()}"
                ) from exc
        retries += 1
        await asyncio.sleep(pause)


@dataclass(frozen=True)
class Lease:
    """A message claimed by a worker and not yet recorded as handed over."""

    mobile: str
    attempts: int  # claims so far, this one included
    until: datetime  # when the lease runs out (database clock)


@dataclass
class Kill:
    """One SIGKILL: the messages leased at that moment, and the mobiles the provider
    emulators had received by then."""

    leased: dict[str, Lease] = field(default_factory=dict)  # by message id
    at_provider: set[str] = field(default_factory=set)


async def wait_sessions_gone(conn: asyncpg.Connection, within: float = 10.0) -> None:
    """Waits until no other session is connected to this database: the killed
    process's backends have noticed and ended (a COMMIT it sent has landed or not)."""
    await eventually(
        lambda: conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid() "
            "AND backend_type = 'client backend'"
        ),
        until=lambda sessions: sessions == 0,
        within=within,
        interval=0.02,
        what="the killed server's database sessions ended",
    )


async def leased_now(conn: asyncpg.Connection) -> dict[str, Lease]:
    """Messages claimed by a worker whose lease has not run out and whose outcome is
    not recorded (PENDING or QUEUED): with the server dead, nobody will finish them
    until the lease expires and a worker of the next process takes them over."""
    rows = await conn.fetch(
        "SELECT id, to_number, attempts, claimed_until FROM messages "
        # 'infinity': a batch's message not announced yet, claimed by no worker.
        "WHERE status IN (1, 2) AND claimed_until > now() AND claimed_until <> 'infinity'"
    )
    return {r["id"]: Lease(r["to_number"], r["attempts"], r["claimed_until"]) for r in rows}
