"""The Twilio transport against its emulator, for the shared contract suite."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from server.emulators.common import EmulatorControls, EmulatorSettings, RunningEmulator
from server.emulators.twilio import build_app
from server.providers.twilio import TwilioConfig, TwilioTransport
from tests.contract.pair import Pair

ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
AUTH_TOKEN = "twilio-auth-token-0123456789abcd"
FROM = "+15005550006"


def config(base_url: str, **changes: Any) -> TwilioConfig:
    base = TwilioConfig(
        name="tw1",
        base_url=base_url,
        account_sid=ACCOUNT_SID,
        auth_token=AUTH_TOKEN,
        timeout=1.0,
        from_number=FROM,
    )
    return replace(base, **changes)


async def start_pair(controls: EmulatorControls) -> Pair:
    settings = EmulatorSettings(
        credential_id=ACCOUNT_SID, credential_secret=AUTH_TOKEN, controls=controls, seed=1
    )
    emulator = await RunningEmulator(build_app(settings, numbers=[FROM])).start()
    transport = TwilioTransport(config(emulator.base_url))
    wrong = TwilioTransport(config(emulator.base_url, auth_token="not-the-token"))
    pair = Pair("twilio", transport, wrong, controls, emulator)
    pair.closers.extend([emulator.stop, transport.close, wrong.close])
    return pair
