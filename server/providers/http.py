"""The HTTP plumbing every provider transport shares (aiohttp client).

``call`` performs one request with a total timeout and returns the answer, or raises
``TransientHttpError`` for what is worth retrying before the provider said
anything meaningful: timeouts, refused or dropped connections, 5xx, 429, and
success bodies that are not the JSON the provider documents (garbage). A 4xx whose
body is not JSON comes back with ``body=None`` so the status itself decides.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import aiohttp

from server.domain.models import MessageStatus
from server.domain.ports import SendOutcome

# A bulk request that may have reached the provider, though no answer says so: its
# messages end UNDELIVERED with this code rather than risk a second message each.
BULK_OUTCOME_UNKNOWN = "BULK_OUTCOME_UNKNOWN"


class TransientHttpError(Exception):
    """A failure worth retrying; ``code`` becomes the message's error_code."""

    def __init__(self, code: str, detail: str = "") -> None:
        super().__init__(f"{code}: {detail}" if detail else code)
        self.code = code


@dataclass(frozen=True)
class HttpAnswer:
    status: int
    body: Any  # parsed JSON


def new_session(*, limit: int = 100) -> aiohttp.ClientSession:
    """One pooled session per transport (connection reuse); created inside the loop."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=limit, ttl_dns_cache=300),
        raise_for_status=False,
    )


async def call(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    seconds: float,
    retry_statuses: frozenset[int] = frozenset({429}),
    **kwargs: Any,
) -> HttpAnswer:
    """One request bounded by ``seconds``; returns JSON answers below 500 (and not in
    ``retry_statuses``), raises TransientHttpError for the rest."""
    try:
        async with session.request(
            method, url, timeout=aiohttp.ClientTimeout(total=seconds), **kwargs
        ) as response:
            text = await response.text()
            status = response.status
    except TimeoutError as exc:
        raise TransientHttpError("TIMEOUT") from exc
    except (aiohttp.ClientError, OSError) as exc:
        raise TransientHttpError("CONNECTION", type(exc).__name__) from exc
    if status >= 500 or status in retry_statuses:
        raise TransientHttpError(f"HTTP_{status}")
    try:
        body = json.loads(text) if text.strip() else None
    except ValueError as exc:
        if 400 <= status < 500:
            # A client error whose body is an HTML or text page (a proxy's 401, say)
            # still means the request was refused: let the transport map the status.
            return HttpAnswer(status, None)
        raise TransientHttpError("BAD_RESPONSE", f"HTTP {status}, not JSON") from exc
    return HttpAnswer(status, body)


def bulk_outcome_unknown() -> SendOutcome:
    """The outcome of each message of a bulk request whose answer never came."""
    return SendOutcome(
        accepted=False,
        retryable=False,
        error_code=BULK_OUTCOME_UNKNOWN,
        final_status=MessageStatus.UNDELIVERED,
    )


def was_not_sent(exc: TransientHttpError, unsent_statuses: frozenset[str]) -> bool:
    """True when the failure shows the provider did not act on the request: one of
    ``unsent_statuses`` (the provider's answers that say so), or a connection that was
    never made."""
    if exc.code in unsent_statuses:
        return True
    return exc.code == "CONNECTION" and isinstance(exc.__cause__, aiohttp.ClientConnectorError)
