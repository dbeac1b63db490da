"""The sendsms provider (seed 002): ``sendsms`` / ``querysms`` with client_id + passcode.

Wire format (JSON POSTs, credentials in the body):

    POST {base_url}/api/sms/v1/sendsms
        {"client_id", "passcode", "phone_number", "templet_id", "contents": [{"p1": ..}]}
    POST {base_url}/api/sms/v1/querysms   {"client_id", "passcode", "sms_uid"}
    both answer {"sms_uid", "status": queuing|sent|delivered|error[_*], "error_code": "0"}

Decisions where the seed is silent:
- Numbers: the seed's example is the Chinese national number ("13800138000"), so
  +86 numbers go as their national significant number; every other country as the
  full E.164 digits without "+". A number that is not E.164 is refused here
  (REJECTED, "INVALID_NUMBER") without a call.
- Templates: the provider's template text has named placeholders (``${code}``) but
  ``contents`` carries positional ``p1..pn``: the k-th distinct placeholder of the
  template takes ``pk``. We fill p1..pn in our template's variable order (order of
  appearance in its text, ``message.variables``), never in the order ``data``
  holds its keys (a jsonb column does not keep it: issue 15). A message with more
  than one value whose order is not known is not sent (VARIABLE_ORDER_UNKNOWN).
  So the provider template must name its placeholders in the order ours does.
- The query takes one ``sms_uid``: ``max_status_ids`` is 1. A 404 answer to a query
  means the provider does not know that uid: no receipt (status unknown).
- Status "error" (or "error_*", which the seed mentions) answered to a send is a
  refusal (REJECTED); answered to a query it is a failed delivery (UNDELIVERED).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from server.domain.models import MessageStatus, OutboundMessage
from server.domain.ports import Capabilities, ProviderError, ProviderRef, Receipt, SendOutcome
from server.providers.http import TransientHttpError, call, new_session

SEND_PATH = "/api/sms/v1/sendsms"
QUERY_PATH = "/api/sms/v1/querysms"
# The seed's limit: one message per number per 60 s.
PER_NUMBER_WINDOW = 60.0

# HTTP answers that are a final refusal of a send ("Common Error Codes" of the seed).
# All of them are our request or our configuration at fault, so FAILED, not REJECTED.
# 429 (per-number or global limit) and 5xx never reach this table: ``call`` raises
# TransientHttpError for them and the send is retried later (error_code "HTTP_429",
# "HTTP_500", ...). Any other status is undocumented: retryable "BAD_RESPONSE".
SEND_REFUSALS: dict[int, MessageStatus] = {
    # Invalid request format: a malformed number, missing or extra template values.
    400: MessageStatus.FAILED,
    # Invalid passcode.
    401: MessageStatus.FAILED,
    # No access to the requested resource (an unknown client_id).
    403: MessageStatus.FAILED,
    # Not found: the templet_id is unknown to the provider (our template mapping).
    404: MessageStatus.FAILED,
}

# The "status" field of a 200 answer (send and query). "error" and "error_*" are
# handled apart (see ``is_error_status``): their meaning depends on the call.
STATUSES: dict[str, MessageStatus] = {
    # Accepted, waiting in the provider's queue.
    "queuing": MessageStatus.SENT,
    # Handed to the operator, no delivery report yet.
    "sent": MessageStatus.SENT,
    # Final: the handset received it.
    "delivered": MessageStatus.DELIVERED,
}

_E164 = re.compile(r"\+[1-9]\d{6,14}")


def provider_number(e164: str) -> str | None:
    """The number as sendsms takes it, or None when ``e164`` is not E.164."""
    if not _E164.fullmatch(e164):
        return None
    digits = e164[1:]
    return digits[2:] if digits.startswith("86") else digits


def ordered_values(message: OutboundMessage) -> list[str] | None:
    """The message's values in its template's variable order; None when that order
    is not known and matters (more than one value)."""
    data = message.data
    if set(message.variables) == set(data):
        return [data[name] for name in message.variables]
    if len(data) <= 1:
        return list(data.values())
    return None


def contents_for(values: Sequence[str]) -> list[dict[str, str]]:
    """Values in the template's order as the positional p1..pn."""
    return [{f"p{i}": value for i, value in enumerate(values, start=1)}]


def is_error_status(status: str) -> bool:
    return status == "error" or status.startswith("error_")


def error_code_of(body: dict[str, Any]) -> str:
    """The provider's error code of a failed message, never empty."""
    code = body.get("error_code")
    if isinstance(code, str | int) and str(code) not in ("", "0"):
        return str(code)
    status = body.get("status")
    return status if isinstance(status, str) and status else "error"


def send_outcome(status: int, body: Any) -> SendOutcome:
    """What an answer to sendsms (below 500 and not 429) means for the message."""
    refusal = SEND_REFUSALS.get(status)
    if refusal is not None:
        return SendOutcome(accepted=False, error_code=f"HTTP_{status}", final_status=refusal)
    if status != 200 or not isinstance(body, dict):
        return SendOutcome(accepted=False, retryable=True, error_code="BAD_RESPONSE")
    state = body.get("status")
    if isinstance(state, str) and is_error_status(state):
        return SendOutcome(
            accepted=False, error_code=error_code_of(body), final_status=MessageStatus.REJECTED
        )
    uid = body.get("sms_uid")
    if not isinstance(state, str) or state not in STATUSES or not isinstance(uid, str) or not uid:
        return SendOutcome(accepted=False, retryable=True, error_code="BAD_RESPONSE")
    return SendOutcome(accepted=True, provider_message_id=uid)


def query_status_of(body: Any, sms_uid: str) -> tuple[MessageStatus, str]:
    """Our status and error code from a 200 answer to querysms; raises ProviderError
    for an answer that is not about ``sms_uid`` or has an undocumented status."""
    if not isinstance(body, dict) or body.get("sms_uid") != sms_uid:
        raise ProviderError("sendsms querysms: answer is not about the queried sms_uid")
    state = body.get("status")
    if not isinstance(state, str):
        raise ProviderError("sendsms querysms: answer without a status")
    if is_error_status(state):
        return MessageStatus.UNDELIVERED, error_code_of(body)
    known = STATUSES.get(state)
    if known is None:
        raise ProviderError(f"sendsms querysms: undocumented status {state[:40]!r}")
    return known, ""


@dataclass(frozen=True)
class SendsmsConfig:
    name: str
    base_url: str
    client_id: str
    passcode: str = field(repr=False)
    timeout: float = 10.0
    # Our template code -> the provider's templet_id.
    templates: dict[str, str] = field(default_factory=dict)


class SendsmsTransport:
    capabilities = Capabilities(free_text=False, templates=True, max_status_ids=1)

    def __init__(self, config: SendsmsConfig, session: aiohttp.ClientSession | None = None) -> None:
        self.name = config.name
        self.config = config
        self._base = config.base_url.rstrip("/")
        self._session = session
        self._owns_session = session is None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = new_session()
        return self._session

    def can_carry(self, message: OutboundMessage) -> bool:
        return (
            message.template_code is not None
            and message.template_code in self.config.templates
            and ordered_values(message) is not None
        )

    async def _post(self, path: str, payload: dict[str, Any]) -> tuple[int, Any]:
        answer = await call(
            self._client(),
            "POST",
            self._base + path,
            seconds=self.config.timeout,
            json={
                "client_id": self.config.client_id,
                "passcode": self.config.passcode,
                **payload,
            },
        )
        return answer.status, answer.body

    async def send(self, message: OutboundMessage) -> SendOutcome:
        templet_id = self.config.templates.get(message.template_code or "")
        if templet_id is None:
            # The router should not have chosen us (can_carry): our configuration.
            return SendOutcome(accepted=False, error_code="NO_TEMPLATE")
        phone = provider_number(message.to_number)
        if phone is None:
            return SendOutcome(
                accepted=False, error_code="INVALID_NUMBER", final_status=MessageStatus.REJECTED
            )
        values = ordered_values(message)
        if values is None:
            # Guessing the order would put the wrong words in front of a person.
            return SendOutcome(accepted=False, error_code="VARIABLE_ORDER_UNKNOWN")
        payload = {
            "phone_number": phone,
            "templet_id": templet_id,
            "contents": contents_for(values),
        }
        try:
            status, body = await self._post(SEND_PATH, payload)
        except TransientHttpError as exc:
            # 429: one message per number per 60 s (or the global limit); retrying
            # this provider sooner would only be refused again.
            wait = PER_NUMBER_WINDOW if exc.code == "HTTP_429" else 0.0
            return SendOutcome(
                accepted=False, retryable=True, error_code=exc.code, retry_after=wait
            )
        return send_outcome(status, body)

    async def query_status(self, refs: Sequence[ProviderRef]) -> list[Receipt]:
        """One querysms call per ref (the API takes one sms_uid; callers pass one)."""
        receipts: list[Receipt] = []
        for ref in refs:
            receipt = await self._query_one(ref)
            if receipt is not None:
                receipts.append(receipt)
        return receipts

    async def _query_one(self, ref: ProviderRef) -> Receipt | None:
        try:
            status, body = await self._post(QUERY_PATH, {"sms_uid": ref.provider_message_id})
        except TransientHttpError as exc:
            raise ProviderError(f"sendsms querysms: {exc.code}") from exc
        if status == 404:
            return None  # the provider does not know this uid (yet): status unknown
        if status != 200:
            raise ProviderError(f"sendsms querysms: HTTP {status}")
        ours, error_code = query_status_of(body, ref.provider_message_id)
        return Receipt(
            provider=self.name,
            message_id=ref.message_id,
            status=ours,
            error_code=error_code,
            provider_message_id=ref.provider_message_id,
        )

    async def close(self) -> None:
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None
