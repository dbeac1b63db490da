"""The sms.v1 RPCs on the HTTP port over the Connect protocol and gRPC-Web, called by
independent clients: `curl` with a JSON body, `buf curl --protocol connect` and
`--protocol grpcweb` (unary calls and server streams), and aiohttp for what a
browser or a client that leaves does (CORS, a stream whose client goes away).
Every call goes through the gateway's own gRPC server: the same credentials,
limits, errors and metrics (the TypeScript client: test_ts_client.py)."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import struct
import time
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from google.protobuf import timestamp_pb2
from google.rpc import error_details_pb2
from prometheus_client.parser import text_string_to_metric_families
from sms.v1 import common_pb2, message_pb2, message_pb2_grpc

from server.app import Gateway
from server.domain.limits import RateLimitSettings
from server.store.accounts import PgAccountStore
from tests.conftest import DatabaseFactory
from tests.e2e.conftest import FAST, Client, GatewayFactory, Running, final_state, wait_for

ROOT = Path(__file__).resolve().parents[2]
BUF = ROOT / "node_modules" / ".bin" / "buf"
CN = "+8613800138000"
ORIGIN = "https://app.example.com"
SEND = "sms.v1.MessageService/SendMessage"
STATUS = "sms.v1.MessageService/GetMessageStatus"
WATCH = "sms.v1.MessageService/WatchMessageStatus"


@pytest.fixture(scope="module")
async def gateway(start_gateway: GatewayFactory) -> Running:
    return await start_gateway(http_cors_origins=(ORIGIN,))


def _url(gateway: Running, path: str = "") -> str:
    return f"http://127.0.0.1:{gateway.gateway.http_port}/{path}"


def _auth(client: Client) -> str:
    return client.metadata[0][1]


async def _run(*command: str | Path, stdin: bytes | None = None) -> tuple[int, str, str]:
    """A command, run without blocking the loop the gateway serves on."""
    proc = await asyncio.create_subprocess_exec(
        *map(str, command),
        stdin=asyncio.subprocess.PIPE if stdin is not None else None,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def _curl(gateway: Running, path: str, body: str, auth: str) -> tuple[int, dict[str, Any]]:
    """curl posting a JSON body as the README shows; the HTTP status and the JSON answer."""
    code, out, err = await _run(
        "curl", "-sS", "-w", "\n%{http_code}", "-X", "POST", _url(gateway, path),
        "-H", "Content-Type: application/json", "-H", f"Authorization: {auth}",
        "--data-binary", body,
    )  # fmt: skip
    assert code == 0, err
    text, _, status = out.rpartition("\n")
    return int(status), json.loads(text)


async def _buf(gateway: Running, protocol: str, path: str, body: str, auth: str) -> tuple[int, str]:
    """buf curl with the schema read from proto/ (the HTTP port has no reflection)."""
    assert BUF.exists(), "buf is installed by the test command (npm ci); run it first"
    code, out, err = await _run(
        BUF, "curl", "--protocol", protocol, "--schema", ROOT / "proto",
        "-H", f"Authorization: {auth}", "-d", body, _url(gateway, path),
    )  # fmt: skip
    return code, out + err


def _bad_fields(error: dict[str, Any]) -> set[str]:
    """The fields a Connect error's google.rpc.BadRequest detail names."""
    for detail in error.get("details", ()):
        if detail["type"] == "google.rpc.BadRequest":
            value = detail["value"]
            bad = error_details_pb2.BadRequest.FromString(
                base64.b64decode(value + "=" * (-len(value) % 4))
            )
            return {v.field for v in bad.field_violations}
    return set()


async def test_curl_sends_then_reads_the_status(gateway: Running) -> None:
    client = await gateway.client()
    body = json.dumps({"mobile": CN, "useType": "USE_TYPE_NOTIFICATION", "text": "hi over curl"})
    status, sent = await _curl(gateway, SEND, body, _auth(client))
    assert status == 200, sent
    assert sent["toNumber"] == CN and sent["status"] == "MESSAGE_STATUS_PENDING"
    assert sent["segments"] == 1
    # The same message over gRPC: stored, durable, the gateway's own.
    state = await final_state(client, sent["id"])
    assert state.status == common_pb2.MESSAGE_STATUS_DELIVERED

    status, found = await _curl(gateway, STATUS, json.dumps({"ids": [sent["id"]]}), _auth(client))
    assert status == 200, found
    [message] = found["messages"]
    assert message["id"] == sent["id"] and message["status"] == "MESSAGE_STATUS_DELIVERED"


async def test_curl_bad_input_is_invalid_argument_with_bad_request(gateway: Running) -> None:
    client = await gateway.client()
    status, error = await _curl(gateway, SEND, json.dumps({"requestId": "x" * 129}), _auth(client))
    assert status == 400, error
    assert error["code"] == "invalid_argument"
    assert _bad_fields(error) == {"mobile", "use_type", "request_id", "text"}
    info = next(d for d in error["details"] if d["type"] == "google.rpc.ErrorInfo")
    assert info["debug"]["reason"] == "INVALID_ARGUMENT" and info["debug"]["domain"] == "smsgw"

    # A body that is not the method's JSON: the same error the gRPC port gives bad bytes.
    status, error = await _curl(gateway, SEND, '{"mobile": 12', _auth(client))
    assert (status, error["code"]) == (400, "invalid_argument"), error
    assert _bad_fields(error) == {"request"}
    # An enum name this server does not know is left unset (as Connect servers read
    # JSON): the field is then named as missing.
    status, error = await _curl(gateway, SEND, '{"useType": "NO_SUCH_TYPE"}', _auth(client))
    assert (status, error["code"]) == (400, "invalid_argument"), error
    assert "use_type" in _bad_fields(error)


async def test_curl_wrong_credentials_are_unauthenticated(gateway: Running) -> None:
    client = await gateway.client()
    wrong = "Basic " + base64.b64encode(f"{client.api_key}:sec_wrong".encode()).decode()
    body = json.dumps({"mobile": CN, "useType": "USE_TYPE_NOTIFICATION", "text": "x"})
    status, error = await _curl(gateway, SEND, body, wrong)
    assert (status, error["code"]) == (401, "unauthenticated"), error
    status, error = await _curl(gateway, SEND, body, "")
    assert (status, error["code"]) == (401, "unauthenticated"), error


@pytest.mark.parametrize("protocol", ["connect", "grpcweb"])
async def test_buf_curl_unary_and_stream(gateway: Running, protocol: str) -> None:
    client = await gateway.client()
    body = json.dumps({"mobile": CN, "useType": "USE_TYPE_NOTIFICATION", "text": protocol})
    code, out = await _buf(gateway, protocol, SEND, body, _auth(client))
    assert code == 0, out
    sent = json.loads(out)
    assert sent["toNumber"] == CN

    # The server stream: the current state, then each change, ending at DELIVERED.
    code, out = await _buf(
        gateway, protocol, WATCH, json.dumps({"ids": [sent["id"]]}), _auth(client)
    )
    assert code == 0, out
    events = [json.loads(chunk) for chunk in out.replace("}\n{", "}\0{").split("\0")]
    statuses = [e["status"] for e in events]
    assert statuses[-1] == "MESSAGE_STATUS_DELIVERED", statuses
    assert {e["messageId"] for e in events} == {sent["id"]}

    # Errors come back as the protocol's status with the same details.
    code, out = await _buf(gateway, protocol, SEND, json.dumps({"mobile": "12"}), _auth(client))
    assert code != 0 and "invalid_argument" in out and "google.rpc.BadRequest" in out, out
    code, out = await _buf(gateway, protocol, WATCH, json.dumps({"ids": ["nope"]}), "Basic eDp5")
    assert code != 0 and "unauthenticated" in out, out


async def test_credential_network_sees_the_http_client_address(gateway: Running) -> None:
    """A credential allowed only from 10.0.0.0/8 is refused from 127.0.0.1 over HTTP (the
    bridge passes the client's address on), and one allowed from 127.0.0.1 works; a gRPC
    caller cannot claim an address by sending the bridge's metadata key itself."""
    store = PgAccountStore(gateway.gateway.pool)
    account = await store.create_account("cidr", verified=True)
    far, far_secret = await store.create_credential(account.id, ["10.0.0.0/8"])
    near, near_secret = await store.create_credential(account.id, ["127.0.0.1/32"])
    body = json.dumps({"mobile": CN, "useType": "USE_TYPE_NOTIFICATION", "text": "x"})

    def basic(key: str, secret: str) -> str:
        return "Basic " + base64.b64encode(f"{key}:{secret}".encode()).decode()

    status, error = await _curl(gateway, SEND, body, basic(far.api_key, far_secret))
    assert (status, error["code"]) == (403, "permission_denied"), error
    status, sent = await _curl(gateway, SEND, body, basic(near.api_key, near_secret))
    assert status == 200, sent

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await message_pb2_grpc.MessageServiceStub(gateway.channel).SendMessage(
            message_pb2.SendMessageRequest(
                mobile=CN, use_type=common_pb2.USE_TYPE_NOTIFICATION, text="x"
            ),
            metadata=(
                ("authorization", basic(far.api_key, far_secret)),
                ("x-smsgw-bridge-peer", "guess 10.1.2.3"),
            ),
        )
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def _scrape(gateway: Running, session: aiohttp.ClientSession) -> dict[tuple[str, str], float]:
    async with session.get(_url(gateway, "metrics")) as response:
        text = await response.text()
    return {
        (s.name, s.labels.get("method", "") + "|" + s.labels.get("code", "")): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _envelope(message: dict[str, Any]) -> bytes:
    data = json.dumps(message).encode()
    return struct.pack(">BI", 0, len(data)) + data


async def test_metrics_count_connect_calls_and_a_gone_client_ends_its_stream(
    gateway: Running,
) -> None:
    client = await gateway.client()
    key = ("smsgw_rpc_requests_total", "/" + SEND + "|INVALID_ARGUMENT")
    async with aiohttp.ClientSession() as session:
        before = (await _scrape(gateway, session)).get(key, 0.0)
        await _curl(gateway, SEND, "{}", _auth(client))  # refused by the servicer
        assert (await _scrape(gateway, session)).get(key, 0.0) == before + 1
        await _curl(gateway, SEND, "{", _auth(client))  # refused by the bridge: not JSON
        assert (await _scrape(gateway, session)).get(key, 0.0) == before + 2

        message_id = await _scheduled(client)
        response = await session.post(
            _url(gateway, WATCH),
            data=_envelope({"ids": [message_id]}),
            headers={
                "Content-Type": "application/connect+json",
                "Authorization": _auth(client),
            },
        )
        assert response.status == 200
        assert response.headers["Content-Type"] == "application/connect+json"
        header = await response.content.readexactly(5)
        flags, length = struct.unpack(">BI", header)
        first = json.loads(await response.content.readexactly(length))
        assert flags == 0 and first["messageId"] == message_id, first
        streams = ("smsgw_open_streams", "|")
        assert (await _scrape(gateway, session))[streams] >= 1
        response.close()  # the client goes away

        async def closed() -> bool:
            return (await _scrape(gateway, session))[streams] == 0

        await wait_for(closed, within=5)


async def test_cors_preflight_and_headers(gateway: Running, start_gateway: GatewayFactory) -> None:
    client = await gateway.client()
    body = json.dumps({"ids": ["msg_x"]})
    async with aiohttp.ClientSession() as session:
        async with session.options(
            _url(gateway, STATUS),
            headers={
                "Origin": ORIGIN,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type,authorization",
            },
        ) as preflight:
            assert preflight.status == 204
            assert preflight.headers["Access-Control-Allow-Origin"] == ORIGIN
            allowed = preflight.headers["Access-Control-Allow-Headers"].lower()
            assert "authorization" in allowed and "connect-protocol-version" in allowed
        async with session.post(
            _url(gateway, STATUS),
            data=body,
            headers={
                "Origin": ORIGIN,
                "Content-Type": "application/json",
                "Authorization": _auth(client),
            },
        ) as answer:
            assert answer.status == 200
            assert answer.headers["Access-Control-Allow-Origin"] == ORIGIN
        async with session.options(
            _url(gateway, STATUS),
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
        ) as refused:
            assert refused.status == 403
            assert "Access-Control-Allow-Origin" not in refused.headers

        # Off by default: no preflight answer, no CORS headers.
        plain = await start_gateway()
        async with session.options(
            _url(plain, STATUS), headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST"}
        ) as off:
            assert off.status == 405
            assert "Access-Control-Allow-Origin" not in off.headers
        async with session.post(
            _url(plain, STATUS),
            data=body,
            headers={"Origin": ORIGIN, "Content-Type": "application/json", "Authorization": "x"},
        ) as answer:
            assert answer.status == 401
            assert "Access-Control-Allow-Origin" not in answer.headers


async def test_unknown_method_and_content_type(gateway: Running) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.post(
            _url(gateway, "sms.v1.MessageService/NoSuchMethod"),
            data="{}",
            headers={"Content-Type": "application/json"},
        ) as answer:
            assert answer.status == 501
            assert (await answer.json())["code"] == "unimplemented"
        async with session.post(
            _url(gateway, SEND), data="{}", headers={"Content-Type": "text/plain"}
        ) as answer:
            assert answer.status == 415


async def _scheduled(client: Client) -> str:
    """A message scheduled an hour ahead: a stream over it waits after its first event."""
    later = timestamp_pb2.Timestamp(seconds=int(time.time()) + 3600)
    sent = await client.messages.SendMessage(
        message_pb2.SendMessageRequest(
            mobile=CN, use_type=common_pb2.USE_TYPE_NOTIFICATION, text="later", send_at=later
        ),
        metadata=client.metadata,
    )
    return sent.id


async def test_connect_timeout_ends_a_stream_with_deadline_exceeded(gateway: Running) -> None:
    client = await gateway.client()
    message_id = await _scheduled(client)
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            _url(gateway, WATCH),
            data=_envelope({"ids": [message_id]}),
            headers={
                "Content-Type": "application/connect+json",
                "Connect-Timeout-Ms": "400",
                "Authorization": _auth(client),
            },
        ) as response,
    ):
        body = await asyncio.wait_for(response.read(), 10)
    frames = []
    while body:
        flags, length = struct.unpack(">BI", body[:5])
        frames.append((flags, json.loads(body[5 : 5 + length])))
        body = body[5 + length :]
    assert [flags for flags, _ in frames] == [0, 2], frames
    assert frames[0][1]["messageId"] == message_id
    assert frames[1][1]["error"]["code"] == "deadline_exceeded", frames


async def test_grpc_web_text(gateway: Running) -> None:
    """grpc-web-text (base64 bodies, as grpc-web's browser client sends by default)."""
    client = await gateway.client()
    message_id = await _scheduled(client)
    request = message_pb2.GetMessageStatusRequest(ids=[message_id]).SerializeToString()
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            _url(gateway, STATUS),
            data=base64.b64encode(struct.pack(">BI", 0, len(request)) + request),
            headers={
                "Content-Type": "application/grpc-web-text",
                "X-Grpc-Web": "1",
                "Authorization": _auth(client),
            },
        ) as response,
    ):
        assert response.status == 200
        assert response.headers["Content-Type"] == "application/grpc-web-text"
        text = await response.read()
    # Each chunk is padded base64: decoded four characters at a time, as clients do.
    body = b"".join(base64.b64decode(text[i : i + 4]) for i in range(0, len(text), 4))
    flags, length = struct.unpack(">BI", body[:5])
    assert flags == 0
    reply = message_pb2.GetMessageStatusResponse.FromString(body[5 : 5 + length])
    assert [m.id for m in reply.messages] == [message_id]
    trailers = body[5 + length :]
    assert trailers[0] == 0x80 and b"grpc-status: 0\r\n" in trailers[5:]


async def test_shutdown_ends_a_connect_stream_with_unavailable(databases: DatabaseFactory) -> None:
    """SIGTERM's path: the open stream ends at once with unavailable and RetryInfo (the
    caller resumes on another replica), and the private socket's directory is removed."""
    settings = dataclasses.replace(FAST, database_url=await databases.new(migrate=False))
    gateway = Gateway(settings)
    await gateway.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{gateway.grpc_port}")
    running = Running(gateway, channel)
    stopped = False
    try:
        client = await running.client()
        message_id = await _scheduled(client)
        async with aiohttp.ClientSession() as session:
            response = await session.post(
                _url(running, WATCH),
                data=_envelope({"ids": [message_id]}),
                headers={
                    "Content-Type": "application/connect+json",
                    "Authorization": _auth(client),
                },
            )
            flags, length = struct.unpack(">BI", await response.content.readexactly(5))
            assert flags == 0
            await response.content.readexactly(length)
            bridge_dir = gateway._bridge_dir
            assert bridge_dir is not None and bridge_dir.is_dir()
            stopping = asyncio.create_task(gateway.stop())
            flags, length = struct.unpack(">BI", await response.content.readexactly(5))
            end = json.loads(await response.content.readexactly(length))
            await asyncio.wait_for(stopping, 15)
            stopped = True
        assert flags == 2, end
        assert end["error"]["code"] == "unavailable"
        assert "google.rpc.RetryInfo" in {d["type"] for d in end["error"]["details"]}
        assert not bridge_dir.exists()
    finally:
        await channel.close()
        if not stopped:
            await gateway.stop()


async def test_auth_throttle_counts_http_callers_by_their_address(
    start_gateway: GatewayFactory,
) -> None:
    """Wrong secrets over Connect fill the auth-failure bucket of (key, 127.0.0.1): the
    next call over Connect is refused with resource_exhausted and RetryInfo, and so is
    one over gRPC from the same address, the same bucket (not one for the socket)."""
    throttled = await start_gateway(limits=RateLimitSettings(auth_failures_per_minute=2))
    client = await throttled.client()
    wrong = "Basic " + base64.b64encode(f"{client.api_key}:sec_wrong".encode()).decode()
    body = json.dumps({"ids": ["msg_x"]})
    answers = [(await _curl(throttled, STATUS, body, wrong))[0] for _ in range(3)]
    assert answers[:2] == [401, 401] and answers[2] == 429, answers
    status, error = await _curl(throttled, STATUS, body, wrong)
    assert (status, error["code"]) == (429, "resource_exhausted"), error
    assert "google.rpc.RetryInfo" in {d["type"] for d in error["details"]}
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await client.messages.GetMessageStatus(
            message_pb2.GetMessageStatusRequest(ids=["msg_x"]),
            metadata=(("authorization", wrong),),
        )
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_the_rpcs_can_be_kept_off_the_http_port(start_gateway: GatewayFactory) -> None:
    """SMSGW_HTTP_RPC=false: the HTTP port serves health, metrics and webhooks only."""
    off = await start_gateway(http_rpc=False)
    client = await off.client()
    async with aiohttp.ClientSession() as session:
        async with session.post(
            _url(off, STATUS),
            data=json.dumps({"ids": ["msg_x"]}),
            headers={"Content-Type": "application/json", "Authorization": _auth(client)},
        ) as answer:
            assert answer.status == 404
        async with session.get(_url(off, "healthz")) as health:
            assert health.status == 200
