"""Starting provider emulators for end-to-end tests."""

from __future__ import annotations

from server.emulators import skynoo as skynoo_emulator
from server.emulators.common import EmulatorControls, EmulatorSettings, RunningEmulator
from server.routing_config import ProviderSpec, RouteSpec, RoutingConfig

SKY = {"api_key": "app_emu", "api_secret": "sec_emu"}


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
    return RoutingConfig((spec,), (RouteSpec((spec.name,)),))
