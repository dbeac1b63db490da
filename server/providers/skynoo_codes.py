"""What the Skynoo SMS API documents (seed 000), free of I/O: limits, the template
syntax, the envelope codes and the delivery statuses, with what each means to us.

For the transports (server/providers/skynoo.py, skynoo_bulk.py). The emulator
(server/emulators/skynoo.py) reads the seed on its own, so the two can disagree.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from server.domain.models import MessageStatus

SEND_PATH = "/api/sms/v1/send"
STATUS_PATH = "/api/sms/v1/getStatus"
OTP_SEND_PATH = "/api/sms/v1/verification/send"
OTP_CHECK_PATH = "/api/sms/v1/verification/check"
BATCH_CREATE_PATH = "/api/sms/v1/batch/create"
BATCH_STATUS_PATH = "/api/sms/v1/batch/status"
BATCH_DETAIL_PATH = "/api/sms/v1/batch/detail"
# batch/detail: "pageSize ... (default 20, max 100)".
DETAIL_MAX_PAGE_SIZE = 100

# "The total length of the SMS body must be controlled within 460 characters.
# Special symbols such as 【】 and ★, ※, →, ● etc. are not supported."
MAX_TEXT_CHARS = 460
FORBIDDEN_SYMBOLS = "【】★※→●"
# "Query up to 100 messages per request."
MAX_STATUS_IDS = 100
# "Recipient mobile number (E.164 format with country code)".
E164 = re.compile(r"\+[1-9][0-9]{7,14}")
# "#variable_name#": letters, digits and underscores, shorter than 24 characters.
VARIABLE = re.compile(r"#([A-Za-z0-9_]{1,23})#")


def render_template(text: str, values: Mapping[str, str]) -> str:
    """Replaces every #name# with its value; raises KeyError(name) for a missing one."""
    return VARIABLE.sub(lambda match: values[match.group(1)], text)


def content_problem(text: str) -> str | None:
    """Why Skynoo refuses this SMS body, or None when it is acceptable."""
    if len(text) > MAX_TEXT_CHARS:
        return f"SMS body exceeds {MAX_TEXT_CHARS} characters (got {len(text)})"
    for symbol in FORBIDDEN_SYMBOLS:
        if symbol in text:
            return f"SMS body contains the unsupported symbol {symbol}"
    return None


@dataclass(frozen=True)
class CodeRule:
    """What a non-"200" envelope code means for the message we tried to send."""

    retryable: bool
    final_status: MessageStatus = MessageStatus.FAILED


# Envelope "code" values other than "200" (the seed shows failures as
# {"code": "400", "message": ...}; the rest follow the HTTP meaning of the number).
ENVELOPE_CODES: dict[str, CodeRule] = {
    # Bad request: invalid mobile, useType, text too long or with unsupported
    # symbols, unknown templateId, missing template variable. The same content
    # would be refused again: the provider refused the content or number.
    "400": CodeRule(retryable=False, final_status=MessageStatus.REJECTED),
    # Unauthorized / forbidden (wrong apiKey:apiSecret, IP not whitelisted, account
    # not authenticated): our configuration is wrong, no retry can fix it.
    "401": CodeRule(retryable=False, final_status=MessageStatus.FAILED),
    "403": CodeRule(retryable=False, final_status=MessageStatus.FAILED),
    # Throttled (rate limits): the same request succeeds later.
    "429": CodeRule(retryable=True),
}
# Server errors ("500", "502", "503", ... any "5xx"): Skynoo's trouble, retry later.
SERVER_ERROR = CodeRule(retryable=True)


def code_rule(code: str) -> CodeRule | None:
    """The rule for an envelope code, or None for an undocumented one."""
    if code in ENVELOPE_CODES:
        return ENVELOPE_CODES[code]
    if len(code) == 3 and code.startswith("5") and code.isdigit():
        return SERVER_ERROR
    return None


# getStatus "status" values (Message Status Values in the seed).
STATUSES: dict[str, MessageStatus] = {
    # Still on its way: created, queued, or handed to the operator.
    "UNKNOWN": MessageStatus.SENT,
    "QUEUED": MessageStatus.SENT,
    "SEND": MessageStatus.SENT,
    # Final outcomes, one to one.
    "DELIVERED": MessageStatus.DELIVERED,
    "UNDELIVERED": MessageStatus.UNDELIVERED,
    "FAILED": MessageStatus.FAILED,
    "REJECTED": MessageStatus.REJECTED,
}
