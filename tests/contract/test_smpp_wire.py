"""The SMPP transport on the wire, against the Net::SMPP test SMSC (tests/smsc): the
exact PDU fields it sends, long messages (UDH and message_payload), GSM-7 and UCS-2,
receipts combined per message, inbound messages, binds, window, throughput, and an
SMSC killed with a window open."""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from server.domain.inbound import InboundSms
from server.domain.models import MessageStatus, OutboundMessage, UseType
from server.domain.ports import Receipt, SendOutcome
from server.emulators.common import EmulatorControls
from server.providers.smpp import SmppTransport
from tests.contract.pair_smpp import config
from tests.eventually import eventually
from tests.smsc.runner import PASSWORD, SYSTEM_ID, Smsc, start_smsc


class Rig:
    def __init__(self) -> None:
        self.smscs: list[Smsc] = []
        self.transports: list[SmppTransport] = []
        self.receipts: list[Receipt] = []
        self.inbound: list[InboundSms] = []

    async def sink(self, receipt: Receipt) -> None:
        self.receipts.append(receipt)

    async def on_inbound(self, message: InboundSms) -> None:
        self.inbound.append(message)

    async def smsc(self, **controls: Any) -> Smsc:
        latency = controls.pop("latency", None)
        port = controls.pop("port", 0)
        reject = controls.pop("reject_prefix", "")
        first = controls.pop("receipt_first", False)
        smsc = await start_smsc(
            EmulatorControls(**controls),
            latency=latency,
            port=port,
            reject_prefix=reject,
            receipt_first=first,
        )
        self.smscs.append(smsc)
        return smsc

    def transport(self, smsc: Smsc, **changes: Any) -> SmppTransport:
        transport = SmppTransport(
            config(smsc.port, **changes), self.sink, on_inbound=self.on_inbound
        )
        self.transports.append(transport)
        return transport


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    rig = Rig()
    yield rig
    for transport in rig.transports:
        await transport.close()
    for smsc in rig.smscs:
        await smsc.stop()


def message(body: str, to: str = "+8613800138000") -> OutboundMessage:
    return OutboundMessage(
        id=uuid.uuid4().hex,
        account_id=1,
        to_number=to,
        body=body,
        use_type=UseType.NOTIFICATION,
        attempts=1,
    )


def receipt_of(rig: Rig, message_id: str) -> Callable[[], Awaitable[list[Receipt]]]:
    async def probe() -> list[Receipt]:
        return [r for r in rig.receipts if r.message_id == message_id]

    return probe


async def test_a_short_text_is_one_submit_sm_with_the_configured_fields(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    smsc = await rig.smsc(delivery_delay=0.1)
    transport = rig.transport(smsc)
    sent = message("Your code is 1234 @ £5")
    outcome = await transport.send(sent)
    assert outcome.accepted and outcome.provider_message_id
    (bind,) = smsc.records("pdu", "bind_transceiver")
    assert (bind["system_id"], bind["system_type"], bind["interface_version"]) == (
        SYSTEM_ID,
        "SMSGW",
        0x34,
    )
    (submit,) = smsc.submits()
    assert submit["source_addr"] == "SMSGW"
    assert (submit["source_addr_ton"], submit["source_addr_npi"]) == (5, 0)
    assert submit["destination_addr"] == "8613800138000"
    assert (submit["dest_addr_ton"], submit["dest_addr_npi"]) == (1, 1)
    assert submit["data_coding"] == 0
    assert submit["esm_class"] == 0
    assert submit["registered_delivery"] == 1
    # GSM 03.38, one septet an octet: "@" is 0x00 and "£" 0x01.
    assert bytes.fromhex(submit["short_message_hex"]) == "Your code is 1234 @ £5".encode("gsm03.38")
    assert bytes.fromhex(submit["short_message_hex"]).endswith(b"\x00 \x015")
    (receipt,) = await eventually(receipt_of(rig, sent.id), what="the receipt")
    assert receipt.status == MessageStatus.DELIVERED
    assert receipt.provider_message_id == outcome.provider_message_id
    assert PASSWORD not in caplog.text


async def test_a_long_gsm_text_goes_in_parts_with_one_udh_and_one_combined_receipt(
    rig: Rig,
) -> None:
    smsc = await rig.smsc(delivery_delay=0.1)
    transport = rig.transport(smsc)
    text = "Shipped " + "x" * 150 + "€" + "y" * 40  # 200 characters, € costs two septets
    sent = message(text)
    outcome = await transport.send(sent)
    assert outcome.accepted
    submits = smsc.submits()
    assert len(submits) == 2
    bodies = [bytes.fromhex(s["short_message_hex"]) for s in submits]
    assert all(s["esm_class"] == 0x40 and s["data_coding"] == 0 for s in submits)
    reference = bodies[0][3]
    assert [b[:6] for b in bodies] == [
        bytes([5, 0, 3, reference, 2, 1]),
        bytes([5, 0, 3, reference, 2, 2]),
    ]
    assert len(bodies[0]) - 6 == 153
    assert b"".join(b[6:] for b in bodies).decode("gsm03.38") == text
    answers = smsc.records("submit_sm_resp")
    assert outcome.provider_message_id == answers[0]["message_id"]
    await eventually(lambda: len(smsc.records("receipt")) == 2, what="two part receipts")
    (receipt,) = await eventually(receipt_of(rig, sent.id), what="the combined receipt")
    assert receipt.status == MessageStatus.DELIVERED
    await asyncio.sleep(0.2)
    assert [r.message_id for r in rig.receipts] == [sent.id]  # one receipt per message


async def test_a_long_ucs2_text_is_split_at_67_units_and_an_undelivered_part_fails_it(
    rig: Rig,
) -> None:
    smsc = await rig.smsc(delivery_delay=0.1, outcome="undelivered")
    transport = rig.transport(smsc)
    text = "您的订单已发货" * 15  # 105 UTF-16 units
    sent = message(text)
    assert (await transport.send(sent)).accepted
    submits = smsc.submits()
    assert [s["data_coding"] for s in submits] == [8, 8]
    bodies = [bytes.fromhex(s["short_message_hex"]) for s in submits]
    assert len(bodies[0]) == 6 + 2 * 67
    assert b"".join(b[6:] for b in bodies).decode("utf-16-be") == text
    (receipt,) = await eventually(receipt_of(rig, sent.id), what="the combined receipt")
    assert receipt.status == MessageStatus.UNDELIVERED
    assert receipt.error_code.startswith("SMPP_UNDELIV")


async def test_payload_mode_sends_a_long_text_in_one_message_payload_tlv(rig: Rig) -> None:
    smsc = await rig.smsc()
    transport = rig.transport(smsc, long_messages="payload")
    text = "z" * 300
    assert (await transport.send(message(text))).accepted
    (submit,) = smsc.submits()
    assert submit["short_message_hex"] == ""
    assert submit["esm_class"] == 0
    assert bytes.fromhex(submit["tlvs"]["0x0424"]).decode("gsm03.38") == text


async def test_a_receipt_for_a_message_sent_before_a_restart_is_reported_by_smsc_id(
    rig: Rig,
) -> None:
    smsc = await rig.smsc(delivery_delay=0.8)
    first = rig.transport(smsc)
    outcome = await first.send(message("before the restart"))
    assert outcome.accepted
    await first.close()  # "the process ends" before the receipt comes
    second = rig.transport(smsc)
    second.start()
    (receipt,) = await eventually(
        lambda: [r for r in rig.receipts if r.provider_message_id == outcome.provider_message_id],
        within=5,
        what="the held receipt",
    )
    # This process never sent it: no message id, so the recorder matches it by the
    # SMSC's id (or parks it until the send is recorded).
    assert receipt.message_id == ""
    assert receipt.status == MessageStatus.DELIVERED


async def test_receipts_that_overtake_their_answers_are_held_and_combined(rig: Rig) -> None:
    smsc = await rig.smsc(receipt_first=True)
    transport = rig.transport(smsc)
    sent = message("Long " * 40)  # two parts, each receipt before its submit_sm_resp
    outcome = await transport.send(sent)
    assert outcome.accepted
    receipts = smsc.records("receipt")
    answers = smsc.records("submit_sm_resp")
    assert [r["message_id"] for r in receipts] == [a["message_id"] for a in answers]
    assert all(r["t"] <= a["t"] for r, a in zip(receipts, answers, strict=True))
    (receipt,) = await eventually(receipt_of(rig, sent.id), what="the combined receipt")
    assert (receipt.status, receipt.provider_message_id) == (
        MessageStatus.DELIVERED,
        outcome.provider_message_id,
    )
    await asyncio.sleep(0.7)  # past the transport's grace: nothing reported twice
    assert rig.receipts == [receipt]


async def test_an_inbound_message_goes_to_the_hook_with_its_parts_joined(rig: Rig) -> None:
    smsc = await rig.smsc()
    transport = rig.transport(smsc)
    transport.start()
    await eventually(lambda: transport.binds[0].bound.is_set(), what="bound")
    await smsc.command(
        cmd="mo",
        source_addr="8613900139000",
        destination_addr="10690000",
        short_message_hex="STOP".encode("gsm03.38").hex(),
        data_coding=0,
    )
    (mo,) = await eventually(lambda: list(rig.inbound), what="the inbound message")
    assert (mo.provider, mo.from_number, mo.to_number, mo.text) == (
        "smpp1",
        "+8613900139000",
        "10690000",
        "STOP",
    )
    for number, chunk in ((2, "世界"), (1, "你好")):
        udh = bytes([5, 0, 3, 9, 2, number])
        await smsc.command(
            cmd="mo",
            source_addr="8613900139000",
            destination_addr="10690000",
            short_message_hex=(udh + chunk.encode("utf-16-be")).hex(),
            data_coding=8,
            esm_class=0x40,
        )
    await eventually(lambda: len(rig.inbound) == 2, what="the joined message")
    assert rig.inbound[1].text == "你好世界"


async def test_several_binds_share_the_sends(rig: Rig) -> None:
    smsc = await rig.smsc(latency=0.2)
    transport = rig.transport(smsc, binds=2, window=2)
    transport.start()
    await eventually(lambda: all(b.bound.is_set() for b in transport.binds), what="two binds")
    outcomes = await asyncio.gather(*(transport.send(message(f"m{i}")) for i in range(6)))
    assert all(o.accepted for o in outcomes)
    assert len(smsc.records("pdu", "bind_transceiver")) == 2
    per_conn = Counter(s["conn"] for s in smsc.submits())
    assert len(per_conn) == 2 and sum(per_conn.values()) == 6


async def test_the_window_bounds_the_submit_sm_without_an_answer(rig: Rig) -> None:
    smsc = await rig.smsc(latency=0.15)
    transport = rig.transport(smsc, window=2)
    outcomes = await asyncio.gather(*(transport.send(message(f"w{i}")) for i in range(6)))
    assert all(o.accepted for o in outcomes)
    open_most = 0
    outstanding = 0
    for record in smsc.records():
        if record.get("cmd") == "submit_sm":
            outstanding += 1
            open_most = max(open_most, outstanding)
        elif record["event"] == "submit_sm_resp":
            outstanding -= 1
    assert open_most == 2


async def test_the_throughput_cap_spaces_the_submit_sm(rig: Rig) -> None:
    smsc = await rig.smsc()
    transport = rig.transport(smsc, throughput=5)
    transport.start()
    await eventually(lambda: transport.binds[0].bound.is_set(), what="bound")
    started = time.monotonic()
    outcomes = await asyncio.gather(*(transport.send(message(f"t{i}")) for i in range(10)))
    assert all(o.accepted for o in outcomes)
    # A second's worth at once, then five a second.
    assert time.monotonic() - started >= 0.9
    times = sorted(s["t"] for s in smsc.submits())
    assert times[-1] - times[0] >= 0.9


async def test_an_smsc_killed_mid_window_loses_nothing_and_resends_only_the_unanswered(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="server.providers.smpp")
    first = await rig.smsc(latency=0.3)
    transport = rig.transport(first, window=5, reconnect_min=0.1, reconnect_max=0.3, timeout=2.0)
    numbers = [f"+86138001380{i:02d}" for i in range(10)]
    messages = {m.to_number.lstrip("+"): m for m in (message("kill", to=n) for n in numbers)}
    sends = {number: asyncio.create_task(transport.send(m)) for number, m in messages.items()}
    await eventually(lambda: len(first.records("submit_sm_resp")) >= 3, what="some answers")
    await first.kill()
    in_flight = {s["destination_addr"] for s in first.submits()} - {
        s["destination_addr"]
        for s in first.submits()
        if (s["conn"], s["seq"]) in {(a["conn"], a["seq"]) for a in first.records("submit_sm_resp")}
    }
    outcomes: dict[str, SendOutcome] = {n: await t for n, t in sends.items()}
    answered_first = {
        s["destination_addr"]
        for s in first.submits()
        if (s["conn"], s["seq"]) in {(a["conn"], a["seq"]) for a in first.records("submit_sm_resp")}
    }
    assert {n for n, o in outcomes.items() if o.accepted} == answered_first
    failed = [n for n, o in outcomes.items() if not o.accepted]
    assert failed and all(outcomes[n].retryable for n in failed)
    await asyncio.sleep(1.0)  # the SMSC stays away a second: the binds back off
    # The SMSC comes back on the same port; the dispatcher would send the failed again.
    second = await rig.smsc(port=first.port)
    again = await asyncio.gather(*(transport.send(messages[n]) for n in failed))
    assert all(o.accepted for o in again), again
    accepted = Counter(
        s["destination_addr"]
        for smsc in (first, second)
        for s in smsc.submits()
        if (s["conn"], s["seq"]) in {(a["conn"], a["seq"]) for a in smsc.records("submit_sm_resp")}
    )
    # Nothing lost, nothing accepted twice.
    assert accepted == Counter({n.lstrip("+"): 1 for n in numbers})
    # Sent twice: only the submit_sm in the window when the SMSC died (SMPP allows it:
    # their answers never came), counted on both sides. The SMSC saw some of them; the
    # transport also counts those it wrote that the SMSC died before reading.
    seen = Counter(s["destination_addr"] for smsc in (first, second) for s in smsc.submits())
    smsc_twice = {n for n, count in seen.items() if count > 1}
    assert smsc_twice == in_flight
    by_id = {m.id: number for number, m in messages.items()}
    transport_twice = {by_id[i] for i, count in transport.submitted.items() if count > 1}
    assert smsc_twice <= transport_twice <= set(failed)
    assert max(transport.submitted.values()) == 2
    assert sum(transport.submitted.values()) == len(numbers) + len(transport_twice)
    assert transport.binds[0].binds_made == 2
    # While the SMSC was away, bind attempts backed off: doubling, capped.
    waits = [float(w) for w in re.findall(r"again in ([0-9.]+) s", caplog.text)]
    assert len(waits) >= 3
    assert waits == sorted(waits) and waits[0] == 0.1 and max(waits) == 0.3


async def test_answers_map_to_final_or_retryable_refusals(rig: Rig) -> None:
    smsc = await rig.smsc(reject_prefix="999")
    transport = rig.transport(smsc)
    refused = await transport.send(message("hello", to="+999123456"))
    assert (refused.accepted, refused.retryable) == (False, False)
    assert refused.final_status == MessageStatus.REJECTED
    assert refused.error_code == "SMPP_ESME_RINVDSTADR"
    await smsc.command(cmd="set", **{"fail-rate": 1.0, "fault": "html"})
    await eventually(lambda: smsc.records("set"), what="the SMSC throttling")
    throttled = await transport.send(message("hello"))
    assert (throttled.accepted, throttled.retryable) == (False, True)
    assert throttled.error_code == "SMPP_ESME_RTHROTTLED"
