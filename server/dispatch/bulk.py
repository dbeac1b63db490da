"""Planning provider requests (pure, no I/O): which routed messages share one request.

A provider with a bulk API (``BulkTransport``) takes many recipients in one request.
Batch messages routed to it go together when the transport gives them the same
``bulk_key`` and they belong to the same account (so one account's refused content
or failed request never takes another account's messages with it); a request holds
at most ``max_bulk`` messages and each mobile at most once. Everything else goes
alone: codes and single sends (they must not wait for a group), messages whose key
is None, and every message of a provider without a bulk API.

Requests come out in the order of their first message, so the claim's order (codes
first, then the accounts' fair shares) is the order in which they queue for rate
tokens.

How many messages a worker claims next (``next_claim_size``): a claim may cost at
most ``claim_size`` provider requests, so when the last claim's messages shared
requests (m messages a request on average), the next claim takes m times as many
messages, up to the largest request a provider takes. A campaign through a bulk API
then goes out in full requests (SendCloud: 2,000 numbers) rather than one request a
claim of ``claim_size``; traffic that goes alone keeps claims of ``claim_size``.
(The worker, dispatch/worker.py, keeps its first worker at ``claim_size`` when it
has others: codes then never wait behind large claims only.)
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass

from server.domain.models import OutboundMessage
from server.domain.ports import BulkTransport


@dataclass(frozen=True)
class Routed:
    """A claimed message and the provider chosen for this attempt."""

    message: OutboundMessage
    provider: str
    # Every provider that can carry the message, in failover order (decides retries).
    candidates: tuple[str, ...]
    # May share a request with others (a batch message).
    shareable: bool = False
    # Sent through an open breaker's trickle: a retryable failure costs no attempt.
    trickle: bool = False


@dataclass(frozen=True)
class Request:
    """One call to a provider: a single message, or a bulk group."""

    provider: str
    items: tuple[Routed, ...]
    bulk: bool = False


def bulk_api(transport: object) -> BulkTransport | None:
    """The transport as a BulkTransport when it takes more than one recipient a request."""
    if isinstance(transport, BulkTransport) and transport.max_bulk > 1:
        return transport
    return None


def bulk_claim_cap(transports: Mapping[str, object], limit: int) -> int:
    """The most messages one request of these providers takes (at most ``limit``; 1
    when none has a bulk API)."""
    sizes = [api.max_bulk for t in transports.values() if (api := bulk_api(t)) is not None]
    return min(max(sizes, default=1), limit)


def next_claim_size(claim_size: int, cap: int, messages: int, requests: int) -> int:
    """The next claim's size: as many messages as ``claim_size`` requests carried in
    the last claim (``messages`` in ``requests``), at least ``claim_size``, at most
    ``cap``."""
    if requests <= 0 or messages <= requests:
        return claim_size
    return max(claim_size, min(cap, claim_size * messages // requests))


def plan_requests(routed: Sequence[Routed], transports: Mapping[str, object]) -> list[Request]:
    """Groups routed messages into provider requests (see the module docstring)."""
    # Per group key, the requests still open (not full), each with its mobiles.
    open_requests: dict[tuple[str, int, Hashable], list[tuple[list[Routed], set[str]]]] = {}
    planned: list[list[Routed]] = []
    bulk_flags: list[bool] = []
    # Each provider's bulk API, looked up once a plan: the check is an isinstance of a
    # runtime protocol, which cost a 2,000-message claim more than its planning.
    apis: dict[str, BulkTransport | None] = {}
    for item in routed:
        if item.provider not in apis:
            apis[item.provider] = bulk_api(transports.get(item.provider))
        api = apis[item.provider] if item.shareable else None
        key = api.bulk_key(item.message) if api is not None else None
        if api is None or key is None:
            planned.append([item])
            bulk_flags.append(False)
            continue
        groups = open_requests.setdefault((item.provider, item.message.account_id, key), [])
        mobile = item.message.to_number
        for members, mobiles in groups:
            if len(members) < api.max_bulk and mobile not in mobiles:
                members.append(item)
                mobiles.add(mobile)
                break
        else:
            members = [item]
            groups.append((members, {mobile}))
            planned.append(members)
            bulk_flags.append(True)
        # Full requests leave the open list, so a long batch does not rescan them.
        groups[:] = [g for g in groups if len(g[0]) < api.max_bulk]
    return [
        Request(members[0].provider, tuple(members), bulk)
        for members, bulk in zip(planned, bulk_flags, strict=True)
    ]
