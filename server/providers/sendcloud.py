"""SendCloud SMS transport (seed 001): template sends, verification and voice codes,
status queries and SMSHook parsing.

Wire format, as SendCloud documents it:

* Every call is a form-encoded POST carrying ``smsUser``, a ``timestamp`` in
  milliseconds (SendCloud's own ``timestamp/get`` and smsIds use milliseconds; more
  than 6 s from server time is code 461) and ``signature``: sort all parameters but
  ``smsKey``/``signature`` by name, join ``k=v`` with ``&`` (not URL-encoded), wrap
  as ``smsKey&...&smsKey`` and take the lowercase hex MD5.
* Numbers: mainland China (+86) goes as the 11-digit national number, others as
  ``00`` + country code + number. ``send`` always uses msgType 0 (SMS);
  ``sendCode`` uses msgType 0 for +86 and 2 (international SMS) otherwise.
* ``vars`` is JSON with SendCloud's ``%name%`` keys: {"order_no": "A-1"} is sent as
  {"%order_no%": "A-1"}, matching templates written as "... %order_no% ...".
* ``sendRequestId`` is our message id, so a retry never sends twice: SendCloud
  answers a repeat within an hour with code 400 and the original smsIds, which we
  treat as accepted with the original smsId.
* Answers: {"result", "statusCode", "message", "info": {"successCount", "smsIds"}}.
  ``sendcloud_codes`` says what every code means.
* ``status/query`` (``smsIds`` joined by ``;``, at most 100) answers, in the same
  envelope, ``info.items``: [{"smsId", "phone", "status": "sent" | "delivered" |
  "failed", "statusCode": SMSHook code or 0, "message"}]. Unknown ids are left out.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from server.domain.models import MessageStatus, OutboundMessage
from server.domain.ports import Capabilities, ProviderError, ProviderRef, Receipt, SendOutcome
from server.providers.http import TransientHttpError, call, new_session
from server.providers.sendcloud_codes import RETURN_CODES, Verdict, failed_status, refusal
from server.providers.sendcloud_hook import HookVerifier, receipt_from_hook

log = logging.getLogger(__name__)

MAX_STATUS_IDS = 100
MAX_REQUEST_ID = 128
_CODE = re.compile(r"[0-9]{4,6}")
_CLOCK_SKEW = 461


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

    def __post_init__(self) -> None:
        for name in ("name", "base_url", "sms_user", "sms_key"):
            if not getattr(self, name):
                raise ValueError(f"sendcloud provider config needs {name}")
        if self.timeout <= 0:
            raise ValueError("sendcloud timeout must be positive")


class SendCloudTransport:
    capabilities = Capabilities(
        free_text=False, templates=True, voice=True, max_status_ids=MAX_STATUS_IDS
    )

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

    # -- sending ---------------------------------------------------------------

    def can_carry(self, message: OutboundMessage) -> bool:
        return message.template_code is not None and message.template_code in self._config.templates

    async def send(self, message: OutboundMessage) -> SendOutcome:
        template = self._config.templates.get(message.template_code or "")
        if template is None:
            return SendOutcome(accepted=False, error_code="NO_TEMPLATE")
        phone, _ = sendcloud_phone(message.to_number)
        variables = {f"%{k.strip('%')}%": v for k, v in message.data.items()}
        params = {
            "templateId": template,
            "msgType": "0",
            "phone": phone,
            "vars": json.dumps(variables, ensure_ascii=False, separators=(",", ":")),
            "sendRequestId": request_id(message.id),
        }
        return await self._send("send", params)

    async def send_code(self, message: OutboundMessage, code: str) -> SendOutcome:
        """A verification code in SendCloud's own wording (no template needed)."""
        if _CODE.fullmatch(code) is None:
            return SendOutcome(accepted=False, error_code="INVALID_CODE")
        if not (self._config.sign_id or self._config.sign_name):
            return SendOutcome(accepted=False, error_code="NO_SIGNATURE")
        phone, domestic = sendcloud_phone(message.to_number)
        params = {
            "msgType": "0" if domestic else "2",
            "phone": phone,
            "code": code,
            "sendRequestId": request_id(message.id),
        }
        if self._config.sign_id:
            params["signId"] = self._config.sign_id
        else:
            params["signName"] = self._config.sign_name
        return await self._send("sendCode", params)

    async def send_voice(self, message: OutboundMessage, code: str) -> SendOutcome:
        """A verification code read out by a voice call."""
        if _CODE.fullmatch(code) is None:
            return SendOutcome(accepted=False, error_code="INVALID_CODE")
        phone, _ = sendcloud_phone(message.to_number)
        params = {"phone": phone, "code": code, "sendRequestId": request_id(message.id)}
        return await self._send("sendVoice", params)

    async def _send(self, endpoint: str, params: dict[str, str]) -> SendOutcome:
        try:
            body = await self._post(endpoint, params)
        except TransientHttpError as exc:
            return SendOutcome(accepted=False, retryable=True, error_code=exc.code)
        code = _status_code(body)
        if code is None:
            log.warning("sendcloud %s: answer without a statusCode", endpoint)
            return SendOutcome(accepted=False, retryable=True, error_code="BAD_RESPONSE")
        rule = RETURN_CODES.get(code)
        if rule is not None and rule.verdict is Verdict.ACCEPTED:
            sms_ids = _sms_ids(body)
            if sms_ids:
                return SendOutcome(accepted=True, provider_message_id=sms_ids[0])
            if code == 400:
                # A repeat of a request SendCloud processed, without the original id:
                # the message went out, we just cannot follow it.
                return SendOutcome(accepted=True)
            if code == 311:
                return SendOutcome(
                    accepted=False, error_code="311", final_status=MessageStatus.REJECTED
                )
        outcome = refusal(code)
        if outcome.retryable or code not in RETURN_CODES:
            log.info("sendcloud %s: code %s, will retry", endpoint, code)
        return outcome

    # -- status ----------------------------------------------------------------

    async def query_status(self, refs: Sequence[ProviderRef]) -> list[Receipt]:
        receipts: list[Receipt] = []
        wanted = [r for r in refs if r.provider_message_id]
        for start in range(0, len(wanted), MAX_STATUS_IDS):
            receipts.extend(await self._query(wanted[start : start + MAX_STATUS_IDS]))
        return receipts

    async def _query(self, refs: Sequence[ProviderRef]) -> list[Receipt]:
        params = {"smsIds": ";".join(r.provider_message_id for r in refs)}
        try:
            body = await self._post("status/query", params)
        except TransientHttpError as exc:
            raise ProviderError(f"sendcloud status query failed: {exc.code}") from exc
        code = _status_code(body)
        if code != 200:
            raise ProviderError(f"sendcloud status query refused: statusCode {code}")
        items = body.get("info", {}).get("items") if isinstance(body.get("info"), dict) else None
        if not isinstance(items, list):
            raise ProviderError("sendcloud status query: answer has no info.items list")
        by_id: dict[str, Mapping[str, Any]] = {}
        for item in items:
            if not isinstance(item, dict) or not isinstance(item.get("smsId"), str):
                raise ProviderError("sendcloud status query: malformed item")
            by_id[item["smsId"]] = item
        receipts = []
        for ref in refs:
            item = by_id.get(ref.provider_message_id)
            if item is not None:
                receipts.append(self._receipt(ref, item))
        return receipts

    def _receipt(self, ref: ProviderRef, item: Mapping[str, Any]) -> Receipt:
        status = item.get("status")
        if status == "sent":
            mapped, error = MessageStatus.SENT, ""
        elif status == "delivered":
            mapped, error = MessageStatus.DELIVERED, ""
        elif status == "failed":
            code = _as_int(item.get("statusCode")) or 0
            mapped = failed_status(code)
            error = str(code) if code else "UNDELIVERED"
        else:
            raise ProviderError(f"sendcloud status query: unknown status {status!r}")
        return Receipt(self.name, ref.message_id, mapped, error, ref.provider_message_id)

    # -- SMSHook ---------------------------------------------------------------

    def parse_hook(self, form: Mapping[str, str], *, now: float | None = None) -> list[Receipt]:
        """The receipt of one SMSHook event; raises ProviderError for a forged, stale,
        replayed or malformed event. ``message_id`` is empty: match on smsId."""
        self._hooks.verify(form, now)
        return [receipt_from_hook(self.name, form)]

    # -- plumbing --------------------------------------------------------------

    async def _post(self, endpoint: str, params: dict[str, str]) -> Any:
        """Signs and posts; on 461 (clock skew) learns SendCloud's time and retries once
        (safe: sends carry sendRequestId). Returns the parsed JSON body."""
        body = await self._post_once(endpoint, params)
        if _status_code(body) == _CLOCK_SKEW and await self._sync_clock():
            body = await self._post_once(endpoint, params)
        return body

    async def _post_once(self, endpoint: str, params: dict[str, str]) -> Any:
        signed = {
            **params,
            "smsUser": self._config.sms_user,
            "timestamp": str(int(time.time() * 1000) + self._clock_offset_ms),
        }
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
        server_ms = _as_int(info.get("timestamp")) if isinstance(info, dict) else None
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


def _as_int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    return None


def _status_code(body: Any) -> int | None:
    return _as_int(body.get("statusCode")) if isinstance(body, dict) else None


def _sms_ids(body: Any) -> list[str]:
    info = body.get("info") if isinstance(body, dict) else None
    ids = info.get("smsIds") if isinstance(info, dict) else None
    if not isinstance(ids, list):
        return []
    return [i for i in ids if isinstance(i, str) and i]
