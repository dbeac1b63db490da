"""The declarative HTTP provider (kind "http"): a provider configured in the routing
file alone (generic_http_config has the options), for the many regional providers
whose API is "one request per message, an id back, a status by id or by push".

send:    the configured request with our fields filled in; accepted when the HTTP
         status is one of ``accepted`` (any 2xx by default), the ``success`` field
         (if set) holds its value and ``id`` names the provider's id. Otherwise the
         code at ``error`` (else HTTP_<status>) decides through ``errors``
         (retry | rejected | failed); undocumented codes: 429 retries, other 4xx
         fail. 5xx, timeouts and garbage are retried like every transport's.
status:  one request per message naming {provider_id}; the value at ``field``
         through ``statuses``; a "pending" status is left out.
receipt: a form pushed to /webhooks/http/<name>; we gave the provider
         ``receipt.url`` + ``?smsgw_id=<our id>&token=<secret>``, so a push must bring
         the secret back (constant-time compare) and names our message.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import logging
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import parse_qs, quote, urlencode, urlsplit

import aiohttp

from server.domain.models import MessageStatus, OutboundMessage, UseType
from server.domain.ports import Capabilities, ProviderError, ProviderRef, Receipt, SendOutcome
from server.providers.generic_http_config import (
    HttpProviderSpec,
    ReceiptSpec,
    fill,
    parse_options,
)
from server.providers.http import HttpAnswer, TransientHttpError, call, new_session
from server.providers.webhooks import HookRequest

log = logging.getLogger(__name__)

BAD_RESPONSE = "BAD_RESPONSE"
MAX_STATUS_IDS = 20
FETCH_CONCURRENCY = 5
THROTTLE_WAIT = 1.0
OUR_ID = "smsgw_id"
_USE_TYPES = {
    UseType.VERIFICATION: "verification",
    UseType.NOTIFICATION: "notification",
    UseType.MARKETING: "marketing",
}


def at_path(body: Any, path: str) -> Any:
    """The value at a dotted JSON path ("messages.0.message-id"), or None."""
    value = body
    for part in path.split("."):
        if isinstance(value, dict):
            value = value.get(part)
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return None
    return value


def _scalar(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return ""
    return str(value) if isinstance(value, str | int | float) else ""


def _filled(value: Any, values: Mapping[str, str]) -> Any:
    if isinstance(value, str):
        return fill(value, values)
    if isinstance(value, dict):
        return {k: _filled(v, values) for k, v in value.items()}
    if isinstance(value, list):
        return [_filled(v, values) for v in value]
    return value


class GenericHttpTransport:
    """One provider described by the routing file."""

    def __init__(
        self,
        name: str,
        base_url: str,
        credentials: Mapping[str, str],
        options: Mapping[str, Any],
        *,
        timeout: float = 10.0,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self.name = name
        self.spec: HttpProviderSpec = parse_options(name, options, frozenset(credentials))
        self._base = base_url.rstrip("/")
        self._secrets = dict(credentials)
        self._timeout = timeout
        self._session = session
        self._owns_session = session is None
        self.capabilities = Capabilities(
            free_text=True,
            templates=True,
            max_status_ids=MAX_STATUS_IDS if self.spec.status is not None else 0,
        )
        auth = self.spec.auth
        self._headers: dict[str, str] = {}
        self._query: dict[str, str] = {}
        if auth.type == "basic":
            pair = f"{fill(auth.username, self._secrets)}:{fill(auth.password, self._secrets)}"
            self._headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        elif auth.type == "header":
            self._headers[auth.name] = fill(auth.value, self._secrets)
        elif auth.type == "query":
            self._query[auth.name] = fill(auth.value, self._secrets)
        receipt = self.spec.receipt
        self._token = fill(receipt.token, self._secrets) if receipt else ""

    def can_carry(self, message: OutboundMessage) -> bool:
        """Always: the provider takes our rendered text."""
        return True

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = new_session()
        return self._session

    def _url(self, path: str) -> str:
        url = self._base + path
        if self._query:
            url += ("&" if "?" in url else "?") + urlencode(self._query)
        return url

    def _receipt_url(self, receipt: ReceiptSpec, message_id: str) -> str:
        query = {OUR_ID: message_id}
        if self._token:
            query["token"] = self._token
        return receipt.url + ("&" if "?" in receipt.url else "?") + urlencode(query)

    async def _request(self, method: str, url: str, **kwargs: Any) -> HttpAnswer:
        headers = {**self._headers, **kwargs.pop("headers", {})}
        return await call(
            self._client(),
            method,
            url,
            seconds=self._timeout,
            retry_statuses=frozenset(),
            headers=headers,
            **kwargs,
        )

    # -- sending -------------------------------------------------------------------

    def _values(self, message: OutboundMessage) -> dict[str, str]:
        values = {
            **self._secrets,
            "to": message.to_number,
            "to_digits": message.to_number.removeprefix("+"),
            "text": message.body,
            "id": message.id,
            "use_type": _USE_TYPES.get(message.use_type, "notification"),
        }
        if self.spec.receipt is not None:
            values["receipt_url"] = self._receipt_url(self.spec.receipt, message.id)
        return values

    async def send(self, message: OutboundMessage) -> SendOutcome:
        send = self.spec.send
        values = self._values(message)
        body = _filled(dict(send.body), values)
        kwargs: dict[str, Any] = {"headers": _filled(dict(send.headers), values)}
        if send.method == "GET":
            kwargs["params"] = {k: _scalar(v) for k, v in body.items()}
        elif send.format == "form":
            kwargs["data"] = {k: _scalar(v) for k, v in body.items()}
        else:
            kwargs["json"] = body
        try:
            answer = await self._request(send.method, self._url(fill(send.path, values)), **kwargs)
        except TransientHttpError as exc:
            return SendOutcome(accepted=False, retryable=True, error_code=exc.code)
        outcome = self._outcome(answer)
        if not outcome.accepted:
            log.warning(
                "http provider %s refused message %s: %s (HTTP %d)",
                self.name,
                message.id,
                outcome.error_code[:80],
                answer.status,
            )
        return outcome

    def _outcome(self, answer: HttpAnswer) -> SendOutcome:
        send = self.spec.send
        status_ok = answer.status in send.accepted if send.accepted else 200 <= answer.status < 300
        body_ok = (
            send.success is None
            or _scalar(at_path(answer.body, send.success[0])) == (send.success[1])
        )
        if status_ok and body_ok:
            provider_id = _scalar(at_path(answer.body, send.id))
            if provider_id:
                return SendOutcome(accepted=True, provider_message_id=provider_id)
            return SendOutcome(accepted=False, retryable=True, error_code=BAD_RESPONSE)
        code = _scalar(at_path(answer.body, send.error)) if send.error else ""
        error_code = (code or f"HTTP_{answer.status}")[:64]
        kind = send.errors.get(code) if code else None
        if kind is None:
            kind = send.errors.get(f"HTTP_{answer.status}")
        if kind is None:
            kind = "retry" if answer.status == 429 else "failed"
        if kind == "retry":
            return SendOutcome(
                accepted=False, retryable=True, error_code=error_code, retry_after=THROTTLE_WAIT
            )
        final = MessageStatus.REJECTED if kind == "rejected" else MessageStatus.FAILED
        return SendOutcome(accepted=False, error_code=error_code, final_status=final)

    # -- status polling ----------------------------------------------------------

    async def query_status(self, refs: Sequence[ProviderRef]) -> list[Receipt]:
        if self.spec.status is None:
            return []
        gate = asyncio.Semaphore(FETCH_CONCURRENCY)

        async def one(ref: ProviderRef) -> Receipt | None:
            async with gate:
                return await self._fetch(ref)

        found = await asyncio.gather(*(one(r) for r in refs if r.provider_message_id))
        return [receipt for receipt in found if receipt is not None]

    async def _fetch(self, ref: ProviderRef) -> Receipt | None:
        status = self.spec.status
        assert status is not None
        values = {**self._secrets, "provider_id": quote(ref.provider_message_id, safe="")}
        try:
            answer = await self._request(status.method, self._url(fill(status.path, values)))
        except TransientHttpError as exc:
            raise ProviderError(f"http provider {self.name}: status failed: {exc.code}") from exc
        if answer.status == 404:
            return None
        if answer.status != 200:
            raise ProviderError(f"http provider {self.name}: status answered {answer.status}")
        wire = _scalar(at_path(answer.body, status.field))
        error = _scalar(at_path(answer.body, status.error)) if status.error else ""
        return self._receipt(
            ref.message_id, ref.provider_message_id, wire, error, status.statuses, status.ok_errors
        )

    def _receipt(
        self,
        message_id: str,
        provider_id: str,
        wire: str,
        error: str,
        statuses: Mapping[str, MessageStatus | None],
        ok_errors: frozenset[str],
    ) -> Receipt | None:
        if wire not in statuses:
            log.warning("http provider %s: unmapped status %r", self.name, wire[:40])
            return None
        ours = statuses[wire]
        if ours is None:
            return None
        error_code = ""
        if ours != MessageStatus.DELIVERED:
            error_code = (error if error and error not in ok_errors else wire)[:64]
        return Receipt(self.name, message_id, ours, error_code, provider_message_id=provider_id)

    # -- pushed receipts -----------------------------------------------------------

    def parse_hook(
        self,
        form: Mapping[str, str],
        *,
        now: float | None = None,
        request: HookRequest | None = None,
    ) -> list[Receipt]:
        """The receipt of one push; raises ProviderError unless it carries the secret
        token we put in its URL and the configured fields."""
        receipt = self.spec.receipt
        if receipt is None:
            raise ProviderError(f"http provider {self.name}: no receipt table configured")
        query = parse_qs(urlsplit(request.raw_path).query) if request is not None else {}
        if self._token and not hmac.compare_digest(
            query.get("token", [""])[0].encode(), self._token.encode()
        ):
            raise ProviderError("receipt push without the configured token")
        provider_id, wire = form.get(receipt.id, ""), form.get(receipt.field, "")
        if not provider_id or not wire:
            raise ProviderError(f"receipt push without {receipt.id} and {receipt.field}")
        ours = query.get(OUR_ID, [""])[0][:128]
        found = self._receipt(
            ours,
            provider_id,
            wire,
            form.get(receipt.error, "") if receipt.error else "",
            receipt.statuses,
            receipt.ok_errors,
        )
        return [] if found is None else [found]

    async def close(self) -> None:
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None
