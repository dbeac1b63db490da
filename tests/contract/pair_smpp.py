"""The SMPP transport against the Net::SMPP test SMSC (tests/smsc), for the shared
contract suite."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from server.domain.ports import Receipt
from server.emulators.common import EmulatorControls
from server.providers.smpp import SmppConfig, SmppTransport
from tests.contract.pair import Pair
from tests.smsc.runner import PASSWORD, SYSTEM_ID, start_smsc


def config(port: int, **changes: Any) -> SmppConfig:
    base = SmppConfig(
        name="smpp1",
        host="127.0.0.1",
        port=port,
        system_id=SYSTEM_ID,
        password=PASSWORD,
        system_type="SMSGW",
        source_addr="SMSGW",
        timeout=1.0,
        reconnect_min=0.1,
        reconnect_max=0.5,
        orphan_grace=0.5,
    )
    return replace(base, **changes)


async def start_pair(controls: EmulatorControls) -> Pair:
    smsc = await start_smsc(controls)
    receipts: list[Receipt] = []

    async def sink(receipt: Receipt) -> None:
        receipts.append(receipt)

    transport = SmppTransport(config(smsc.port), sink)
    wrong = SmppTransport(config(smsc.port, password="wrong-pw"), sink)
    pair = Pair("smpp", transport, wrong, controls, received=smsc.received)
    pair.closers.extend([smsc.stop, transport.close, wrong.close])
    return pair
