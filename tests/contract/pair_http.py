"""Plivo configured as a declarative "http" provider from tests/contract/plivo.toml
alone, against the Plivo emulator, for the shared contract suite."""

from __future__ import annotations

import tomllib
from pathlib import Path

from server.domain.ports import Receipt, Transport
from server.emulators.common import EmulatorControls, EmulatorSettings, RunningEmulator
from server.emulators.plivo import build_app
from server.providers.loopback import LoopbackConfig
from server.providers.registry import build_transport
from server.routes_file import RoutingConfig, parse_routing
from tests.contract.pair import Pair

ROUTES = Path(__file__).with_name("plivo.toml")
AUTH_ID = "MAXXXXXXXXXXXXXXXXXX"
AUTH_TOKEN = "plivo-auth-token-0123456789"
HOOK_TOKEN = "hook-secret-4e1f0c"
ENV = {"PLIVO_AUTH_ID": AUTH_ID, "PLIVO_AUTH_TOKEN": AUTH_TOKEN, "PLIVO_HOOK_TOKEN": HOOK_TOKEN}


def routing(plivo_url: str, gateway_url: str, **env: str) -> RoutingConfig:
    """The routing file with its two addresses filled in, read as `smsgw serve` reads it."""
    text = ROUTES.read_text().replace("@PLIVO@", plivo_url).replace("@GATEWAY@", gateway_url)
    return parse_routing(tomllib.loads(text), {**ENV, **env})


async def _ignore(receipt: Receipt) -> None:
    """No receipt sink in the contract suite (only loopback pushes receipts to it)."""


def transport(config: RoutingConfig) -> Transport:
    (spec,) = config.providers
    return build_transport(spec, receipts=_ignore, loopback=LoopbackConfig())


async def start_pair(controls: EmulatorControls) -> Pair:
    settings = EmulatorSettings(
        credential_id=AUTH_ID, credential_secret=AUTH_TOKEN, controls=controls, seed=1
    )
    emulator = await RunningEmulator(build_app(settings)).start()
    # No gateway here: callbacks go to a closed port and are lost; statuses are polled.
    right = transport(routing(emulator.base_url, "http://127.0.0.1:9"))
    wrong = transport(
        routing(emulator.base_url, "http://127.0.0.1:9", PLIVO_AUTH_TOKEN="not-the-token")
    )
    pair = Pair("http", right, wrong, controls, emulator)
    pair.closers.extend([emulator.stop, right.close, wrong.close])
    return pair
