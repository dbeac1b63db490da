"""Starting provider emulators for end-to-end tests."""

from __future__ import annotations

from server.emulators import sendcloud as sendcloud_emulator
from server.emulators import skynoo as skynoo_emulator
from server.emulators.common import EmulatorControls, EmulatorSettings, RunningEmulator
from server.routes_file import ProviderSpec, RouteSpec, RoutingConfig

SKY = {"api_key": "app_emu", "api_secret": "sec_emu"}
CLOUD = {"sms_user": "sc-user", "sms_key": "sc-key-0123456789"}
CLOUD_TEMPLATE = {"30215": "Your order %order_no% has shipped."}


async def start_skynoo(emulators: list[RunningEmulator], **controls: object) -> RunningEmulator:
    settings = EmulatorSettings(
        credential_id=SKY["api_key"],
        credential_secret=SKY["api_secret"],
        controls=EmulatorControls(**controls),  # type: ignore[arg-type]
    )
    emulator = await RunningEmulator(skynoo_emulator.build_app(settings)).start()
    emulators.append(emulator)
    return emulator


def sky(emulator: RunningEmulator, name: str = "sky") -> ProviderSpec:
    return ProviderSpec(name, "skynoo", emulator.base_url, SKY, timeout_seconds=1.0)


def only(spec: ProviderSpec) -> RoutingConfig:
    return failover(spec)


def failover(*specs: ProviderSpec) -> RoutingConfig:
    """One route for every number: the providers in this order."""
    return RoutingConfig(specs, (RouteSpec(tuple(s.name for s in specs)),))


async def start_sendcloud(
    emulators: list[RunningEmulator], webhook_url: str | None = None, **controls: object
) -> RunningEmulator:
    settings = EmulatorSettings(
        credential_id=CLOUD["sms_user"],
        credential_secret=CLOUD["sms_key"],
        templates=CLOUD_TEMPLATE,
        webhook_url=webhook_url,
        controls=EmulatorControls(**controls),  # type: ignore[arg-type]
    )
    emulator = await RunningEmulator(sendcloud_emulator.build_app(settings)).start()
    emulators.append(emulator)
    return emulator


def cloud(emulator: RunningEmulator, name: str = "cloud") -> ProviderSpec:
    return ProviderSpec(
        name,
        "sendcloud",
        emulator.base_url,
        CLOUD,
        timeout_seconds=1.0,
        templates={"order_shipped": "30215"},
    )
