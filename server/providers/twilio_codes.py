"""What Twilio's Messaging documentation says, free of I/O: the message statuses and
the error codes, with what each means to us.

For the transport (server/providers/twilio.py). The emulator
(server/emulators/twilio.py) reads the documents on its own, so the two can disagree.

Statuses: https://www.twilio.com/docs/messaging/api/message-resource#message-status-values
Errors:   https://www.twilio.com/docs/api/errors (each code has its page there)
"""

from __future__ import annotations

from dataclasses import dataclass

from server.domain.models import MessageStatus

API_VERSION = "2010-04-01"

# Final statuses of an outbound Message; the others (queued, accepted, scheduled,
# sending, sent) mean it is still on its way and are not receipts.
FINAL_STATUSES: dict[str, MessageStatus] = {
    "delivered": MessageStatus.DELIVERED,
    "read": MessageStatus.DELIVERED,  # channels with read receipts: delivered, then read
    "undelivered": MessageStatus.UNDELIVERED,
    "failed": MessageStatus.FAILED,
    "canceled": MessageStatus.FAILED,  # a scheduled message cancelled at Twilio
}
IN_FLIGHT = frozenset({"queued", "accepted", "scheduled", "sending", "sent"})


@dataclass(frozen=True)
class CodeRule:
    """What an error code in a refused create means for the message."""

    retryable: bool
    final_status: MessageStatus = MessageStatus.FAILED


_REJECTED = CodeRule(retryable=False, final_status=MessageStatus.REJECTED)
_OURS = CodeRule(retryable=False)  # our request or account: the same request fails again

ERROR_CODES: dict[int, CodeRule] = {
    # The recipient: the same number is refused again.
    21211: _REJECTED,  # Invalid 'To' Phone Number
    21612: _REJECTED,  # the To/From pair cannot be routed
    21614: _REJECTED,  # 'To' is not a valid mobile number (landline)
    21610: _REJECTED,  # Attempt to send to unsubscribed recipient (replied STOP)
    # Our request or account: configuration to fix, not to retry.
    20003: _OURS,  # Authenticate (wrong Account SID or auth token)
    20404: _OURS,  # resource not found (account, or the Messaging Service)
    21408: _OURS,  # permission to send to this region not enabled
    21602: _OURS,  # Message body is required
    21603: _OURS,  # A 'From' phone number is required
    21604: _OURS,  # A 'To' phone number is required
    21606: _OURS,  # 'From' is not a valid SMS-capable number of the account
    21617: _OURS,  # body exceeds 1,600 characters
    # "An API Request that receives an error 429 response is never processed and is
    # always safe to retry" (error 20429).
    20429: CodeRule(retryable=True),
}


def code_rule(code: int | None, http_status: int) -> CodeRule:
    """The rule for a refused create: by Twilio's code, else by the HTTP status (a 4xx
    Twilio documents no code for is final: sending the same request again would be
    refused again)."""
    if code is not None and code in ERROR_CODES:
        return ERROR_CODES[code]
    if http_status == 429:
        return CodeRule(retryable=True)
    return _OURS


def as_code(value: object) -> int | None:
    """Twilio's error codes are integers in JSON (and digits in callbacks' forms)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    return None
