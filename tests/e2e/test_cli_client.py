"""`smsgw send`, `smsgw watch` and `smsgw batch` as a user runs them from a shell,
against a real server: JSON results on stdout, readable errors on stderr."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

from sms.v1 import batch_pb2, common_pb2

from server.cli.batches import progress_line
from tests.e2e.conftest import Client, Running

ROOT = Path(__file__).resolve().parents[2]
SMSGW = [sys.executable, "-m", "server.cli"]
CN = "+8613800138000"


async def smsgw(gw: Running, client: Client, *args: str, stdin: str = "") -> tuple[int, str, str]:
    """Runs an smsgw client command with the client's credential in the environment."""
    env = {
        **os.environ,
        "SMSGW_ADDR": f"127.0.0.1:{gw.gateway.grpc_port}",
        "SMSGW_API_KEY": client.api_key,
        "SMSGW_API_SECRET": client.api_secret,
    }
    proc = await asyncio.create_subprocess_exec(
        *SMSGW,
        *args,
        env=env,
        cwd=ROOT,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin.encode()), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_send_then_watch_follows_the_message_to_delivered(gw: Running) -> None:
    client = await gw.client()
    code, out, err = await smsgw(gw, client, "send", CN, "Your parcel is on its way.", "--watch")
    assert code == 0, err
    sent, *events = out.split("\n{")
    message_id = json.loads(sent)["id"]
    statuses = [json.loads("{" + e)["status"] for e in events]
    assert statuses[-1] == "MESSAGE_STATUS_DELIVERED"
    assert "MESSAGE_STATUS_SENT" in statuses

    code, out, err = await smsgw(gw, client, "watch", message_id)
    assert code == 0, err
    replayed = [json.loads(line) for line in out.splitlines()]
    assert {e["messageId"] for e in replayed} == {message_id}
    assert replayed[-1]["status"] == "MESSAGE_STATUS_DELIVERED"


async def test_a_bad_request_names_the_field_and_exits_1(gw: Running) -> None:
    client = await gw.client()
    code, out, err = await smsgw(gw, client, "send", "12", "Hello")
    assert (code, out) == (1, "")
    assert "INVALID_ARGUMENT" in err
    assert "  mobile: " in err  # the BadRequest's field violation, read from the details


async def test_missing_credentials_are_a_usage_error(gw: Running) -> None:
    client = await gw.client()
    proc = await asyncio.create_subprocess_exec(
        *SMSGW,
        "send",
        CN,
        "Hi",
        env={k: v for k, v in os.environ.items() if not k.startswith("SMSGW_API")},
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await proc.communicate()
    assert proc.returncode == 2
    assert b"SMSGW_API_KEY" in err
    assert client.api_secret.encode() not in err


async def test_batch_from_a_file_of_numbers_runs_to_succeeded(gw: Running) -> None:
    client = await gw.client()
    numbers = "\n".join(f"+86138001380{i:02d}" for i in range(25)) + "\nnot-a-number\n"
    code, out, err = await smsgw(
        gw,
        client,
        "batch",
        "create",
        "--content",
        "The shop opens at nine tomorrow.",
        "--numbers-file",
        "-",
        "--watch",
        stdin=numbers,
    )
    assert code == 0, err
    created, final = out.split("\n}\n{")
    created_json = json.loads(created + "}")
    assert created_json["acceptedCount"] == 25
    assert [r["number"] for r in created_json["rejected"]] == ["not-a-number"]
    final_json = json.loads("{" + final)
    assert final_json["status"] == "BATCH_STATUS_SUCCEEDED"
    assert final_json["delivered"] == 25
    # Not a terminal: one progress line per snapshot, the last one complete.
    lines = err.strip().splitlines()
    assert lines[-1].startswith("[" + "#" * 30 + "] 100%  25/25 final")

    code, out, err = await smsgw(gw, client, "batch", "get", created_json["taskId"])
    assert code == 0, err
    assert json.loads(out)["delivered"] == 25


def test_the_progress_line_shows_what_is_final() -> None:
    batch = batch_pb2.Batch(
        total=200, sent=120, delivered=90, failed=10, status=common_pb2.BATCH_STATUS_EXECUTING
    )
    line = progress_line(batch)
    assert line.startswith("[" + "#" * 15 + "-" * 15 + "]  50%  100/200 final")
    assert "sent 120 · delivered 90 · failed 10  EXECUTING" in line
