"""The example clients in clients/ (Python, Node, Go) against a real gateway on a port.

Each example sends a message, checks a verification code (wrong, then right), reads
the google.rpc details of an INVALID_ARGUMENT and follows a status stream to DELIVERED,
asserting all of it itself: it exits 0 only if everything behaved as documented.
Nothing is skipped: a missing toolchain fails the test (clients/install.sh installs
them; .ci/run calls it).
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from tests.e2e.conftest import GatewayFactory, Running

ROOT = Path(__file__).resolve().parents[2]
CLIENTS = ROOT / "clients"
MISSING = "run `bash clients/install.sh` first"


@pytest.fixture(scope="module")
async def gateway(start_gateway: GatewayFactory) -> Running:
    return await start_gateway()


async def _run(
    *command: str | Path, env: dict[str, str] | None = None, within: float = 90
) -> tuple[int, str]:
    """Runs a command without blocking the event loop the gateway is serving on."""
    proc = await asyncio.create_subprocess_exec(
        *map(str, command),
        env=env,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        output, _ = await asyncio.wait_for(proc.communicate(), within)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, output.decode(errors="replace")


async def _example(gateway: Running, name: str, *command: str | Path) -> str:
    """Runs one example with its own account; returns its output after checking it."""
    client = await gateway.client(name=f"example-{name}")
    env = dict(os.environ)
    env.update(
        SMSGW_ADDR=f"127.0.0.1:{gateway.gateway.grpc_port}",
        SMSGW_API_KEY=client.api_key,
        SMSGW_API_SECRET=client.api_secret,
    )
    code, output = await _run(*command, env=env)
    assert code == 0, output
    assert f"{name} example: OK" in output, output
    # What each example printed on the way: the field of the BadRequest, the stream's end.
    assert "field mobile:" in output, output
    assert "reason INVALID_ARGUMENT (domain smsgw)" in output, output
    assert output.rstrip().splitlines()[-2].endswith("MESSAGE_STATUS_DELIVERED"), output
    return output


async def test_python_example(gateway: Running) -> None:
    await _example(gateway, "python", sys.executable, CLIENTS / "python" / "example.py")


async def test_node_example(gateway: Running) -> None:
    node_modules = CLIENTS / "node" / "node_modules" / "@grpc" / "grpc-js"
    assert node_modules.is_dir(), f"clients/node has no node_modules: {MISSING}"
    await _example(gateway, "node", "node", CLIENTS / "node" / "example.js")


@pytest.mark.timeout(400)
async def test_go_example(gateway: Running) -> None:
    # Generates the stubs with protoc and builds in GOPATH mode; fails if a tool is
    # missing. A cold build compiles grpc-go (about 40 s on 2 cores), later ones are cached.
    code, output = await _run("bash", CLIENTS / "go" / "build.sh", within=300)
    assert code == 0, f"{output}\n{MISSING}"
    await _example(gateway, "go", CLIENTS / "go" / "bin" / "smsgw-example")


async def test_typescript_connect_example(gateway: Running) -> None:
    """clients/ts/example.ts (Connect's TypeScript client, stubs from protoc-gen-es in
    generated/ts) on the HTTP port, over the Connect protocol and over gRPC-Web."""
    tsx = ROOT / "node_modules" / ".bin" / "tsx"
    assert tsx.exists(), "tsx and Connect are installed by the test command (npm ci)"
    client = await gateway.client(name="example-ts")
    env = dict(os.environ)
    env.update(
        SMSGW_HTTP_URL=f"http://127.0.0.1:{gateway.gateway.http_port}",
        SMSGW_API_KEY=client.api_key,
        SMSGW_API_SECRET=client.api_secret,
    )
    code, output = await _run(tsx, CLIENTS / "ts" / "example.ts", env=env)
    assert code == 0, output
    assert output.rstrip().endswith("ts example: OK"), output
    for protocol in ("connect", "grpc-web"):
        assert f"{protocol}: field mobile:" in output, output
        assert f"{protocol}: DELIVERED" in output, output
