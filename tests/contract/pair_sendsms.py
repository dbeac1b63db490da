"""The sendsms transport against its emulator, for the shared contract suite."""

from __future__ import annotations

from server.emulators.common import EmulatorControls, EmulatorSettings, RunningEmulator
from server.emulators.sendsms import build_app
from server.providers.sendsms import SendsmsConfig, SendsmsTransport
from tests.contract.pair import Pair

TEMPLET_ID = "t1"
TEMPLATE_TEXT = "Your order ${order_no} has shipped. [Cookpad]"


async def start_pair(controls: EmulatorControls) -> Pair:
    settings = EmulatorSettings(
        credential_id="cookpad_Server_001",
        credential_secret="ARDOR-7JF3-8F2E-QUWZ-CAN7F",
        templates={TEMPLET_ID: TEMPLATE_TEXT},
        controls=controls,
        seed=2,
    )
    # The suite sends several messages to one number in quick succession; the
    # per-number window is tested in tests/providers/test_sendsms.py.
    emulator = await RunningEmulator(build_app(settings, per_number_seconds=0.0)).start()
    config = SendsmsConfig(
        name="sendsms1",
        base_url=emulator.base_url,
        client_id=settings.credential_id,
        passcode=settings.credential_secret,
        timeout=1.0,
        templates={"order_shipped": TEMPLET_ID},
    )
    transport = SendsmsTransport(config)
    wrong = SendsmsTransport(
        SendsmsConfig(
            name="sendsms1",
            base_url=emulator.base_url,
            client_id=settings.credential_id,
            passcode="WRONG-PASSCODE",
            timeout=1.0,
            templates={"order_shipped": TEMPLET_ID},
        )
    )
    pair = Pair("sendsms", transport, wrong, controls, emulator=emulator)
    pair.closers.extend([emulator.stop, transport.close, wrong.close])
    return pair
