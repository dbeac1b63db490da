"""Positional providers get a template's values in the order its text declares them
(issue 15.1): sendsms fills ``p1..pn`` by position, and the values are stored in a
jsonb column that does not keep key order, so any order but the template's puts the
wrong words in front of a person."""

from __future__ import annotations

from sms.v1 import batch_pb2, common_pb2, message_pb2, template_pb2

from server.emulators import sendsms as sendsms_emulator
from server.emulators.common import EmulatorControls, EmulatorSettings, RunningEmulator
from server.routes_file import ProviderSpec
from tests.e2e.batch_calls import create, final
from tests.e2e.conftest import Client, GatewayFactory, final_state
from tests.e2e.emulated import only

FAST = {"retry_base_seconds": 0.05, "poll_interval_seconds": 0.2}
CREDENTIALS = {"client_id": "cookpad_Server_001", "passcode": "ARDOR-7JF3"}
# Eleven variables in an order that is neither alphabetical nor jsonb's (shorter keys
# first), so p10 and p11 would also go wrong if sorted as text ("p10" < "p2").
NAMES = ["zone", "status", "order_no", "b", "eta", "alpha", "c10", "c2", "mid", "x", "yy"]
OURS = "Order " + " ".join(f"#{n}#" for n in NAMES) + " end"
THEIRS = "Order " + " ".join(f"${{{n}}}" for n in NAMES) + " end"


def values(tag: str) -> dict[str, str]:
    return {name: f"{tag}{i}" for i, name in enumerate(NAMES, start=1)}


def rendered(tag: str) -> str:
    return "Order " + " ".join(f"{tag}{i}" for i in range(1, len(NAMES) + 1)) + " end"


async def start(
    start_gateway: GatewayFactory, emulators: list[RunningEmulator]
) -> tuple[Client, RunningEmulator, int]:
    settings = EmulatorSettings(
        credential_id=CREDENTIALS["client_id"],
        credential_secret=CREDENTIALS["passcode"],
        templates={"t11": THEIRS},
        controls=EmulatorControls(delivery_delay=0.1),
    )
    emulator = await RunningEmulator(sendsms_emulator.build_app(settings)).start()
    emulators.append(emulator)
    spec = ProviderSpec(
        "sms",
        "sendsms",
        emulator.base_url,
        CREDENTIALS,
        timeout_seconds=1.0,
        templates={"eleven": "t11"},
    )
    running = await start_gateway(routing=only(spec), **FAST)
    client = await running.client()
    template = await client.templates.CreateTemplate(
        template_pb2.CreateTemplateRequest(
            template=template_pb2.Template(
                code="eleven", content=OURS, use_type=common_pb2.USE_TYPE_NOTIFICATION
            )
        ),
        metadata=client.metadata,
    )
    return client, emulator, template.id


async def test_a_single_send_fills_p1_to_p11_in_the_templates_order(
    start_gateway: GatewayFactory, emulators: list[RunningEmulator]
) -> None:
    client, emulator, template_id = await start(start_gateway, emulators)
    reply = await client.messages.SendMessage(
        message_pb2.SendMessageRequest(
            mobile="+8613800138000",
            use_type=common_pb2.USE_TYPE_NOTIFICATION,
            template_id=template_id,
            data=values("v"),
        ),
        metadata=client.metadata,
    )
    state = await final_state(client, reply.id)
    assert (state.status, state.provider) == (common_pb2.MESSAGE_STATUS_DELIVERED, "sms")
    assert [r.content for r in emulator.state.received] == [rendered("v")]


async def test_a_batch_fills_every_numbers_values_in_the_templates_order(
    start_gateway: GatewayFactory, emulators: list[RunningEmulator]
) -> None:
    client, emulator, template_id = await start(start_gateway, emulators)
    numbers = ["+8613800138001", "+8613800138002", "+8613800138003"]
    batch = await create(
        client,
        template_id=template_id,
        numbers=numbers,
        template_data={
            number: batch_pb2.TemplateData(values=values(f"n{k}-"))
            for k, number in enumerate(numbers)
        },
    )
    assert (await final(client, batch.task_id)).status == common_pb2.BATCH_STATUS_SUCCEEDED
    got = {r.phone: r.content for r in emulator.state.received}
    assert got == {n[3:]: rendered(f"n{k}-") for k, n in enumerate(numbers)}
