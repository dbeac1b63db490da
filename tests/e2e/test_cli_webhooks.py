"""`smsgw webhook …` and the --reference/--metadata flags of `send`, `batch create` and
`verify send`, run as a user runs them, against a real server and a real receiver."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from server.domain.otp_guard import GuardSettings
from server.domain.verification import OtpSettings
from tests.e2e.conftest import GatewayFactory, Running, wait_for
from tests.e2e.test_cli_client import CN, smsgw
from tests.e2e.test_webhooks import Receiver, verify


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    made = Receiver([200])
    app = web.Application()
    app.router.add_post("/hook", made.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    made.url = f"http://127.0.0.1:{runner.addresses[0][1]}/hook"
    yield made
    await runner.cleanup()


@pytest.fixture(scope="module")
async def insecure(start_gateway: GatewayFactory) -> Running:
    return await start_gateway(
        webhook_allow_insecure=True,
        otp=OtpSettings(
            mobile_interval_seconds=0.0, guard=GuardSettings(prefix_limit=0, country_limit=0)
        ),
    )


async def test_webhook_commands_and_reference_flags(insecure: Running, receiver: Receiver) -> None:
    client = await insecure.client()

    async def run(*args: str) -> str:
        code, out, err = await smsgw(insecure, client, *args)
        assert code == 0, err
        return out

    hook = json.loads(
        await run(
            "webhook", "create", receiver.url, "--event-type", "batch-status",
            "--event-type", "verification", "--description", "crm",
        )
    )  # fmt: skip
    assert hook["secret"].startswith("whsec_")
    assert hook["eventTypes"] == ["EVENT_TYPE_BATCH_STATUS", "EVENT_TYPE_VERIFICATION"]
    shown = json.loads(await run("webhook", "get", hook["id"]))
    assert "secret" not in shown and shown["description"] == "crm"

    batch = json.loads(
        await run(
            "batch", "create", "--content", "We open at nine.", "--number", CN,
            "--reference", "campaign-7", "--metadata", "team=shop", "--metadata", "wave=2",
        )
    )  # fmt: skip
    sent = json.loads(
        await run("verify", "send", CN, "--code", "4711", "--reference", "signup-9",
                  "--metadata", "user=u9")
    )  # fmt: skip
    assert (await smsgw(insecure, client, "verify", "check", sent["verifyId"], CN, "4711"))[0] == 0
    single = json.loads(await run("send", CN, "Hi", "--reference", "r-1", "--metadata", "a=b"))
    state = json.loads(await run("status", single["id"]))["messages"][0]
    assert (state["reference"], state["metadata"]) == ("r-1", {"a": "b"})

    async def outcome_and_batch_end() -> bool:
        events = receiver.accepted()
        kinds = {k for e in events for k in e if k in ("batchStatus", "verification")}
        statuses = {e["batchStatus"]["status"] for e in events if "batchStatus" in e}
        return kinds == {"batchStatus", "verification"} and "BATCH_STATUS_SUCCEEDED" in statuses

    await wait_for(outcome_and_batch_end, within=20)
    for headers, body, _ in receiver.requests:
        assert verify(hook["secret"], headers, body)
    for event in receiver.accepted():
        if "batchStatus" in event:
            assert event["batchStatus"]["taskId"] == batch["taskId"]
            assert event["batchStatus"]["reference"] == "campaign-7"
            assert event["batchStatus"]["metadata"] == {"team": "shop", "wave": "2"}
        else:
            assert event["verification"]["state"] == "VERIFICATION_STATE_VERIFIED"
            assert (event["verification"]["reference"], event["verification"]["metadata"]) == (
                "signup-9",
                {"user": "u9"},
            )

    sent_once = len(receiver.requests)  # every event once (each answered 200)
    table = await run("webhook", "deliveries", hook["id"], "-o", "table")
    assert table.splitlines()[0].split()[:4] == ["ID", "EVENT_ID", "EVENT_TYPE", "STATE"]
    assert len(table.splitlines()) - 1 == sent_once
    assert "DELIVERY_STATE_SUCCEEDED" in table
    again = json.loads(await run("webhook", "redeliver", hook["id"], "--start", "2000-01-01"))
    assert again["count"] == sent_once
    listed = await run("webhook", "list", "-o", "table")
    assert receiver.url in listed
    await run("webhook", "delete", hook["id"])
    code, _, err = await smsgw(insecure, client, "webhook", "get", hook["id"])
    assert code == 1 and "NOT_FOUND" in err
    code, _, err = await smsgw(insecure, client, "send", CN, "Hi", "--metadata", "novalue")
    assert code == 2 and "--metadata 'novalue': use NAME=VALUE" in err
