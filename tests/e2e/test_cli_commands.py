"""The client commands added for issue 17 — `template`, `verify`, `status`, batch `--csv`
and `--data`, `-o table`, `--version` — and how the CLI ends: an all-rejected batch
exits 1, a reader that goes away (`smsgw watch | head`) ends it quietly with 141."""

from __future__ import annotations

import asyncio
import json
import os

from server.cli.batches import progress_line
from tests.e2e.conftest import Running, final_state
from tests.e2e.test_cli_client import CN, ROOT, SMSGW, smsgw


async def test_version_prints_the_package_version() -> None:
    proc = await asyncio.create_subprocess_exec(
        *SMSGW, "--version", cwd=ROOT, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await proc.communicate()
    assert proc.returncode == 0
    name, version = out.decode().split()
    assert name == "smsgw" and version[0].isdigit()


async def test_templates_are_created_listed_used_and_deleted(gw: Running) -> None:
    client = await gw.client()
    code, out, err = await smsgw(
        gw, client, "template", "create", "Hi #name#, your table is ready.", "--code", "table"
    )
    assert code == 0, err
    template = json.loads(out)
    assert (template["code"], template["variables"]) == ("table", ["name"])

    code, out, err = await smsgw(gw, client, "template", "list", "-o", "table")
    assert code == 0, err
    header, row = out.splitlines()
    assert header.split()[:4] == ["ID", "CODE", "USE_TYPE", "VARIABLES"]
    assert row.split()[:4] == [template["id"], "table", "USE_TYPE_NOTIFICATION", "name"]

    code, out, err = await smsgw(
        gw, client, "send", CN, "--template-id", template["id"], "--data", "name=Ada"
    )
    assert code == 0, err
    state = await final_state(client, json.loads(out)["id"])
    body = await gw.gateway.pool.fetchval("SELECT body FROM messages WHERE id = $1", state.id)
    assert body == "Hi Ada, your table is ready."

    code, out, err = await smsgw(gw, client, "template", "delete", template["id"])
    assert (code, json.loads(out)) == (0, {"id": template["id"], "deleted": True}), err
    code, out, err = await smsgw(gw, client, "template", "get", template["id"])
    assert (code, out) == (1, "")
    assert "NOT_FOUND" in err


async def test_verify_check_exits_0_only_for_the_right_code(gw: Running) -> None:
    client = await gw.client()
    code, out, err = await smsgw(gw, client, "verify", "send", CN, "--code", "482913")
    assert code == 0, err
    verify_id = json.loads(out)["verifyId"]

    code, out, err = await smsgw(gw, client, "verify", "check", verify_id, CN, "000000")
    assert code == 1, err
    wrong = json.loads(out)
    assert wrong["valid"] is False and wrong["remainingAttempts"] == 2

    code, out, err = await smsgw(
        gw, client, "verify", "check", verify_id, CN, "-", stdin="482913\n"
    )
    assert code == 0, err
    assert json.loads(out)["valid"] is True
    assert "482913" not in err


async def test_status_shows_each_message_and_exits_1_for_an_unknown_id(gw: Running) -> None:
    client = await gw.client()
    code, out, err = await smsgw(gw, client, "send", CN, "Your parcel is on its way.")
    assert code == 0, err
    message_id = json.loads(out)["id"]
    await final_state(client, message_id)

    code, out, err = await smsgw(gw, client, "status", message_id)
    assert code == 0, err
    assert json.loads(out)["messages"][0]["status"] == "MESSAGE_STATUS_DELIVERED"

    code, out, err = await smsgw(gw, client, "status", message_id, "m_nope", "-o", "table")
    assert code == 1
    header, row = out.splitlines()
    assert header.split()[:3] == ["ID", "TO_NUMBER", "STATUS"]
    assert row.split()[:3] == [message_id, CN, "MESSAGE_STATUS_DELIVERED"]
    assert "message m_nope not found" in err


async def test_batch_csv_gives_each_number_its_variables(gw: Running) -> None:
    client = await gw.client()
    csv = 'mobile,name,order\n+8613800138001,Ada,A-1\n+8613800138002,"Lin, Bo",A-2\n'
    code, out, err = await smsgw(
        gw,
        client,
        "batch",
        "create",
        "--content",
        "#name#: order #order# ships from #shop#.",
        "--csv",
        "-",
        "--data",
        "shop=Main St",
        "--number",
        "+8613800138003",
        "--data",
        "name=Guest",
        "--data",
        "order=none",
        stdin=csv,
    )
    assert code == 0, err
    created = json.loads(out)
    assert created["acceptedCount"] == 3
    bodies = await gw.gateway.pool.fetch(
        "SELECT to_number, body FROM messages WHERE batch_id = $1 ORDER BY to_number",
        created["taskId"],
    )
    assert [(r["to_number"], r["body"]) for r in bodies] == [
        ("+8613800138001", "Ada: order A-1 ships from Main St."),
        ("+8613800138002", "Lin, Bo: order A-2 ships from Main St."),
        ("+8613800138003", "Guest: order none ships from Main St."),
    ]


async def test_a_batch_whose_every_number_is_rejected_exits_1(gw: Running) -> None:
    client = await gw.client()
    code, out, err = await smsgw(
        gw, client, "batch", "create", "--content", "Hi.", "--number", "12", "--number", "x"
    )
    assert code == 1
    assert json.loads(out).get("acceptedCount", 0) == 0
    assert "every number was rejected (2)" in err


async def test_batch_messages_and_watch_as_tables(gw: Running) -> None:
    client = await gw.client()
    code, out, err = await smsgw(
        gw, client, "batch", "create", "--content", "Hi.", "--number", CN, "--watch", "-o", "table"
    )
    assert code == 0, err
    fields = dict(line.split(None, 1) for line in out.splitlines())
    assert fields["status"] == "BATCH_STATUS_SUCCEEDED" and fields["delivered"] == "1"
    assert err.strip().splitlines()[-1] == progress_line_of_one_delivered()

    code, out, err = await smsgw(gw, client, "batch", "messages", fields["task_id"], "-o", "table")
    assert code == 0, err
    header, row = out.splitlines()
    assert header.split()[:3] == ["ID", "TO_NUMBER", "STATUS"]
    assert row.split()[1:3] == [CN, "MESSAGE_STATUS_DELIVERED"]


def progress_line_of_one_delivered() -> str:
    from sms.v1 import batch_pb2, common_pb2

    return progress_line(
        batch_pb2.Batch(total=1, sent=1, delivered=1, status=common_pb2.BATCH_STATUS_SUCCEEDED)
    )


async def test_watch_into_a_closed_pipe_exits_141_quietly(gw: Running) -> None:
    """`smsgw watch | head -1`: once the reader is gone the next event ends it."""
    client = await gw.client()
    env = {
        **os.environ,
        "SMSGW_ADDR": f"127.0.0.1:{gw.gateway.grpc_port}",
        "SMSGW_API_KEY": client.api_key,
        "SMSGW_API_SECRET": client.api_secret,
    }
    # Resume after the log's newest event rather than watch live (0): the first send
    # may be stored before the CLI has its stream open, and would then never be shown.
    # The account is new, so only its own events come.
    other = await gw.client(name="other")
    code, _, err = await smsgw(gw, other, "send", CN, "Before the watch.")
    assert code == 0, err
    after = await gw.gateway.pool.fetchval("SELECT max(event_id) FROM message_events")
    read_end, write_end = os.pipe()
    proc = await asyncio.create_subprocess_exec(
        *SMSGW,
        "watch",
        "--after-event-id",
        str(after),
        env=env,
        cwd=ROOT,
        stdout=write_end,
        stderr=asyncio.subprocess.PIPE,
    )
    os.close(write_end)
    try:
        code, out, err = await smsgw(gw, client, "send", CN, "First.")
        assert code == 0, err
        with os.fdopen(read_end, "rb") as reader:
            first = await asyncio.to_thread(reader.readline)  # then the reader goes away
        assert json.loads(first)["messageId"] == json.loads(out)["id"]
        code, _, err = await smsgw(gw, client, "send", "+8613800138009", "Second.")
        assert code == 0, err
        _, err_bytes = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 141
    assert err_bytes == b""
