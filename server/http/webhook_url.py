"""SSRF guard for webhook endpoints: https only, public addresses only.

``check_url`` checks a URL when an endpoint is created (resolving its host) and
before each delivery. A delivery's connection is made by an aiohttp connector whose
resolver is ``PublicOnlyResolver``: the addresses it checks are the addresses the
connection goes to, so a host that answers a public address to the check and a
private one to the connection (DNS rebinding) gets no connection. Delivery follows
no redirect. ``allow_insecure`` (SMSGW_WEBHOOK_ALLOW_INSECURE) lifts every rule for
tests and development.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from server.domain.errors import InvalidArgument

RESOLVE_TIMEOUT = 5.0  # seconds
NOT_PUBLIC = "resolves to a private, loopback or link-local address"


def public(address: str) -> bool:
    """Whether ``address`` is a globally routable unicast address: not private,
    loopback, link-local (cloud metadata), shared (100.64/10), reserved, ..."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def _literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True


class RefusedAddress(OSError):
    """The host resolves to an address webhooks may not reach."""


class PublicOnlyResolver(AbstractResolver):
    """Resolves with ``base`` and refuses the whole answer if any address in it is
    not public; the connector connects only to what this returned."""

    def __init__(self, base: AbstractResolver | None = None) -> None:
        self._base = base if base is not None else DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        async with asyncio.timeout(RESOLVE_TIMEOUT):
            answer = await self._base.resolve(host, port, family)
        if not answer or not all(public(a["host"]) for a in answer):
            raise RefusedAddress(f"{host} {NOT_PUBLIC}")
        return answer

    async def close(self) -> None:
        await self._base.close()


async def check_url(
    url: str, *, allow_insecure: bool, field: str = "url", resolve: bool = True
) -> None:
    """Raises InvalidArgument naming ``field`` unless ``url`` may receive webhooks.
    ``resolve=False`` (delivery, whose connector resolves with PublicOnlyResolver)
    checks everything but the host's DNS answer."""
    if len(url) > 2048:
        raise InvalidArgument.field(field, "at most 2048 characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InvalidArgument.field(field, "not a valid URL") from exc
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise InvalidArgument.field(field, "must be an https:// URL")
    if allow_insecure:
        return
    if parts.scheme != "https":
        raise InvalidArgument.field(field, "must be an https:// URL")
    if parts.username or parts.password:
        raise InvalidArgument.field(field, "must not carry credentials")
    if _literal(parts.hostname):  # connectors do not resolve an address
        if not public(parts.hostname):
            raise InvalidArgument.field(field, NOT_PUBLIC)
        return
    if not resolve:
        return
    try:
        async with asyncio.timeout(RESOLVE_TIMEOUT):
            infos = await asyncio.get_running_loop().getaddrinfo(
                parts.hostname, port or 443, type=socket.SOCK_STREAM
            )
    except (OSError, UnicodeError, TimeoutError) as exc:  # idna: empty or long labels
        raise InvalidArgument.field(field, "the host does not resolve") from exc
    for info in infos:
        if not public(str(info[4][0])):
            raise InvalidArgument.field(field, NOT_PUBLIC)
