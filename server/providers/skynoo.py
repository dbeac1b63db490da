"""The Skynoo SMS API transport (seed 000): JSON over HTTPS with Basic auth.

send:   POST {base_url}/api/sms/v1/send with {"mobile", "useType", "text"} or
        {"mobile", "useType", "templateId", "data"}; answered with the envelope
        {"code": "200", "message": ..., "data": {"id", "toNumber", "status"}}.
status: POST {base_url}/api/sms/v1/getStatus with {"ids": [...]} (1..100); answered
        with {"code": "200", "data": [{"sid", "status", "errorCode"}]}; unknown ids
        are left out.

The envelope code decides, whatever the HTTP status (Skynoo's failures are
{"code": "400", "message": ...}); see skynoo_codes.ENVELOPE_CODES for the table.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from server.domain.models import MessageStatus, OutboundMessage, UseType
from server.domain.ports import Capabilities, ProviderError, ProviderRef, Receipt, SendOutcome
from server.providers.http import HttpAnswer, TransientHttpError, call, new_session
from server.providers.skynoo_codes import (
    MAX_STATUS_IDS,
    SEND_PATH,
    STATUS_PATH,
    STATUSES,
    code_rule,
)

logger = logging.getLogger(__name__)

BAD_RESPONSE = "BAD_RESPONSE"
# Our use types → Skynoo useType (1 verification code, 2 notification, 3 marketing).
# An unspecified use type is sent as a notification.
USE_TYPES: dict[UseType, int] = {
    UseType.UNSPECIFIED: 2,
    UseType.VERIFICATION: 1,
    UseType.NOTIFICATION: 2,
    UseType.MARKETING: 3,
}


@dataclass(frozen=True)
class SkynooConfig:
    """One Skynoo account. ``templates`` maps our template code to Skynoo's numeric
    templateId (as a string of digits); other messages go out as free text."""

    name: str
    base_url: str  # e.g. "https://api.skynoo.com"
    api_key: str  # "app_xxxxx"
    api_secret: str = field(repr=False)  # "sec_xxxxx"
    timeout: float = 10.0
    templates: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        where = f"skynoo provider {self.name!r}"
        if not self.name:
            raise ValueError("skynoo provider: name is required")
        if not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"{where}: base_url must start with http:// or https://")
        if not self.api_key or not self.api_secret:
            raise ValueError(f"{where}: api_key and api_secret are required")
        if self.timeout <= 0:
            raise ValueError(f"{where}: timeout must be positive")
        for code, template_id in self.templates.items():
            if not (
                isinstance(template_id, str) and template_id.isascii() and template_id.isdigit()
            ):
                raise ValueError(
                    f"{where}: template {code!r} maps to {template_id!r}; "
                    "Skynoo template ids are numbers"
                )


def send_body(message: OutboundMessage, templates: Mapping[str, str]) -> dict[str, Any]:
    """The JSON body of /send: the provider template when ours is mapped, else the text."""
    body: dict[str, Any] = {
        "mobile": message.to_number,  # Skynoo takes E.164 as is
        "useType": USE_TYPES.get(message.use_type, 2),
    }
    template_id = templates.get(message.template_code or "")
    if template_id is not None:
        body["templateId"] = int(template_id)
        body["data"] = dict(message.data)
    else:
        body["text"] = message.body
    return body


def envelope_code(body: Any) -> str | None:
    """The envelope's "code" as a string ("200", "400", ...), None when absent."""
    if not isinstance(body, dict):
        return None
    code = body.get("code")
    if isinstance(code, bool) or not isinstance(code, str | int):
        return None
    return str(code).strip()


def send_outcome(answer: HttpAnswer) -> SendOutcome:
    """Maps one /send answer to our outcome (pure; never raises)."""
    code = envelope_code(answer.body)
    if code is None:
        # No envelope: a proxy or gateway answered. Refused credentials stay final.
        if answer.status in (401, 403):
            return SendOutcome(accepted=False, error_code=f"HTTP_{answer.status}")
        return SendOutcome(accepted=False, retryable=True, error_code=BAD_RESPONSE)
    if code == "200":
        data = answer.body.get("data")
        provider_id = data.get("id") if isinstance(data, dict) else None
        if 200 <= answer.status < 300 and isinstance(provider_id, str) and provider_id:
            return SendOutcome(accepted=True, provider_message_id=provider_id)
        return SendOutcome(accepted=False, retryable=True, error_code=BAD_RESPONSE)
    rule = code_rule(code)
    if rule is None:
        return SendOutcome(accepted=False, retryable=True, error_code=BAD_RESPONSE)
    return SendOutcome(
        accepted=False,
        retryable=rule.retryable,
        error_code=code,
        final_status=rule.final_status,
    )


def receipts_from(
    provider: str, answer: HttpAnswer, refs_by_id: Mapping[str, Sequence[ProviderRef]]
) -> list[Receipt]:
    """Maps one /getStatus answer to receipts; raises ProviderError when it is not one."""
    code = envelope_code(answer.body)
    if code != "200":
        raise ProviderError(f"skynoo {provider}: getStatus answered code {code or 'none'}")
    entries = answer.body.get("data")
    if not isinstance(entries, list):
        raise ProviderError(f"skynoo {provider}: getStatus answer has no data list")
    receipts: list[Receipt] = []
    for entry in entries:
        if not isinstance(entry, dict):
            raise ProviderError(f"skynoo {provider}: getStatus entry is not an object")
        sid, wire_status = entry.get("sid"), entry.get("status")
        if not isinstance(sid, str) or not isinstance(wire_status, str):
            raise ProviderError(f"skynoo {provider}: getStatus entry without sid or status")
        status = STATUSES.get(wire_status)
        if status is None:
            logger.warning("skynoo %s: undocumented status %r for %s", provider, wire_status, sid)
            continue
        error = entry.get("errorCode")
        error_code = error if isinstance(error, str) else ""
        if status == MessageStatus.SENT or status == MessageStatus.DELIVERED:
            error_code = ""
        elif not error_code:
            error_code = wire_status  # every failure carries a code
        for ref in refs_by_id.get(sid, ()):
            receipts.append(
                Receipt(provider, ref.message_id, status, error_code, provider_message_id=sid)
            )
    return receipts


class SkynooTransport:
    """Sends through one Skynoo account and polls its delivery statuses."""

    capabilities = Capabilities(free_text=True, templates=True, max_status_ids=MAX_STATUS_IDS)

    def __init__(self, config: SkynooConfig, session: aiohttp.ClientSession | None = None) -> None:
        self.name = config.name
        self._config = config
        self._session = session
        self._owns_session = session is None
        self._base_url = config.base_url.rstrip("/")
        token = base64.b64encode(f"{config.api_key}:{config.api_secret}".encode()).decode("ascii")
        self._headers = {"Authorization": f"Basic {token}"}

    def can_carry(self, message: OutboundMessage) -> bool:
        """Always: a template Skynoo does not know goes out as the rendered text."""
        return True

    async def _post(self, path: str, body: dict[str, Any]) -> HttpAnswer:
        if self._session is None:
            self._session = new_session()
        # Envelope answers arrive with any HTTP status below 500 (429 included), so
        # no status is retried blindly: the envelope code decides.
        return await call(
            self._session,
            "POST",
            self._base_url + path,
            seconds=self._config.timeout,
            retry_statuses=frozenset(),
            json=body,
            headers=self._headers,
        )

    async def send(self, message: OutboundMessage) -> SendOutcome:
        try:
            answer = await self._post(SEND_PATH, send_body(message, self._config.templates))
        except TransientHttpError as exc:
            return SendOutcome(accepted=False, retryable=True, error_code=exc.code)
        outcome = send_outcome(answer)
        if not outcome.accepted:
            detail = answer.body.get("message") if isinstance(answer.body, dict) else None
            logger.warning(
                "skynoo %s refused message %s: code %s (%s)",
                self.name,
                message.id,
                outcome.error_code,
                detail if isinstance(detail, str) else f"HTTP {answer.status}",
            )
        return outcome

    async def query_status(self, refs: Sequence[ProviderRef]) -> list[Receipt]:
        receipts: list[Receipt] = []
        for start in range(0, len(refs), MAX_STATUS_IDS):
            receipts.extend(await self._query_some(refs[start : start + MAX_STATUS_IDS]))
        return receipts

    async def _query_some(self, refs: Sequence[ProviderRef]) -> list[Receipt]:
        refs_by_id: dict[str, list[ProviderRef]] = {}
        for ref in refs:
            refs_by_id.setdefault(ref.provider_message_id, []).append(ref)
        try:
            answer = await self._post(STATUS_PATH, {"ids": list(refs_by_id)})
        except TransientHttpError as exc:
            raise ProviderError(f"skynoo {self.name}: getStatus failed: {exc.code}") from exc
        return receipts_from(self.name, answer, refs_by_id)

    async def close(self) -> None:
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None
