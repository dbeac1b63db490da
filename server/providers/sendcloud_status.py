"""SendCloud's status query, ``smsapi/status/query``, as SendCloud publishes it (pure).

Source: SendCloud's SMS API documentation, "Sending Response / Query"
https://www.sendcloud.net/doc/en/sms/sms_status (Chinese original:
https://www.sendcloud.net/doc/sms/sms_status). The seed (001) names only the endpoint.

Request (form, signed like every call): ``smsUser``, ``smsIds`` and/or ``phones``
(``;``-separated, at most 100), a time span that is required: ``days`` (days=1 is
today, in SendCloud's Beijing days) or ``startDate`` + ``endDate`` (yyyy-MM-dd, at most
30 days), optional ``templateId``, ``msgTypeStr`` (0 SMS, 1 MMS, 2 international, 3
voice), ``start`` and ``limit`` (0-100, default 100), ``signature``. Records are
cached for 10 minutes per parameter set.

Answer, in the usual envelope::

    {"result": true, "statusCode": 200, "message": "请求成功",
     "info": {"voList": [{"smsId": "...", "msgType": "国内短信", "receiver": "...",
                          "requestTime": "2017-02-19 00:21:20", "sendLog": "发送成功",
                          "smsUser": "...", "status": "送达", "statusCode": 200,
                          "templateId": "000", "templateName": "...",
                          "updateTime": "2017-02-19 00:21:21"}, ...],
              "voListSize": 3, "total": "103"}}

``status`` is one of requesting (请求), sent = delivered (送达), processing failed
(处理失败, often with a reason: "处理失败-局部拦截列表") and sending failed (发送失败);
``statusCode`` 200 is delivered, 400-499 processing failed, 500-599 sending failed
(the SMSHook codes of seed 001). The page gives no code for "requesting", so a record
is judged by its status word first and its code second.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from server.domain.models import MessageStatus
from server.domain.ports import ProviderError, ProviderRef, Receipt
from server.providers.sendcloud_codes import failed_status, suppression_for

log = logging.getLogger(__name__)

MAX_IDS = 100  # smsIds / phones per query, and records per page
MAX_DAYS = 30

_PENDING = ("请求", "requesting")
_DELIVERED = ("送达", "sent", "delivered")
_FAILED = ("处理失败", "发送失败", "processing failed", "sending failed")


def query_params(
    *,
    days: int,
    sms_ids: Sequence[str] = (),
    phones: Sequence[str] = (),
    template_id: str = "",
    msg_type: str = "",
    start: int = 0,
) -> dict[str, str]:
    """The fields of one query (without smsUser/signature)."""
    if not 1 <= days <= MAX_DAYS:
        raise ValueError(f"days must be 1 to {MAX_DAYS}")
    if len(sms_ids) > MAX_IDS or len(phones) > MAX_IDS:
        raise ValueError(f"at most {MAX_IDS} smsIds and {MAX_IDS} phones per query")
    params = {"days": str(days)}
    if sms_ids:
        params["smsIds"] = ";".join(sms_ids)
    if phones:
        params["phones"] = ";".join(phones)
    if template_id:
        params["templateId"] = template_id
    if msg_type:
        params["msgTypeStr"] = msg_type
    if start:
        params["start"] = str(start)
    return params


def records(body: Any) -> list[Mapping[str, Any]]:
    """The ``info.voList`` records of a 200 answer; ProviderError for anything else."""
    if not isinstance(body, dict):
        raise ProviderError("sendcloud status query: answer is not a JSON object")
    code = body.get("statusCode")
    if code != 200 and code != "200":
        raise ProviderError(f"sendcloud status query refused: statusCode {code}")
    info = body.get("info")
    vo_list = info.get("voList") if isinstance(info, dict) else None
    if not isinstance(vo_list, list):
        raise ProviderError("sendcloud status query: answer has no info.voList list")
    for record in vo_list:
        if not isinstance(record, dict) or not isinstance(record.get("smsId"), str):
            raise ProviderError("sendcloud status query: malformed voList record")
    return vo_list


def outcome(record: Mapping[str, Any]) -> tuple[MessageStatus, str] | None:
    """(our status, error code) of a settled record; None while SendCloud still works
    on it (or says something we cannot read: the next poll asks again)."""
    status = record.get("status")
    word = status.strip().lower() if isinstance(status, str) else ""
    code = as_int(record.get("statusCode"))
    if word.startswith(_PENDING):
        return None
    if code == 200 or (code is None and word.startswith(_DELIVERED)):
        return MessageStatus.DELIVERED, ""
    if code is not None and 400 <= code < 600:
        return failed_status(code), str(code)
    if word.startswith(_FAILED):
        return failed_status(0), "UNDELIVERED"
    log.info("sendcloud status query: unreadable record (status %r, code %r)", status, code)
    return None


def receipts(provider: str, refs: Sequence[ProviderRef], body: Any) -> list[Receipt]:
    """Receipts for the settled ones of ``refs``; those SendCloud does not list (not
    known yet, or outside the span) or still works on are left out."""
    by_id = {r["smsId"]: r for r in records(body)}
    found: list[Receipt] = []
    for ref in refs:
        record = by_id.get(ref.provider_message_id)
        settled = outcome(record) if record is not None else None
        if settled is not None:
            status, error = settled
            found.append(
                Receipt(
                    provider,
                    ref.message_id,
                    status,
                    error,
                    ref.provider_message_id,
                    suppress=suppression_for(error),
                )
            )
    return found


def total(body: Any) -> int:
    """How many records match the query in all (``info.total``, a string on the page)."""
    info = body.get("info") if isinstance(body, dict) else None
    value = as_int(info.get("total")) if isinstance(info, dict) else None
    return value or 0


def newest_by_receiver(pages: Sequence[Any]) -> dict[str, str]:
    """receiver -> smsId of the latest request to it (by requestTime) over the pages
    of one query, for recovering the ids of a send whose answer was lost."""
    newest: dict[str, tuple[str, str]] = {}
    for record in (r for body in pages for r in records(body)):
        receiver, at = record.get("receiver"), record.get("requestTime")
        if not isinstance(receiver, str) or not receiver:
            continue
        stamp = at if isinstance(at, str) else ""
        if receiver not in newest or stamp >= newest[receiver][0]:
            newest[receiver] = (stamp, record["smsId"])
    return {receiver: sms_id for receiver, (_, sms_id) in newest.items()}


def as_int(value: object) -> int | None:
    """A number SendCloud may write as an int or as a string of digits."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    return None
