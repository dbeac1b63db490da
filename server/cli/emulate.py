"""``smsgw emulate KIND``: a provider emulator (written from the provider's document)
on a port, to try routing and faults by hand."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from collections.abc import Callable
from typing import Any

from aiohttp import web

from server.emulators.common import FAULTS, EmulatorControls, EmulatorSettings, RunningEmulator


def _emulators() -> dict[str, Callable[[EmulatorSettings], web.Application]]:
    """The emulators by kind (imported when one is run)."""
    from server.emulators import sendcloud, sendsms, skynoo, twilio

    return {
        "skynoo": skynoo.build_app,
        "sendcloud": sendcloud.build_app,
        "sendsms": sendsms.build_app,
        # Twilio: the Account SID and auth token; sends From +15005550006.
        "twilio": twilio.build_app,
    }


EMULATOR_KINDS = ("skynoo", "sendcloud", "sendsms", "twilio")


def add_commands(commands: Any) -> None:
    emulate = commands.add_parser(
        "emulate", help="run a provider emulator (skynoo, sendcloud, sendsms, twilio) on 127.0.0.1"
    )
    emulate.add_argument("kind", choices=EMULATOR_KINDS)
    emulate.add_argument("--port", type=int, default=0, help="0 picks a free port")
    emulate.add_argument("--host", default="127.0.0.1")
    emulate.add_argument(
        "--credential-id", default="emulator-user", help="apiKey/smsUser/client_id/AccountSid"
    )
    emulate.add_argument(
        "--credential-secret",
        default="emulator-secret",
        help="apiSecret/smsKey/passcode/auth token",
    )
    emulate.add_argument(
        "--template", action="append", default=[], metavar="ID=TEXT", help="a provider template"
    )
    emulate.add_argument("--webhook-url", help="where delivery events are pushed (sendcloud)")
    emulate.add_argument("--fail-rate", type=float, default=0.0)
    emulate.add_argument("--fault", choices=FAULTS, default="http_500")
    emulate.add_argument("--latency", type=float, default=0.0, help="seconds added per answer")
    emulate.add_argument("--delivery-delay", type=float, default=1.0)
    emulate.add_argument("--outcome", choices=("delivered", "undelivered"), default="delivered")
    emulate.set_defaults(handler=lambda args: asyncio.run(_emulate(args)))


async def _emulate(args: argparse.Namespace) -> int:
    templates: dict[str, str] = {}
    for item in args.template:
        template_id, sep, text = item.partition("=")
        if not sep:
            print(f"smsgw: --template must be ID=TEXT, got {item!r}", file=sys.stderr)
            return 2
        templates[template_id] = text
    settings = EmulatorSettings(
        credential_id=args.credential_id,
        credential_secret=args.credential_secret,
        templates=templates,
        webhook_url=args.webhook_url,
        controls=EmulatorControls(
            fail_rate=args.fail_rate,
            fault=args.fault,
            latency=args.latency,
            delivery_delay=args.delivery_delay,
            outcome=args.outcome,
        ),
    )
    build_app = _emulators()[args.kind]
    emulator = await RunningEmulator(build_app(settings), args.port, args.host).start()
    print(json.dumps({"kind": args.kind, "base_url": emulator.base_url}), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await emulator.stop()
    return 0
