"""The loopback transport in the contract suite (it needs no emulator)."""

from __future__ import annotations

from server.domain.models import MessageStatus
from server.domain.ports import Receipt
from server.emulators.common import EmulatorControls
from server.providers.loopback import LoopbackConfig, LoopbackTransport
from tests.contract.pair import Pair


async def start_pair(controls: EmulatorControls) -> Pair:
    receipts: list[Receipt] = []

    async def sink(receipt: Receipt) -> None:
        receipts.append(receipt)

    outcome = (
        MessageStatus.DELIVERED if controls.outcome == "delivered" else MessageStatus.UNDELIVERED
    )
    transport = LoopbackTransport(
        LoopbackConfig(
            delivery_delay=controls.delivery_delay,
            failure_rate=controls.fail_rate,
            outcome=outcome,
        ),
        sink,
    )
    # Loopback has no credentials; "wrong credentials" cannot happen. The contract
    # test for them runs only for network providers.
    pair = Pair("loopback", transport, transport, controls)
    pair.closers.append(transport.close)
    return pair
