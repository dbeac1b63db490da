"""SendCloud's documented codes and what each one means for a message (pure, no I/O).

Two tables, both from the SendCloud SMS API document (seed 001):

* ``RETURN_CODES``: the ``statusCode`` of an API answer (send, sendCode, sendVoice,
  status/query). Each code is accepted, worth retrying, or a final refusal; a final
  refusal is REJECTED when the provider refused the number or the content, FAILED
  when the request itself was wrong (credentials, signature, template set-up,
  account). The rule of thumb: codes about *our request or account* are FAILED,
  codes about *the recipient or the words* are REJECTED.
* ``HOOK_CODES``: the ``statusCode`` of a settled message (SMSHook events and our
  status query items). The 4x0 codes and 550 say the platform refused to send
  (intercept lists, unsubscribed, keyword filter, variables, length, complaints):
  REJECTED. 500/510/580/590 say the handset or network did not take it:
  UNDELIVERED.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

from server.domain.models import MessageStatus
from server.domain.ports import SendOutcome
from server.domain.suppression import SuppressionReason


class Verdict(enum.Enum):
    ACCEPTED = "accepted"  # the provider took the message
    RETRY = "retry"  # try again later (same sendRequestId, so no double send)
    FINAL = "final"  # never send this message through SendCloud again


@dataclass(frozen=True)
class CodeRule:
    verdict: Verdict
    meaning: str
    status: MessageStatus = MessageStatus.FAILED  # for FINAL only


_OK = Verdict.ACCEPTED
_RETRY = Verdict.RETRY
_FINAL = Verdict.FINAL
_REJECTED = MessageStatus.REJECTED
_FAILED = MessageStatus.FAILED

RETURN_CODES: Final[dict[int, CodeRule]] = {
    # Success. 311 (some numbers refused) is an acceptance only for the numbers that
    # got an smsId; the transport checks that our number did.
    200: CodeRule(_OK, "request was successful"),
    311: CodeRule(_OK, "requests numbers were partially successful"),
    # 400 is SendCloud's answer to a repeated sendRequestId (we send our message id):
    # the first request was processed, so the message is accepted, not refused.
    400: CodeRule(_OK, "duplicate request"),
    # Every number refused: the recipient, not our request.
    312: CodeRule(_FINAL, "all request failed", _REJECTED),
    # The number: empty or duplicated means we built the request wrong (FAILED);
    # a malformed number is the recipient's problem (REJECTED).
    411: CodeRule(_FINAL, "phone number cannot be empty", _FAILED),
    412: CodeRule(_FINAL, "invalid phone number format", _REJECTED),
    413: CodeRule(_FINAL, "duplicate phone numbers", _FAILED),
    # Request signature: a wrong smsKey or a bug of ours; retrying cannot help.
    421: CodeRule(_FINAL, "incorrect signature parameter", _FAILED),
    422: CodeRule(_FINAL, "incorrect signature", _FAILED),
    # Template set-up on the SendCloud console: configuration errors.
    431: CodeRule(_FINAL, "template does not exist", _FAILED),
    432: CodeRule(_FINAL, "template not submitted for verification or not approved", _FAILED),
    433: CodeRule(_FINAL, "template ID cannot be empty", _FAILED),
    # Variables: the content was refused (bad format, HTTP links, too long).
    441: CodeRule(_FINAL, "invalid substituted variable format", _REJECTED),
    483: CodeRule(_FINAL, "substituted variable cannot be longer than 32 characters", _REJECTED),
    482: CodeRule(_FINAL, "invalid format of phone number and substituted variable", _REJECTED),
    481: CodeRule(_FINAL, "phone number and substitution variable cannot be empty", _FAILED),
    # Scheduling: we never schedule, so these are bugs of ours.
    451: CodeRule(_FINAL, "invalid scheduled time format", _FAILED),
    452: CodeRule(_FINAL, "scheduled time is earlier than server time", _FAILED),
    # Our clock is more than 6 s off SendCloud's: the transport re-syncs and retries.
    461: CodeRule(_RETRY, "invalid timestamp (more than 6 s from server time)"),
    # The account: wrong smsUser, no SMS permission, no balance. Retrying cannot help
    # until someone fixes the account, so the message fails (another route may work).
    471: CodeRule(_FINAL, "smsUser does not exist", _FAILED),
    472: CodeRule(_FINAL, "smsUser cannot be empty", _FAILED),
    473: CodeRule(_FINAL, "no permission: free registered users cannot send SMS", _FAILED),
    474: CodeRule(_FINAL, "user does not exist", _FAILED),
    499: CodeRule(_FINAL, "insufficient balance", _FAILED),
    601: CodeRule(_FINAL, "no permission", _FAILED),
    # Per-number throttling: "retry later", the next minute or day may pass.
    496: CodeRule(_RETRY, "too many messages sent to this number within one minute"),
    498: CodeRule(_RETRY, "too many messages sent to this number in one day"),
    # SendCloud's own trouble.
    501: CodeRule(_RETRY, "server exception"),
}

# What the status of a settled message with each SMSHook code becomes.
HOOK_CODES: Final[dict[int, MessageStatus]] = {
    # Refused by the platform before reaching the network.
    410: MessageStatus.REJECTED,  # number in the global intercept list
    420: MessageStatus.REJECTED,  # number in the local intercept list
    430: MessageStatus.REJECTED,  # recipient unsubscribed
    440: MessageStatus.REJECTED,  # keyword filtering
    450: MessageStatus.REJECTED,  # wrong replacement variable
    460: MessageStatus.REJECTED,  # content longer than 500 characters
    550: MessageStatus.REJECTED,  # template content was complained about
    # Sent, but the handset or network did not take it.
    500: MessageStatus.UNDELIVERED,  # number does not exist
    510: MessageStatus.UNDELIVERED,  # number out of service
    580: MessageStatus.UNDELIVERED,  # phone powered off
    590: MessageStatus.UNDELIVERED,  # other reasons
}


# SMSHook codes that say the recipient must not get more from the account: the number
# is suppressed with the receipt (SuppressionService).
SUPPRESSING_CODES: Final[dict[int, SuppressionReason]] = {
    410: SuppressionReason.PROVIDER_BLOCKED,
    420: SuppressionReason.PROVIDER_BLOCKED,
    430: SuppressionReason.PROVIDER_UNSUBSCRIBED,
}


def suppression_for(error_code: str) -> int:
    """The SuppressionReason number a settled message's code calls for (0: none)."""
    code = int(error_code) if error_code.isascii() and error_code.isdigit() else 0
    return int(SUPPRESSING_CODES.get(code, SuppressionReason.UNSPECIFIED))


def refusal(code: int) -> SendOutcome:
    """The outcome of an answer with a non-accepting ``code`` (documented or not)."""
    rule = RETURN_CODES.get(code)
    if rule is None or rule.verdict is Verdict.ACCEPTED:
        # Undocumented codes, and accepting codes that came without our smsId.
        return SendOutcome(accepted=False, retryable=True, error_code="BAD_RESPONSE")
    if rule.verdict is Verdict.RETRY:
        return SendOutcome(accepted=False, retryable=True, error_code=str(code))
    return SendOutcome(
        accepted=False, retryable=False, error_code=str(code), final_status=rule.status
    )


def failed_status(code: int) -> MessageStatus:
    """Our status for a message SendCloud reports as failed with SMSHook ``code``;
    an unknown code counts as not delivered (the message did leave us)."""
    return HOOK_CODES.get(code, MessageStatus.UNDELIVERED)
