"""deploy/nginx/nginx.conf (the L7 balancer of deploy/compose.yaml) in front of two
real gateways on one database, run by Debian's nginx.

The committed file is used as it is, with only the addresses compose's DNS would give
replaced by the test's ports: calls on one HTTP/2 connection are spread over both
replicas, a watch stream goes through its own route and sees sends accepted on
either, the HTTP server passes /healthz, and the API over Connect (a unary call and a
server stream, unbuffered) goes to either replica; /metrics stays private.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import socket
import struct
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import grpc
import pytest
from sms.v1 import common_pb2, message_pb2, message_pb2_grpc

from tests.e2e.conftest import GatewayFactory, Running

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "deploy" / "nginx" / "nginx.conf"
NGINX = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")
SEND = "/sms.v1.MessageService/SendMessage"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _config(replicas: tuple[Running, Running], grpc_port: int, http_port: int) -> str:
    """The committed nginx.conf with the test's addresses in place of compose's names."""
    text = CONF.read_text()
    for index, replica in enumerate(replicas, start=1):
        text = text.replace(f"smsgw-{index}:50051", f"127.0.0.1:{replica.gateway.grpc_port}")
        text = text.replace(f"smsgw-{index}:8080", f"127.0.0.1:{replica.gateway.http_port}")
    text = re.sub(r"listen 50051 http2;", f"listen 127.0.0.1:{grpc_port} http2;", text)
    text = re.sub(r"listen 8080;", f"listen 127.0.0.1:{http_port};", text)
    assert "smsgw-" not in text
    return text


def _sent_ok(replica: Running) -> float:
    value = replica.gateway.metrics.registry.get_sample_value(
        "smsgw_rpc_requests_total", {"method": SEND, "code": "OK"}
    )
    return value or 0.0


@pytest.fixture(scope="module")
async def replicas(start_gateway: GatewayFactory) -> tuple[Running, Running]:
    first = await start_gateway()
    second = await start_gateway(database_url=first.gateway.settings.database_url)
    return first, second


@pytest.fixture(scope="module")
async def balancer(replicas: tuple[Running, Running]) -> AsyncIterator[tuple[int, int]]:
    """nginx with the committed config: (gRPC port, HTTP port)."""
    assert NGINX is not None, "no nginx: run `bash scripts/check_deploy.sh --install`"
    grpc_port, http_port = _free_port(), _free_port()
    text = _config(replicas, grpc_port, http_port)
    with tempfile.TemporaryDirectory() as prefix:
        await asyncio.to_thread((Path(prefix) / "nginx.conf").write_text, text)
        proc = await asyncio.create_subprocess_exec(
            NGINX,
            "-e",
            "stderr",
            "-p",
            prefix,
            "-c",
            f"{prefix}/nginx.conf",
            "-g",
            f"daemon off; pid {prefix}/nginx.pid;",
            stdout=asyncio.subprocess.DEVNULL,
        )
        try:
            for _ in range(100):
                try:
                    _, writer = await asyncio.open_connection("127.0.0.1", grpc_port)
                except OSError:
                    await asyncio.sleep(0.05)
                    continue
                writer.close()
                break
            yield grpc_port, http_port
        finally:
            proc.terminate()
            await proc.wait()


async def test_calls_on_one_connection_are_spread_over_both_replicas(
    replicas: tuple[Running, Running], balancer: tuple[int, int]
) -> None:
    account = await replicas[0].client(name="nginx-calls")
    before = [_sent_ok(r) for r in replicas]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{balancer[0]}") as channel:
        stub = message_pb2_grpc.MessageServiceStub(channel)
        for i in range(20):
            await stub.SendMessage(
                message_pb2.SendMessageRequest(
                    mobile=f"+86138005{i:05d}",
                    text="through nginx",
                    use_type=common_pb2.USE_TYPE_NOTIFICATION,
                ),
                metadata=account.metadata,
                timeout=10,
            )
    shares = [_sent_ok(r) - b for r, b in zip(replicas, before, strict=True)]
    assert sum(shares) == 20
    assert min(shares) >= 5, shares  # round robin: about 10 each, not 20 on one


async def test_a_watch_through_the_stream_route_sees_sends_on_either_replica(
    replicas: tuple[Running, Running], balancer: tuple[int, int]
) -> None:
    account = await replicas[0].client(name="nginx-watch")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{balancer[0]}") as channel:
        stub = message_pb2_grpc.MessageServiceStub(channel)
        ids = [
            (
                await replica_stub.SendMessage(
                    message_pb2.SendMessageRequest(
                        mobile=f"+861380060000{n}",
                        text="watched",
                        use_type=common_pb2.USE_TYPE_NOTIFICATION,
                    ),
                    metadata=account.metadata,
                )
            ).id
            for n, replica_stub in enumerate(
                message_pb2_grpc.MessageServiceStub(r.channel) for r in replicas
            )
        ]
        final: dict[str, int] = {}
        stream = stub.WatchMessageStatus(
            message_pb2.WatchMessageStatusRequest(ids=ids), metadata=account.metadata, timeout=30
        )
        async for event in stream:
            final[event.message_id] = event.status
    assert final == dict.fromkeys(ids, common_pb2.MESSAGE_STATUS_DELIVERED)


async def test_connect_calls_and_streams_pass_through_the_http_server(
    replicas: tuple[Running, Running], balancer: tuple[int, int]
) -> None:
    account = await replicas[0].client(name="nginx-connect")
    headers = {"Authorization": account.metadata[0][1], "Content-Type": "application/json"}
    base = f"http://127.0.0.1:{balancer[1]}"
    async with aiohttp.ClientSession() as session:
        ids = []
        for i in range(6):
            async with session.post(
                f"{base}{SEND}",
                headers=headers,
                json={
                    "mobile": f"+86138007{i:05d}",
                    "text": "over connect",
                    "useType": "USE_TYPE_NOTIFICATION",
                },
            ) as reply:
                assert reply.status == 200, await reply.text()
                ids.append((await reply.json())["id"])
        # A server stream: Connect's envelopes (5-byte prefix, JSON), flushed as they
        # come; the last one (flag 2) ends the stream.
        finals: dict[str, str] = {}
        watch = json.dumps({"ids": ids}).encode()
        async with session.post(
            f"{base}/sms.v1.MessageService/WatchMessageStatus",
            headers={**headers, "Content-Type": "application/connect+json"},
            data=struct.pack(">BI", 0, len(watch)) + watch,
            timeout=aiohttp.ClientTimeout(total=30),
        ) as stream:
            assert stream.status == 200
            while True:
                flags, size = struct.unpack(">BI", await stream.content.readexactly(5))
                body = json.loads(await stream.content.readexactly(size))
                if flags & 2:
                    assert "error" not in body, body
                    break
                finals[body["messageId"]] = body["status"]
    assert finals == dict.fromkeys(ids, "MESSAGE_STATUS_DELIVERED")


async def test_the_http_server_passes_healthz_and_keeps_metrics_private(
    balancer: tuple[int, int],
) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{balancer[1]}/healthz") as health:
            assert health.status == 200
            assert await health.json() == {"status": "SERVING"}
        async with session.get(f"http://127.0.0.1:{balancer[1]}/metrics") as metrics:
            assert metrics.status == 404
