"""SSRF guard for webhook endpoints: https only, public addresses only.

The host is resolved and every address checked; delivery connects only to an address
checked here and follows no redirect. ``allow_insecure`` (SMSGW_WEBHOOK_ALLOW_INSECURE)
lifts both rules for tests and development.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

from server.domain.errors import InvalidArgument

RESOLVE_TIMEOUT = 5.0  # seconds


def _public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
    )


async def check_url(url: str, *, allow_insecure: bool, field: str = "url") -> None:
    """Raises InvalidArgument naming ``field`` unless ``url`` may receive webhooks."""
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
    try:
        async with asyncio.timeout(RESOLVE_TIMEOUT):
            infos = await asyncio.get_running_loop().getaddrinfo(
                parts.hostname, port or 443, type=socket.SOCK_STREAM
            )
    except (OSError, UnicodeError, TimeoutError) as exc:  # idna: empty or long labels
        raise InvalidArgument.field(field, "the host does not resolve") from exc
    for info in infos:
        if not _public(str(info[4][0])):
            raise InvalidArgument.field(
                field, "resolves to a private, loopback or link-local address"
            )
