"""Twilio Programmable Messaging transport (REST ``Messages`` resource).

send:    POST {base_url}/2010-04-01/Accounts/{AccountSid}/Messages.json, a form with
         To, Body, From (option ``from_number``) or MessagingServiceSid (option
         ``messaging_service_sid``), and StatusCallback when ``status_callback`` is
         configured; HTTP Basic auth with the Account SID and the auth token. Answered
         201 with the Message ({"sid": "SM...", "status": "queued", ...}) or an error
         {"code", "message", "more_info", "status"} (twilio_codes.ERROR_CODES).
status:  GET {base_url}/2010-04-01/Accounts/{AccountSid}/Messages/{Sid}.json, one per
         message (the fallback when callbacks are lost or not configured).
inbound: Twilio POSTs each message a recipient sends to the number's "A message comes
         in" webhook, ``inbound_url`` (/inbound/twilio/<name> on our HTTP port): a
         form with MessageSid, From, To, Body, signed like status callbacks.
receipt: Twilio POSTs a form to StatusCallback on each status change (MessageSid,
         MessageStatus, ErrorCode, ...), signed in X-Twilio-Signature; it is checked
         with the official ``twilio`` package's RequestValidator over the URL Twilio
         called: the StatusCallback we gave it, or the origin of ``status_callback``
         with the path and query our HTTP port received.

Each message's StatusCallback carries our message id (``?smsgw_id=...``); Twilio
signs the URL, so a verified callback names our message even before its sid is
recorded (a lost create answer). Twilio offers no idempotency key for creating a
Message: a create whose answer is lost (timeout) is retried like every transport's,
and may reach the recipient twice.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import aiohttp
from twilio.request_validator import RequestValidator

from server.domain.inbound import InboundSms
from server.domain.models import MessageStatus, OutboundMessage
from server.domain.ports import Capabilities, ProviderError, ProviderRef, Receipt, SendOutcome
from server.domain.suppression import SuppressionReason
from server.providers.http import HttpAnswer, TransientHttpError, call, new_session
from server.providers.twilio_codes import (
    API_VERSION,
    FINAL_STATUSES,
    IN_FLIGHT,
    as_code,
    code_rule,
)
from server.providers.webhooks import HookRequest

log = logging.getLogger(__name__)

BAD_RESPONSE = "BAD_RESPONSE"
MAX_STATUS_IDS = 20  # messages fetched per poll round (one GET each)
FETCH_CONCURRENCY = 5
THROTTLE_WAIT = 1.0  # seconds before trying Twilio again after a 429
OUR_ID = "smsgw_id"  # the StatusCallback query parameter naming our message
UNSUBSCRIBED = 21610  # Attempt to send to unsubscribed recipient


@dataclass(frozen=True)
class TwilioConfig:
    name: str
    base_url: str  # https://api.twilio.com
    account_sid: str  # AC...
    auth_token: str = field(repr=False)
    timeout: float = 10.0
    templates: dict[str, str] = field(default_factory=dict)  # unused: Twilio takes text
    from_number: str = ""  # a number (E.164) or alphanumeric sender of the account
    messaging_service_sid: str = ""  # MG...: Twilio picks the sender
    # The public URL of /webhooks/twilio/<name> on our HTTP port; empty: no callbacks,
    # statuses come from polling alone.
    status_callback: str = ""
    # The public URL of /inbound/twilio/<name> on our HTTP port, as set for the number's
    # "A message comes in" webhook; empty: inbound messages are refused.
    inbound_url: str = ""

    def __post_init__(self) -> None:
        where = f"twilio provider {self.name!r}"
        if not self.name:
            raise ValueError("twilio provider: name is required")
        if not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"{where}: base_url must start with http:// or https://")
        if not self.account_sid or not self.auth_token:
            raise ValueError(f"{where}: account_sid and auth_token are required")
        if bool(self.from_number) == bool(self.messaging_service_sid):
            raise ValueError(f"{where}: set exactly one of from_number, messaging_service_sid")
        if self.status_callback:
            parts = urlsplit(self.status_callback)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"{where}: status_callback must be an http(s) URL")
            if "_" in parts.hostname:
                raise ValueError(f"{where}: Twilio refuses callback hosts with underscores")
        if self.inbound_url:
            parts = urlsplit(self.inbound_url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"{where}: inbound_url must be an http(s) URL")
        if self.timeout <= 0:
            raise ValueError(f"{where}: timeout must be positive")


def callback_url(status_callback: str, message_id: str) -> str:
    """The StatusCallback of one message: the configured URL naming our message."""
    joiner = "&" if "?" in status_callback else "?"
    return f"{status_callback}{joiner}{OUR_ID}={quote(message_id, safe='')}"


def send_outcome(answer: HttpAnswer) -> SendOutcome:
    """Maps the answer to a create (pure; never raises)."""
    body = answer.body if isinstance(answer.body, dict) else {}
    if 200 <= answer.status < 300:
        sid = body.get("sid")
        if not isinstance(sid, str) or not sid:
            return SendOutcome(accepted=False, retryable=True, error_code=BAD_RESPONSE)
        if body.get("status") == "failed":
            code = as_code(body.get("error_code"))
            return SendOutcome(accepted=False, error_code=str(code or "failed"))
        return SendOutcome(accepted=True, provider_message_id=sid)
    code = as_code(body.get("code"))
    rule = code_rule(code, answer.status)
    return SendOutcome(
        accepted=False,
        retryable=rule.retryable,
        error_code=str(code) if code is not None else f"HTTP_{answer.status}",
        final_status=rule.final_status,
        retry_after=THROTTLE_WAIT if rule.retryable else 0.0,
        # The recipient replied STOP to this Twilio number: the account's too.
        suppress=int(SuppressionReason.OPT_OUT) if code == UNSUBSCRIBED else 0,
    )


def receipt_of(
    provider: str, message_id: str, sid: str, status: str, error: object
) -> Receipt | None:
    """The receipt a final status makes (None while the message is on its way)."""
    ours = FINAL_STATUSES.get(status)
    if ours is None:
        if status not in IN_FLIGHT:
            log.warning("twilio %s: undocumented status %r for %s", provider, status[:40], sid)
        return None
    code = as_code(error)
    error_code = ""
    if ours != MessageStatus.DELIVERED:
        error_code = str(code) if code else status
    return Receipt(provider, message_id, ours, error_code, provider_message_id=sid)


class TwilioTransport:
    """Sends through one Twilio account; receipts by signed callback or by polling."""

    capabilities = Capabilities(free_text=True, templates=True, max_status_ids=MAX_STATUS_IDS)

    def __init__(self, config: TwilioConfig, session: aiohttp.ClientSession | None = None) -> None:
        self.name = config.name
        self._config = config
        self._session = session
        self._owns_session = session is None
        self._messages_url = (
            f"{config.base_url.rstrip('/')}/{API_VERSION}/Accounts/{config.account_sid}/Messages"
        )
        token = base64.b64encode(f"{config.account_sid}:{config.auth_token}".encode()).decode()
        self._headers = {"Authorization": f"Basic {token}"}
        self._validator = RequestValidator(config.auth_token)
        parts = urlsplit(config.status_callback)
        self._callback_origin = f"{parts.scheme}://{parts.netloc}" if parts.netloc else ""
        parts = urlsplit(config.inbound_url)
        self._inbound_origin = f"{parts.scheme}://{parts.netloc}" if parts.netloc else ""

    def can_carry(self, message: OutboundMessage) -> bool:
        """Always: Twilio takes the rendered text, templates included."""
        return True

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = new_session()
        return self._session

    async def _request(self, method: str, url: str, **kwargs: Any) -> HttpAnswer:
        # 429 carries Twilio's code 20429 in its body: the answer decides, not call().
        return await call(
            self._client(),
            method,
            url,
            seconds=self._config.timeout,
            retry_statuses=frozenset(),
            headers=self._headers,
            **kwargs,
        )

    async def send(self, message: OutboundMessage) -> SendOutcome:
        form = {"To": message.to_number, "Body": message.body}
        if self._config.messaging_service_sid:
            form["MessagingServiceSid"] = self._config.messaging_service_sid
        else:
            form["From"] = self._config.from_number
        if self._config.status_callback:
            form["StatusCallback"] = callback_url(self._config.status_callback, message.id)
        try:
            answer = await self._request("POST", self._messages_url + ".json", data=form)
        except TransientHttpError as exc:
            return SendOutcome(accepted=False, retryable=True, error_code=exc.code)
        outcome = send_outcome(answer)
        if not outcome.accepted:
            detail = answer.body.get("message") if isinstance(answer.body, dict) else None
            log.warning(
                "twilio %s refused message %s: %s (%.120s)",
                self.name,
                message.id,
                outcome.error_code,
                detail if isinstance(detail, str) else f"HTTP {answer.status}",
            )
        return outcome

    # -- status polling ----------------------------------------------------------

    async def query_status(self, refs: Sequence[ProviderRef]) -> list[Receipt]:
        wanted = [r for r in refs if r.provider_message_id]
        gate = asyncio.Semaphore(FETCH_CONCURRENCY)

        async def one(ref: ProviderRef) -> Receipt | None:
            async with gate:
                return await self._fetch(ref)

        found = await asyncio.gather(*(one(ref) for ref in wanted))
        return [receipt for receipt in found if receipt is not None]

    async def _fetch(self, ref: ProviderRef) -> Receipt | None:
        url = f"{self._messages_url}/{quote(ref.provider_message_id, safe='')}.json"
        try:
            answer = await self._request("GET", url)
        except TransientHttpError as exc:
            raise ProviderError(f"twilio {self.name}: fetch failed: {exc.code}") from exc
        if answer.status == 404:
            return None  # Twilio does not know this sid: no status to report
        body = answer.body
        if answer.status != 200 or not isinstance(body, dict):
            raise ProviderError(f"twilio {self.name}: fetch answered HTTP {answer.status}")
        status = body.get("status")
        if not isinstance(status, str):
            raise ProviderError(f"twilio {self.name}: fetch answer has no status")
        return receipt_of(
            self.name, ref.message_id, ref.provider_message_id, status, body.get("error_code")
        )

    # -- status callbacks ----------------------------------------------------------

    def parse_hook(
        self,
        form: Mapping[str, str],
        *,
        now: float | None = None,
        request: HookRequest | None = None,
    ) -> list[Receipt]:
        """The receipt of one verified status callback (none for a status on the way);
        raises ProviderError for an unsigned, forged or malformed one. Twilio signs no
        timestamp: a replayed callback repeats a status already recorded, which
        changes nothing (a status never moves backwards)."""
        if not self._callback_origin:
            raise ProviderError(f"twilio {self.name}: no status_callback configured")
        signature = request.headers.get("X-Twilio-Signature", "") if request else ""
        if request is None or not signature:
            raise ProviderError("Twilio callback without X-Twilio-Signature")
        ours = parse_qs(urlsplit(request.raw_path).query).get(OUR_ID, [""])[0]
        # The URL Twilio signed: the one we gave it (even if a proxy rewrote the path),
        # or the public origin with the path and query as received.
        urls = [self._callback_origin + request.raw_path]
        if ours:
            urls.insert(0, callback_url(self._config.status_callback, ours))
        if not any(self._validator.validate(url, dict(form), signature) for url in urls):
            raise ProviderError("X-Twilio-Signature does not match (wrong auth token or forged)")
        sid, status = form.get("MessageSid", ""), form.get("MessageStatus", "")
        if not sid or not status:
            # An inbound message (SmsStatus "received") is not a receipt: Twilio posts
            # those to inbound_url (/inbound/twilio/<name>).
            raise ProviderError("Twilio callback without MessageSid and MessageStatus")
        receipt = receipt_of(self.name, ours[:128], sid, status, form.get("ErrorCode"))
        return [] if receipt is None else [receipt]

    # -- inbound messages ------------------------------------------------------------

    def parse_inbound(
        self, form: Mapping[str, str], *, request: HookRequest | None = None
    ) -> InboundSms:
        """The message of one verified "A message comes in" webhook (MessageSid, From,
        To, Body), signed like status callbacks over ``inbound_url``, or its origin
        with the path and query our HTTP port received (behind a proxy)."""
        if not self._inbound_origin:
            raise ProviderError(f"twilio {self.name}: no inbound_url configured")
        signature = request.headers.get("X-Twilio-Signature", "") if request else ""
        if request is None or not signature:
            raise ProviderError("Twilio inbound webhook without X-Twilio-Signature")
        urls = [self._config.inbound_url, self._inbound_origin + request.raw_path]
        if not any(self._validator.validate(url, dict(form), signature) for url in urls):
            raise ProviderError("X-Twilio-Signature does not match (wrong auth token or forged)")
        sid = form.get("MessageSid") or form.get("SmsMessageSid") or ""
        sender, to = form.get("From", ""), form.get("To", "")
        if not sid or not sender or not to:
            raise ProviderError("Twilio inbound webhook without MessageSid, From and To")
        return InboundSms(
            provider=self.name,
            from_number=sender,
            to_number=to,
            text=form.get("Body", ""),
            provider_message_id=sid[:64],
        )

    async def close(self) -> None:
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None
