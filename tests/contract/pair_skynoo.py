"""The Skynoo transport against its emulator, for the shared contract suite."""

from __future__ import annotations

from dataclasses import replace

from server.emulators.common import EmulatorControls, EmulatorSettings, RunningEmulator
from server.emulators.skynoo import build_app
from server.providers.skynoo import SkynooConfig, SkynooTransport
from tests.contract.pair import Pair

API_KEY = "app_emulator"
API_SECRET = "sec_emulator"
# Skynoo template id → text, as the account's console would hold it.
TEMPLATES = {"15": "Your order #order_no# has shipped."}


async def start_pair(controls: EmulatorControls) -> Pair:
    settings = EmulatorSettings(
        credential_id=API_KEY,
        credential_secret=API_SECRET,
        templates=dict(TEMPLATES),
        controls=controls,
    )
    emulator = await RunningEmulator(build_app(settings)).start()
    config = SkynooConfig(
        name="sky1",
        base_url=emulator.base_url,
        api_key=API_KEY,
        api_secret=API_SECRET,
        timeout=1.0,
        templates={"order_shipped": "15"},
    )
    transport = SkynooTransport(config)
    wrong = SkynooTransport(replace(config, api_secret="sec_wrong"))
    pair = Pair("skynoo", transport, wrong, controls, emulator)
    pair.closers.extend([emulator.stop, transport.close, wrong.close])
    return pair
