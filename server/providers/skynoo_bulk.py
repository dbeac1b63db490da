"""Skynoo's batch tasks (seed 000) as a BulkTransport: many numbers, one request.

create: POST {base_url}/api/sms/v1/batch/create with {"useType", "content",
        "numbers": [...], "templateData": {number: {variable: value}}}; answered
        {"code": "200", "data": {"taskId": 1001, "status": "pending"}}.
detail: POST {base_url}/api/sms/v1/batch/detail with {"taskId", "pageNo", "pageSize"}
        (at most 100 a page); answered {"data": {"records": [{"id", "toNumber",
        "status", "errorCode", "sendTime"}], "total", "pageNo", "pageSize"}}.
status: POST {base_url}/api/sms/v1/batch/status with {"taskId"}; answered
        {"data": {"taskId", "status": pending|executing|success|fail}}.

A task answers one taskId for all its numbers, so each message's provider id is
``task:<taskId>:<number>``: status polls find the task and the number's record in
it (records carry the getStatus statuses); a number without a record yet is left
out (not settled).

Which messages share a task (``bulk_key``): those with the same useType and the
same ``content``. A template message goes as our template's text with its own
values in ``templateData`` (Skynoo's #variable# syntax is ours), but only when
rendering that text with its values gives exactly the message's body; free text
goes as the content itself, unless it holds something Skynoo would read as a
variable. Verification codes and voice go alone (``send``), the quickest path.

No duplicate after a lost answer: batch/create has no idempotency key and tasks
cannot be listed, so when the request may have reached Skynoo but its answer did
not reach us (timeout, a connection dropped after sending, an unreadable 200, 502,
504) every message ends UNDELIVERED with BULK_OUTCOME_UNKNOWN instead of being sent
again. Only answers that say nothing was created are retried: a refused
connection, HTTP 500/503, an envelope 429 or 5xx.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

from server.domain.models import Channel, MessageStatus, OutboundMessage, UseType
from server.domain.ports import ProviderError, ProviderRef, Receipt, SendOutcome
from server.providers.http import (
    BULK_OUTCOME_UNKNOWN,
    HttpAnswer,
    TransientHttpError,
    bulk_outcome_unknown,
)
from server.providers.http import was_not_sent as http_was_not_sent
from server.providers.skynoo import USE_TYPES, SkynooTransport, envelope_code, send_outcome
from server.providers.skynoo_codes import (
    BATCH_CREATE_PATH,
    BATCH_DETAIL_PATH,
    DETAIL_MAX_PAGE_SIZE,
    STATUSES,
    VARIABLE,
    render_template,
)

logger = logging.getLogger(__name__)

MAX_BULK = 1000
TASK_PREFIX = "task:"
OUTCOME_UNKNOWN = BULK_OUTCOME_UNKNOWN
# Answers that say the request was not carried out: safe to send again.
UNSENT_STATUSES = frozenset({"HTTP_500", "HTTP_503"})


def task_message_id(task_id: int, number: str) -> str:
    return f"{TASK_PREFIX}{task_id}:{number}"


def parse_task_message_id(provider_message_id: str) -> tuple[int, str] | None:
    """(taskId, number) of a ``task:<taskId>:<number>`` id, None for other ids."""
    if not provider_message_id.startswith(TASK_PREFIX):
        return None
    task, _, number = provider_message_id[len(TASK_PREFIX) :].partition(":")
    if not (task.isascii() and task.isdigit() and number):
        return None
    return int(task), number


def bulk_part(message: OutboundMessage) -> tuple[str, dict[str, str]] | None:
    """The task content this message can share and its own values, or None when it
    must go alone."""
    if message.use_type == UseType.VERIFICATION or message.code is not None:
        return None
    if message.channel != Channel.SMS:
        return None
    content = message.template_content
    if content is not None and message.data:
        try:
            faithful = render_template(content, message.data) == message.body
        except KeyError:
            faithful = False
        if faithful:
            return content, dict(message.data)
    if VARIABLE.search(message.body):
        return None  # Skynoo would take "#x#" in the text for a variable
    return message.body, {}


def create_body(messages: Sequence[OutboundMessage]) -> dict[str, Any]:
    """The batch/create body for messages that share one ``bulk_key``."""
    parts = [bulk_part(m) for m in messages]
    first = parts[0]
    if first is None or any(p is None or p[0] != first[0] for p in parts):
        raise ValueError("skynoo batch: the messages do not share one content")
    numbers = [m.to_number for m in messages]
    if len(set(numbers)) != len(numbers):
        raise ValueError("skynoo batch: a number appears twice in one task")
    body: dict[str, Any] = {
        "useType": USE_TYPES.get(messages[0].use_type, 2),
        "content": first[0],
        "numbers": numbers,
    }
    values = {m.to_number: p[1] for m, p in zip(messages, parts, strict=True) if p and p[1]}
    if values:
        body["templateData"] = values
    return body


def create_outcome(answer: HttpAnswer) -> SendOutcome | int:
    """The taskId of an accepted task, or the outcome every message gets."""
    if envelope_code(answer.body) == "200":
        data = answer.body.get("data")
        task_id = data.get("taskId") if isinstance(data, dict) else None
        if 200 <= answer.status < 300 and type(task_id) is int:
            return task_id
        # Skynoo said yes but we cannot read which task: it may exist.
        return unknown_outcome()
    # Skynoo refused the task (or a proxy refused the request): nothing was created,
    # so the single send's reading of the answer holds.
    return send_outcome(answer)


def unknown_outcome() -> SendOutcome:
    return bulk_outcome_unknown()


def was_not_sent(exc: TransientHttpError) -> bool:
    """True when the failure shows Skynoo did not act on the request."""
    return http_was_not_sent(exc, UNSENT_STATUSES)


def record_receipt(provider: str, ref: ProviderRef, record: Mapping[str, Any]) -> Receipt | None:
    """A receipt from one batch/detail record; None when it is undocumented."""
    wire_status = record.get("status")
    status = STATUSES.get(wire_status) if isinstance(wire_status, str) else None
    if status is None:
        logger.warning("skynoo %s: undocumented record status %r", provider, wire_status)
        return None
    error = record.get("errorCode")
    error_code = error if isinstance(error, str) else ""
    if status in (MessageStatus.SENT, MessageStatus.DELIVERED):
        error_code = ""
    elif not error_code:
        error_code = str(wire_status)
    return Receipt(provider, ref.message_id, status, error_code, ref.provider_message_id)


class SkynooBulkTransport(SkynooTransport):
    """The Skynoo transport with batch tasks (BulkTransport) beside single sends."""

    max_bulk = MAX_BULK

    def bulk_key(self, message: OutboundMessage) -> Hashable | None:
        part = bulk_part(message)
        if part is None:
            return None
        return (USE_TYPES.get(message.use_type, 2), part[0])

    async def send_bulk(self, messages: Sequence[OutboundMessage]) -> list[SendOutcome]:
        if not messages:
            return []
        body = create_body(messages)
        try:
            answer = await self._post(BATCH_CREATE_PATH, body)
        except TransientHttpError as exc:
            if was_not_sent(exc):
                outcome = SendOutcome(accepted=False, retryable=True, error_code=exc.code)
            else:
                logger.warning(
                    "skynoo %s: batch/create of %d numbers got no answer (%s); not resent",
                    self.name,
                    len(messages),
                    exc.code,
                )
                outcome = unknown_outcome()
            return [outcome] * len(messages)
        result = create_outcome(answer)
        if isinstance(result, SendOutcome):
            if not result.accepted:
                logger.warning(
                    "skynoo %s refused a batch of %d numbers: %s",
                    self.name,
                    len(messages),
                    result.error_code,
                )
            return [result] * len(messages)
        return [
            SendOutcome(accepted=True, provider_message_id=task_message_id(result, m.to_number))
            for m in messages
        ]

    async def query_status(self, refs: Sequence[ProviderRef]) -> list[Receipt]:
        by_task: dict[int, dict[str, list[ProviderRef]]] = {}
        single: list[ProviderRef] = []
        for ref in refs:
            parsed = parse_task_message_id(ref.provider_message_id)
            if parsed is None:
                single.append(ref)
            else:
                by_task.setdefault(parsed[0], {}).setdefault(parsed[1], []).append(ref)
        receipts = await super().query_status(single) if single else []
        for task_id, wanted in by_task.items():
            receipts.extend(await self._query_task(task_id, wanted))
        return receipts

    async def _query_task(
        self, task_id: int, wanted: Mapping[str, Sequence[ProviderRef]]
    ) -> list[Receipt]:
        """Pages through the task's records until every wanted number is seen."""
        receipts: list[Receipt] = []
        missing = set(wanted)
        page_no = 1
        while missing:
            data = await self._task_call(
                BATCH_DETAIL_PATH,
                {"taskId": task_id, "pageNo": page_no, "pageSize": DETAIL_MAX_PAGE_SIZE},
            )
            records, total = data.get("records"), data.get("total")
            if not isinstance(records, list) or type(total) is not int:
                raise ProviderError(f"skynoo {self.name}: batch/detail without records")
            for record in records:
                number = record.get("toNumber") if isinstance(record, dict) else None
                if not isinstance(number, str) or number not in missing:
                    continue
                missing.discard(number)
                for ref in wanted[number]:
                    receipt = record_receipt(self.name, ref, record)
                    if receipt is not None:
                        receipts.append(receipt)
            if not records or page_no * DETAIL_MAX_PAGE_SIZE >= total:
                break
            page_no += 1
        return receipts

    async def _task_call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            answer = await self._post(path, body)
        except TransientHttpError as exc:
            raise ProviderError(f"skynoo {self.name}: {path} failed: {exc.code}") from exc
        code = envelope_code(answer.body)
        data = answer.body.get("data") if code == "200" else None
        if not isinstance(data, dict):
            raise ProviderError(f"skynoo {self.name}: {path} answered code {code or 'none'}")
        return data
