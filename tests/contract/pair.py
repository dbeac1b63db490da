"""What each provider's contract-test module returns: a transport wired to its emulator."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from server.domain.models import OutboundMessage, UseType
from server.domain.ports import Transport
from server.emulators.common import EmulatorControls, Received, RunningEmulator

CN_MOBILE = "+8613800138000"


@dataclass
class Pair:
    kind: str
    transport: Transport
    # The same provider account with a wrong secret: every send must be refused as final.
    wrong_credentials: Transport
    controls: EmulatorControls
    emulator: RunningEmulator | None = None  # None for loopback (no network)
    # Template code (ours) that this pair's transport maps to a provider template.
    template_code: str = "order_shipped"
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    # What the provider accepted, for a provider that is not an HTTP emulator (the
    # SMPP test SMSC); None: use ``emulator.state.received`` (or nothing, loopback).
    received: Callable[[], list[Received]] | None = None

    def provider_received(self) -> list[Received] | None:
        if self.emulator is not None:
            return self.emulator.state.received
        return self.received() if self.received is not None else None

    def message(self, message_id: str, *, to: str = CN_MOBILE) -> OutboundMessage:
        """A message this provider can carry: our template with its variables."""
        return OutboundMessage(
            id=message_id,
            account_id=1,
            to_number=to,
            body="Your order A-1 has shipped.",
            use_type=UseType.NOTIFICATION,
            attempts=1,
            template_id=7,
            template_code=self.template_code,
            data={"order_no": "A-1"},
        )

    async def close(self) -> None:
        for close in reversed(self.closers):
            await close()


# Each tests/contract/pair_<kind>.py defines:
#     async def start_pair(controls: EmulatorControls) -> Pair
# with fast timeouts (a transport request timeout of about 1 s).
StartPair = Callable[[EmulatorControls], Awaitable[Pair]]
