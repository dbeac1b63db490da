"""SendCloud SMS transport (seed 001): template sends (one number or up to 2,000
sharing one content), verification codes (sendCode), voice codes (sendVoice), the
status query and SMSHook parsing.

Which endpoint carries what:

* ``send``: a message whose template code maps to a SendCloud templateId (config
  ``templates``); messages with the same template and variables can share one
  request (``BulkTransport``: up to 2,000 phones, one smsId per number).
* ``sendCode``: an SMS verification code of 4-6 digits when a signature is
  configured (``sign_id`` wins over ``sign_name``) and the caller did not pick a
  mapped template: SendCloud words the text itself, no template needed.
* ``sendVoice``: a VOICE verification code of 4-6 digits.
* ``status/query``: receipts by smsId (``sendcloud_status`` has the published shape).

Wire format, as SendCloud documents it:

* Every call is a form-encoded POST carrying ``smsUser`` and ``signature``: sort all
  parameters but ``smsKey``/``signature`` by name, join ``k=v`` with ``&`` (not
  URL-encoded), wrap as ``smsKey&...&smsKey`` and take the lowercase hex MD5. Sends
  add a ``timestamp`` in milliseconds (more than 6 s from server time is code 461).
* Numbers: mainland China (+86) goes as the 11-digit national number, others as
  ``00`` + country code + number. ``send`` uses msgType 0 (SMS); ``sendCode`` uses
  msgType 0 for +86 and 2 (international SMS) otherwise.
* ``vars`` is JSON with SendCloud's ``%name%`` keys: {"order_no": "A-1"} is sent as
  {"%order_no%": "A-1"}, matching templates written as "... %order_no% ...".
* ``sendRequestId`` makes a retry safe: a repeat within an hour is answered 400
  "duplicate request" and not sent again. A single message uses our message id; a
  bulk request a hash of its messages' ids, so the same group repeats the same id.
* ``tag`` = {"smsgw": "<our message id>"} on single sends; SMSHook events carrying it
  back are matched to the message by it, whatever smsId was recorded.
* A 400 answer may come without the first request's smsIds (the seed shows none):
  the transport then recovers them with a status query by phone (and templateId),
  the latest request to each number.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import time
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from server.domain.models import Channel, MessageStatus, OutboundMessage, UseType
from server.domain.ports import Capabilities, ProviderError, ProviderRef, Receipt, SendOutcome
from server.providers import sendcloud_status
from server.providers.http import (
    TransientHttpError,
    bulk_outcome_unknown,
    call,
    new_session,
    was_not_sent,
)
from server.providers.sendcloud_codes import RETURN_CODES, Verdict, refusal
from server.providers.sendcloud_hook import HookVerifier, receipt_from_hook
from server.providers.sendcloud_status import as_int
from server.providers.webhooks import HookRequest

log = logging.getLogger(__name__)

MAX_STATUS_IDS = sendcloud_status.MAX_IDS
MAX_BULK = 2000  # phones per ``send`` (seed 001)
MAX_REQUEST_ID = 128
MAX_RECOVERY_PAGES = 20  # of 100 records, per 100 numbers
MAX_TAG = 128
_CODE = re.compile(r"[0-9]{4,6}")
_CLOCK_SKEW = 461
_DUPLICATE = 400
_PARTIAL = 311
_ALL_FAILED = 312
BULK_REPEAT_DELAYS = (0.5, 2.0)  # seconds before asking a lost bulk answer again
# Answers that say SendCloud did not act on the request: safe to send again later.
_UNSENT_STATUSES = frozenset({"HTTP_500", "HTTP_503", "HTTP_429"})


def sign_request(params: Mapping[str, str], sms_key: str) -> str:
    """SendCloud's MD5 request signature over the raw (not URL-encoded) values."""
    pairs = "&".join(f"{k}={params[k]}" for k in sorted(params) if k not in ("smsKey", "signature"))
    return hashlib.md5(f"{sms_key}&{pairs}&{sms_key}".encode()).hexdigest()


def sendcloud_phone(e164: str) -> tuple[str, bool]:
    """(number as SendCloud wants it, whether it is a mainland China number)."""
    digits = e164.removeprefix("+")
    if digits.startswith("86"):
        return digits[2:], True
    return "00" + digits, False


def request_id(message_id: str) -> str:
    """Our message id as sendRequestId (at most 128 characters, stable across retries)."""
    if len(message_id) <= MAX_REQUEST_ID:
        return message_id
    return hashlib.sha256(message_id.encode()).hexdigest()


def bulk_request_id(message_ids: Sequence[str]) -> str:
    """One sendRequestId for a group: the same messages give the same id, in any order."""
    digest = hashlib.sha256("\n".join(sorted(message_ids)).encode()).hexdigest()
    return f"bulk-{digest}"


def message_tag(message_id: str) -> str | None:
    """The ``tag`` naming our message (None if it would pass SendCloud's 128 chars)."""
    tag = json.dumps({"smsgw": message_id}, separators=(",", ":"))
    return tag if len(tag) <= MAX_TAG else None


def code_fits(code: str | None) -> bool:
    """sendCode and sendVoice take codes of 4-6 digits (seed 001)."""
    return code is not None and _CODE.fullmatch(code) is not None


@dataclass(frozen=True)
class SendCloudConfig:
    name: str
    base_url: str  # https://api.sendcloud.net
    sms_user: str
    sms_key: str
    timeout: float = 10.0
    # Our template code -> SendCloud templateId.
    templates: dict[str, str] = field(default_factory=dict)
    # The SMS signature for sendCode: signId wins over signName when both are set.
    sign_name: str = ""
    sign_id: str = ""
    # How old (s) an SMSHook event may be, and how far in the future.
    hook_max_age: float = 300.0
    hook_max_skew: float = 60.0
    # The status query's ``days`` (1 = today in Beijing; SendCloud allows up to 30).
    status_days: int = 3

    def __post_init__(self) -> None:
        for name in ("name", "base_url", "sms_user", "sms_key"):
            if not getattr(self, name):
                raise ValueError(f"sendcloud provider config needs {name}")
        if self.timeout <= 0:
            raise ValueError("sendcloud timeout must be positive")
        if not 1 <= self.status_days <= sendcloud_status.MAX_DAYS:
            raise ValueError(f"sendcloud status_days must be 1 to {sendcloud_status.MAX_DAYS}")


@dataclass(frozen=True)
class _Request:
    """One request to an endpoint on behalf of some messages (one phone each)."""

    endpoint: str
    params: dict[str, str]
    phones: list[str]
    # How to find the smsIds again when a repeat is answered 400 without them.
    recover: dict[str, str]


class SendCloudTransport:
    capabilities = Capabilities(
        free_text=False, templates=True, voice=True, max_status_ids=MAX_STATUS_IDS
    )
    max_bulk = MAX_BULK

    def __init__(
        self, config: SendCloudConfig, session: aiohttp.ClientSession | None = None
    ) -> None:
        self.name = config.name
        self._config = config
        self._session = session
        self._owns_session = session is None
        self._clock_offset_ms = 0  # SendCloud's clock minus ours, learnt on 461
        self._hooks = HookVerifier(
            config.sms_key, max_age=config.hook_max_age, max_skew=config.hook_max_skew
        )

    # -- what goes where -----------------------------------------------------------

    def can_carry(self, message: OutboundMessage) -> bool:
        """Whether SendCloud can take ``message`` as it is: a voice code of 4-6 digits
        (sendVoice), an SMS code that fits sendCode, or a mapped template (send)."""
        if message.channel == Channel.VOICE:
            return code_fits(message.code)
        return self._uses_send_code(message) or self._template_of(message) is not None

    def can_carry_voice(self, message: OutboundMessage) -> bool:
        """sendVoice takes codes of 4-6 digits only (seed 001); routing asks this for
        voice, so a longer code is refused at the call, never accepted and dropped."""
        return code_fits(message.code)

    def _template_of(self, message: OutboundMessage) -> str | None:
        return self._config.templates.get(message.template_code or "")

    def _uses_send_code(self, message: OutboundMessage) -> bool:
        """An SMS verification code goes through sendCode when it fits (4-6 digits, a
        signature configured), unless the caller picked a template we can send."""
        return (
            message.channel != Channel.VOICE
            and message.use_type == UseType.VERIFICATION
            and code_fits(message.code)
            and bool(self._config.sign_id or self._config.sign_name)
            and self._template_of(message) is None
        )

    # -- sending -------------------------------------------------------------------

    async def send(self, message: OutboundMessage) -> SendOutcome:
        if message.channel == Channel.VOICE:
            if message.code is None:
                return SendOutcome(accepted=False, error_code="INVALID_CODE")
            return await self.send_voice(message, message.code)
        if self._uses_send_code(message):
            assert message.code is not None
            return await self.send_code(message, message.code)
        template = self._template_of(message)
        if template is None:
            return SendOutcome(accepted=False, error_code="NO_TEMPLATE")
        phone, _ = sendcloud_phone(message.to_number)
        params = {
            "templateId": template,
            "msgType": "0",
            "phone": phone,
            "vars": _vars(message.data),
            "sendRequestId": request_id(message.id),
        }
        _add_tag(params, message.id)
        return (await self._send(_Request("send", params, [phone], {"templateId": template})))[0]

    async def send_code(self, message: OutboundMessage, code: str) -> SendOutcome:
        """A verification code in SendCloud's own wording (no template needed)."""
        if not code_fits(code):
            return SendOutcome(accepted=False, error_code="INVALID_CODE")
        if not (self._config.sign_id or self._config.sign_name):
            return SendOutcome(accepted=False, error_code="NO_SIGNATURE")
        phone, domestic = sendcloud_phone(message.to_number)
        msg_type = "0" if domestic else "2"
        params = {
            "msgType": msg_type,
            "phone": phone,
            "code": code,
            "sendRequestId": request_id(message.id),
        }
        if self._config.sign_id:
            params["signId"] = self._config.sign_id
        else:
            params["signName"] = self._config.sign_name
        _add_tag(params, message.id)
        request = _Request("sendCode", params, [phone], {"msgTypeStr": msg_type})
        return (await self._send(request))[0]

    async def send_voice(self, message: OutboundMessage, code: str) -> SendOutcome:
        """A verification code read out by a voice call."""
        if not code_fits(code):
            return SendOutcome(accepted=False, error_code="INVALID_CODE")
        phone, _ = sendcloud_phone(message.to_number)
        params = {"phone": phone, "code": code, "sendRequestId": request_id(message.id)}
        _add_tag(params, message.id)
        return (await self._send(_Request("sendVoice", params, [phone], {"msgTypeStr": "3"})))[0]

    # -- bulk (BulkTransport) ------------------------------------------------------

    def bulk_key(self, message: OutboundMessage) -> Hashable | None:
        """Template sends with the same use type, templateId and variables share a request;
        codes (sendCode, sendVoice take one number) and unmapped messages go alone."""
        if message.channel == Channel.VOICE or self._uses_send_code(message):
            return None
        template = self._template_of(message)
        if template is None:
            return None
        return ("send", int(message.use_type), template, _vars(message.data))

    async def send_bulk(self, messages: Sequence[OutboundMessage]) -> list[SendOutcome]:
        """One ``send`` with every number (at most 2,000, each once); each message gets
        the outcome of its own number."""
        if not messages:
            return []
        keys = {self.bulk_key(m) for m in messages}
        if len(messages) == 1 or len(keys) != 1 or None in keys:
            return [await self.send(m) for m in messages]
        phones = [sendcloud_phone(m.to_number)[0] for m in messages]
        if len(messages) > MAX_BULK or len(set(phones)) != len(phones):
            # The dispatcher should not hand us this; split rather than fail the group.
            return await self._split(messages, phones)
        first = messages[0]
        template = self._template_of(first)
        assert template is not None
        params = {
            "templateId": template,
            "msgType": "0",
            "phone": ",".join(phones),
            "vars": _vars(first.data),
            "sendRequestId": bulk_request_id([m.id for m in messages]),
        }
        return await self._send_bulk(_Request("send", params, phones, {"templateId": template}))

    async def _send_bulk(self, request: _Request) -> list[SendOutcome]:
        """A bulk ``send`` whose answer may be lost. Its sendRequestId is a hash of the
        group, so only this exact request is recognised as a repeat: the dispatcher,
        retrying each message, would regroup them under another id and SendCloud would
        send twice. So a lost answer is asked again here, with the same id (a 400
        "duplicate request" then names the smsIds), and when no answer comes at all the
        numbers end UNDELIVERED with BULK_OUTCOME_UNKNOWN rather than risk a second
        message. What SendCloud cannot have acted on (refused connection, 500, 503,
        429) stays retryable."""
        for delay in (*BULK_REPEAT_DELAYS, None):
            try:
                body = await self._post(request.endpoint, request.params)
            except TransientHttpError as exc:
                if was_not_sent(exc, _UNSENT_STATUSES):
                    outcome = SendOutcome(accepted=False, retryable=True, error_code=exc.code)
                    return [outcome] * len(request.phones)
                if delay is None:
                    log.warning(
                        "sendcloud send: %d numbers, answer lost (%s): outcome unknown",
                        len(request.phones),
                        exc.code,
                    )
                    return [bulk_outcome_unknown()] * len(request.phones)
                await asyncio.sleep(delay)
                continue
            return await self._answered(request, body)
        raise AssertionError("unreachable")

    async def _split(
        self, messages: Sequence[OutboundMessage], phones: Sequence[str]
    ) -> list[SendOutcome]:
        """Requests of at most MAX_BULK numbers, each number once per request; the
        outcomes in the order given."""
        rounds: list[list[int]] = []  # message indexes per request
        numbers: list[set[str]] = []  # the phones of each request
        for index, phone in enumerate(phones):
            for indexes, taken in zip(rounds, numbers, strict=True):
                if len(indexes) < MAX_BULK and phone not in taken:
                    indexes.append(index)
                    taken.add(phone)
                    break
            else:
                rounds.append([index])
                numbers.append({phone})
        outcomes: list[SendOutcome | None] = [None] * len(messages)
        for indexes in rounds:
            answered = await self.send_bulk([messages[i] for i in indexes])
            for i, outcome in zip(indexes, answered, strict=True):
                outcomes[i] = outcome
        return [o for o in outcomes if o is not None]

    # -- answers -------------------------------------------------------------------

    async def _send(self, request: _Request) -> list[SendOutcome]:
        """Posts ``request`` and returns one outcome per phone, in order."""
        try:
            body = await self._post(request.endpoint, request.params)
        except TransientHttpError as exc:
            outcome = SendOutcome(accepted=False, retryable=True, error_code=exc.code)
            return [outcome] * len(request.phones)
        return await self._answered(request, body)

    async def _answered(self, request: _Request, body: Any) -> list[SendOutcome]:
        """One outcome per phone of ``request`` from SendCloud's answer ``body``."""
        everyone = len(request.phones)
        code = _status_code(body)
        if code is None:
            log.warning("sendcloud %s: answer without a statusCode", request.endpoint)
            outcome = SendOutcome(accepted=False, retryable=True, error_code="BAD_RESPONSE")
            return [outcome] * everyone
        rule = RETURN_CODES.get(code)
        accepting = rule is not None and rule.verdict is Verdict.ACCEPTED
        if accepting or code == _ALL_FAILED:
            ids = _sms_ids(body)
            if code == _DUPLICATE and not ids:
                recovered = await self._recover(request)
                log.info(
                    "sendcloud %s: duplicate request, recovered %d of %d smsIds",
                    request.endpoint,
                    len(recovered),
                    everyone,
                )
                # The first request was processed: what we cannot find went out all
                # the same (its SMSHook still matches by tag on single sends).
                return [
                    SendOutcome(accepted=True, provider_message_id=recovered.get(p, ""))
                    for p in request.phones
                ]
            return self._per_number(request, code, ids, _failed_phones(body))
        outcome = refusal(code)
        if outcome.retryable or code not in RETURN_CODES:
            log.info("sendcloud %s: code %s, will retry", request.endpoint, code)
        return [outcome] * everyone

    def _per_number(
        self, request: _Request, code: int, ids: list[str], failed: set[str]
    ) -> list[SendOutcome]:
        """Each phone's outcome of an accepting (200/311/400) or 312 answer."""
        by_phone = _ids_by_phone(ids, request.phones)
        outcomes = []
        for phone in request.phones:
            sms_id = by_phone.get(phone)
            if sms_id is not None:
                outcomes.append(SendOutcome(accepted=True, provider_message_id=sms_id))
            elif code == 200 and len(request.phones) == 1:
                # "Successful" without an id: ask again; the same sendRequestId makes
                # the repeat a 400 whose smsId we recover, never a second message.
                outcomes.append(
                    SendOutcome(accepted=False, retryable=True, error_code="BAD_RESPONSE")
                )
            elif phone in failed or code in (_PARTIAL, _ALL_FAILED):
                # SendCloud refused this number (the items list names it).
                outcomes.append(
                    SendOutcome(
                        accepted=False, error_code=str(code), final_status=MessageStatus.REJECTED
                    )
                )
            else:
                # Accepted without an smsId we can attribute: do not send it twice.
                outcomes.append(SendOutcome(accepted=True))
        return outcomes

    async def _recover(self, request: _Request) -> dict[str, str]:
        """phone -> smsId of the latest request to each phone (status query by phone,
        every page: a number may have had other messages the same days)."""
        found: dict[str, str] = {}
        for first in range(0, len(request.phones), MAX_STATUS_IDS):
            chunk = request.phones[first : first + MAX_STATUS_IDS]
            pages: list[Any] = []
            try:
                while not pages or len(pages) * MAX_STATUS_IDS < sendcloud_status.total(pages[0]):
                    params = sendcloud_status.query_params(
                        days=2,  # yesterday too: the first request may have been before midnight
                        phones=chunk,
                        template_id=request.recover.get("templateId", ""),
                        msg_type=request.recover.get("msgTypeStr", ""),
                        start=len(pages) * MAX_STATUS_IDS,
                    )
                    body = await self._post("status/query", params, stamped=False)
                    sendcloud_status.records(body)  # raises unless a 200 with a voList
                    pages.append(body)
                    if len(pages) >= MAX_RECOVERY_PAGES:
                        break
                found.update(sendcloud_status.newest_by_receiver(pages))
            except (TransientHttpError, ProviderError) as exc:
                log.info("sendcloud: cannot recover smsIds (%s)", type(exc).__name__)
        return {p: found[p] for p in request.phones if p in found}

    # -- status --------------------------------------------------------------------

    async def query_status(self, refs: Sequence[ProviderRef]) -> list[Receipt]:
        receipts: list[Receipt] = []
        wanted = [r for r in refs if r.provider_message_id]
        for start in range(0, len(wanted), MAX_STATUS_IDS):
            receipts.extend(await self._query(wanted[start : start + MAX_STATUS_IDS]))
        return receipts

    async def _query(self, refs: Sequence[ProviderRef]) -> list[Receipt]:
        params = sendcloud_status.query_params(
            days=self._config.status_days, sms_ids=[r.provider_message_id for r in refs]
        )
        try:
            body = await self._post("status/query", params, stamped=False)
        except TransientHttpError as exc:
            raise ProviderError(f"sendcloud status query failed: {exc.code}") from exc
        return sendcloud_status.receipts(self.name, refs, body)

    # -- SMSHook -------------------------------------------------------------------

    def parse_hook(
        self,
        form: Mapping[str, str],
        *,
        now: float | None = None,
        request: HookRequest | None = None,
    ) -> list[Receipt]:
        """The receipt of one SMSHook event (signed over its form alone: ``request`` is
        not needed); raises ProviderError for a forged, stale,
        replayed or malformed event. ``message_id`` is ours when the event carries
        the tag we sent, else empty: match on smsId."""
        self._hooks.verify(form, now)
        return [receipt_from_hook(self.name, form)]

    # -- plumbing ------------------------------------------------------------------

    async def _post(self, endpoint: str, params: dict[str, str], *, stamped: bool = True) -> Any:
        """Signs and posts; on 461 (clock skew) learns SendCloud's time and retries once
        (safe: sends carry sendRequestId). Returns the parsed JSON body."""
        body = await self._post_once(endpoint, params, stamped)
        if stamped and _status_code(body) == _CLOCK_SKEW and await self._sync_clock():
            body = await self._post_once(endpoint, params, stamped)
        return body

    async def _post_once(self, endpoint: str, params: dict[str, str], stamped: bool) -> Any:
        signed = {**params, "smsUser": self._config.sms_user}
        if stamped:
            signed["timestamp"] = str(int(time.time() * 1000) + self._clock_offset_ms)
        signed["signature"] = sign_request(signed, self._config.sms_key)
        answer = await call(
            self._client(),
            "POST",
            f"{self._config.base_url.rstrip('/')}/smsapi/{endpoint}",
            seconds=self._config.timeout,
            data=signed,
        )
        return answer.body

    async def _sync_clock(self) -> bool:
        try:
            answer = await call(
                self._client(),
                "GET",
                f"{self._config.base_url.rstrip('/')}/smsapi/timestamp/get",
                seconds=self._config.timeout,
            )
        except TransientHttpError:
            return False
        info = answer.body.get("info") if isinstance(answer.body, dict) else None
        server_ms = as_int(info.get("timestamp")) if isinstance(info, dict) else None
        if server_ms is None:
            return False
        self._clock_offset_ms = server_ms - int(time.time() * 1000)
        log.info("sendcloud %s: clock offset now %d ms", self.name, self._clock_offset_ms)
        return True

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = new_session()
        return self._session

    async def close(self) -> None:
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None


def _vars(data: Mapping[str, str]) -> str:
    """``vars`` with SendCloud's %name% keys, in a stable order (also a bulk key)."""
    if not data:
        return "{}"  # a campaign without variables: one per message in a bulk plan
    variables = {f"%{k.strip('%')}%": data[k] for k in sorted(data)}
    return json.dumps(variables, ensure_ascii=False, separators=(",", ":"))


def _add_tag(params: dict[str, str], message_id: str) -> None:
    tag = message_tag(message_id)
    if tag is not None:
        params["tag"] = tag


def _status_code(body: Any) -> int | None:
    return as_int(body.get("statusCode")) if isinstance(body, dict) else None


def _sms_ids(body: Any) -> list[str]:
    info = body.get("info") if isinstance(body, dict) else None
    ids = info.get("smsIds") if isinstance(info, dict) else None
    if not isinstance(ids, list):
        return []
    return [i for i in ids if isinstance(i, str) and i]


def _failed_phones(body: Any) -> set[str]:
    """The numbers a partial (311) or total (312) failure lists in ``info.items``."""
    info = body.get("info") if isinstance(body, dict) else None
    items = info.get("items") if isinstance(info, dict) else None
    if not isinstance(items, list):
        return set()
    return {i["phone"] for i in items if isinstance(i, dict) and isinstance(i.get("phone"), str)}


def _ids_by_phone(ids: Sequence[str], phones: Sequence[str]) -> dict[str, str]:
    """smsIds end with "$" and the number (seed 001: "..._1ainnq$131112345678"); a
    single-number request takes its only id whatever its form."""
    if len(phones) == 1 and len(ids) == 1:
        return {phones[0]: ids[0]}
    wanted = set(phones)
    found: dict[str, str] = {}
    for sms_id in ids:
        _, dollar, phone = sms_id.rpartition("$")
        if dollar and phone in wanted:
            found[phone] = sms_id
    return found
