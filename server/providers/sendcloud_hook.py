"""SendCloud SMSHook: checking that a delivery event really comes from SendCloud.

SendCloud POSTs one form per settled message to the URL configured in its console:

=========== ==============================================================
field       meaning
=========== ==============================================================
event       "delivered", or "undelivered" / "failed" (not delivered)
smsId       SendCloud's id of the message (the one send answered)
phone       the recipient as it was sent
statusCode  the SMSHook code (410-590) for a failure, 200 when delivered
message     a human-readable reason
timestamp   milliseconds since the epoch, when the event was sent
token       32 random alphanumerics, new for every event
signature   lowercase hex HMAC-SHA256 with key smsKey of timestamp + token
tag         the ``tag`` of the request, when it had one (we send
            {"smsgw": "<our message id>"}; the seed does not list the
            event's fields, so an event without it is matched by smsId)
=========== ==============================================================

The signature recipe is SendCloud's published one
(https://docs.aurorasendcloud.com/reference/smshook, "verify_signature").

``HookVerifier`` refuses a form whose signature does not match (constant-time
compare), whose timestamp is more than ``max_age`` seconds old or more than
``max_skew`` seconds in the future, or whose token was already seen within the
age window (a replay). Tokens are kept only as long as they could be replayed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Mapping

from server.domain.models import MessageStatus
from server.domain.ports import ProviderError, Receipt
from server.providers.sendcloud_codes import failed_status, suppression_for

DELIVERED_EVENTS = frozenset({"delivered"})
FAILED_EVENTS = frozenset({"undelivered", "failed"})
REQUIRED_FIELDS = ("event", "smsId", "timestamp", "token", "signature")


def hook_signature(sms_key: str, timestamp: str, token: str) -> str:
    """The signature SendCloud puts on an SMSHook event."""
    return hmac.new(sms_key.encode(), (timestamp + token).encode(), hashlib.sha256).hexdigest()


class HookVerifier:
    """Verifies SMSHook forms for one smsKey and remembers recent tokens."""

    def __init__(self, sms_key: str, *, max_age: float = 300.0, max_skew: float = 60.0) -> None:
        self._key = sms_key
        self._max_age = max_age
        self._max_skew = max_skew
        self._seen: dict[str, float] = {}  # token -> event time (s)

    def verify(self, form: Mapping[str, str], now: float | None = None) -> None:
        """Raises ProviderError unless ``form`` is an authentic, fresh, unseen event."""
        now = time.time() if now is None else now
        missing = [name for name in REQUIRED_FIELDS if not form.get(name)]
        if missing:
            raise ProviderError(f"SMSHook event lacks {', '.join(missing)}")
        timestamp, token = form["timestamp"], form["token"]
        expected = hook_signature(self._key, timestamp, token)
        if not hmac.compare_digest(expected.encode(), form["signature"].encode()):
            raise ProviderError("SMSHook signature does not match (wrong smsKey or forged)")
        if not timestamp.isascii() or not timestamp.isdigit():
            raise ProviderError("SMSHook timestamp is not a number of milliseconds")
        sent_at = int(timestamp) / 1000
        if sent_at < now - self._max_age:
            raise ProviderError(f"SMSHook event is older than {self._max_age:.0f} s")
        if sent_at > now + self._max_skew:
            raise ProviderError(f"SMSHook event is more than {self._max_skew:.0f} s in the future")
        self._forget_before(now - self._max_age)
        if token in self._seen:
            raise ProviderError("SMSHook token was already used (replayed event)")
        self._seen[token] = sent_at

    def _forget_before(self, oldest: float) -> None:
        for token in [t for t, at in self._seen.items() if at < oldest]:
            del self._seen[token]


def tagged_message_id(tag: str | None) -> str:
    """Our message id from a ``tag`` we sent ({"smsgw": id}), or "" for any other."""
    if not tag:
        return ""
    try:
        value = json.loads(tag)
    except ValueError:
        return ""
    ours = value.get("smsgw") if isinstance(value, dict) else None
    return ours if isinstance(ours, str) and 0 < len(ours) <= 128 else ""


def receipt_from_hook(provider: str, form: Mapping[str, str]) -> Receipt:
    """The receipt a verified event carries; ``message_id`` is ours when the event
    brings back our tag, else empty (the caller matches by smsId)."""
    event = form["event"]
    ours = tagged_message_id(form.get("tag"))
    if event in DELIVERED_EVENTS:
        return Receipt(provider, ours, MessageStatus.DELIVERED, provider_message_id=form["smsId"])
    if event not in FAILED_EVENTS:
        raise ProviderError(f"SMSHook event {event!r} is not a delivery outcome")
    raw = form.get("statusCode", "")
    code = int(raw) if raw.isascii() and raw.isdigit() else 0
    return Receipt(
        provider,
        ours,
        failed_status(code),
        error_code=str(code) if code else "UNDELIVERED",
        provider_message_id=form["smsId"],
        suppress=suppression_for(str(code)),
    )
