"""The SendCloud transport against its emulator, for the contract suite."""

from __future__ import annotations

from server.emulators.common import EmulatorControls, EmulatorSettings, RunningEmulator
from server.emulators.sendcloud import build_app
from server.providers.sendcloud import SendCloudConfig, SendCloudTransport
from tests.contract.pair import Pair

SMS_USER = "sc-user"
SMS_KEY = "sc-key-0123456789"
TEMPLATE_ID = "30215"
TEMPLATE_TEXT = "【Shop】Your order %order_no% has shipped."


def settings(controls: EmulatorControls, webhook_url: str | None = None) -> EmulatorSettings:
    return EmulatorSettings(
        credential_id=SMS_USER,
        credential_secret=SMS_KEY,
        templates={TEMPLATE_ID: TEMPLATE_TEXT},
        webhook_url=webhook_url,
        controls=controls,
        seed=1,
    )


def config(base_url: str, *, sms_key: str = SMS_KEY, name: str = "sc1") -> SendCloudConfig:
    return SendCloudConfig(
        name=name,
        base_url=base_url,
        sms_user=SMS_USER,
        sms_key=sms_key,
        timeout=1.0,
        templates={"order_shipped": TEMPLATE_ID},
        sign_name="Shop",
    )


async def start_pair(controls: EmulatorControls) -> Pair:
    emulator = await RunningEmulator(build_app(settings(controls))).start()
    transport = SendCloudTransport(config(emulator.base_url))
    wrong = SendCloudTransport(config(emulator.base_url, sms_key="not-the-key"))
    pair = Pair("sendcloud", transport, wrong, controls, emulator)
    pair.closers.extend([emulator.stop, transport.close, wrong.close])
    return pair
