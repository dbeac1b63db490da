"""PublicOnlyResolver: the addresses a webhook connection goes to are the ones checked.

An aiohttp connector with the resolver posts to a real TCP listener on 127.0.0.1;
the host names are answered by a stand-in DNS (``Dns``), so a name can resolve to
loopback, or answer differently from one query to the next as a rebinding attacker's
DNS does.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

from server.http.webhook_url import PublicOnlyResolver, public


class Dns(AbstractResolver):
    """Answers each query for a name with the next of its addresses (the last repeats)."""

    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers = answers
        self.queries: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        seq = self.answers[host]
        address = seq[min(self.queries.count(host), len(seq) - 1)]
        self.queries.append(host)
        return [
            ResolveResult(
                hostname=host, host=address, port=port, family=socket.AF_INET, proto=0, flags=0
            )
        ]

    async def close(self) -> None:
        pass


@pytest.fixture
async def listener() -> AsyncIterator[tuple[int, list[object]]]:
    """A TCP listener on 127.0.0.1: its port and the connections it accepted."""
    accepted: list[object] = []

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer.get_extra_info("peername"))
        writer.close()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1], accepted
    server.close()
    await server.wait_closed()


async def post(dns: AbstractResolver, url: str) -> None:
    connector = aiohttp.TCPConnector(resolver=PublicOnlyResolver(dns), force_close=True)
    timeout = aiohttp.ClientTimeout(total=2)
    async with (
        aiohttp.ClientSession(connector=connector, timeout=timeout) as session,
        session.post(url, data=b"{}", allow_redirects=False) as reply,
    ):
        await reply.read()


async def test_a_name_resolving_to_loopback_gets_no_connection(
    listener: tuple[int, list[object]],
) -> None:
    port, accepted = listener
    dns = Dns({"hooks.example.com": ["127.0.0.1"]})
    with pytest.raises(aiohttp.ClientConnectorError):
        await post(dns, f"https://hooks.example.com:{port}/hook")
    assert accepted == []
    assert dns.queries == ["hooks.example.com"]


async def test_a_rebinding_name_is_resolved_once_per_connection_and_checked_each_time(
    listener: tuple[int, list[object]],
) -> None:
    """The attacker's DNS answers differently to each query: there is exactly one
    query per connection, so the answer checked is the answer connected to (no
    second lookup to rebind between check and connect), and each is refused."""
    port, accepted = listener
    dns = Dns({"rebind.example.com": ["127.0.0.1", "10.0.0.7", "169.254.169.254"]})
    for _ in range(3):
        with pytest.raises(aiohttp.ClientConnectorError):
            await post(dns, f"https://rebind.example.com:{port}/hook")
    assert dns.queries == ["rebind.example.com"] * 3
    assert accepted == []


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",  # cloud metadata
        "100.100.100.200",  # shared address space (a cloud's metadata service)
        "0.0.0.0",
        "224.0.0.1",
        "::1",
        "fe80::1",
        "fd00::1",
        "::ffff:127.0.0.1",
    ],
)
def test_not_public(address: str) -> None:
    assert not public(address)


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111"])
def test_public(address: str) -> None:
    assert public(address)
