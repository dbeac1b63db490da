"""Messages from recipients (InboundService) and their keywords.

A provider hands the gateway an ``InboundSms`` (a signed Twilio webhook, or the
loopback provider's injection). Its text is matched against the keywords of every
configured language, trimmed and case-insensitively: STOP (and its synonyms) adds an
``_OPT_OUT`` suppression of the sender for notification and marketing, START removes
an ``_OPT_OUT`` suppression (never a MANUAL or a provider's one), HELP is answered
with the language's configured reply through the durable send path. The message, its
event and what its keyword changes are stored in one transaction (store/inbound.py).

Which account a message belongs to: the owner the routing file names for the number
it was sent to (``[inbound] owners``), else the account that last sent a message to
its sender (through any provider). With neither, it is refused (nobody to tell).
"""

from __future__ import annotations

import dataclasses
import enum
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from server.domain.errors import FieldViolation, InvalidArgument
from server.domain.pagination import decode_page_token, encode_page_token, page_size
from server.domain.phones import normalize_any_spelling

log = logging.getLogger(__name__)

MAX_INBOUND_TEXT = 1600  # Twilio's most for one (concatenated) message
MAX_REPLAY_EVENTS = 10_000
REPLAY_PAGE = 500


class Keyword(enum.StrEnum):
    NONE = ""
    STOP = "STOP"
    START = "START"
    HELP = "HELP"


@dataclass(frozen=True)
class KeywordLanguage:
    """One language's keywords (upper case) and its HELP reply."""

    stop: frozenset[str]
    start: frozenset[str]
    help: frozenset[str]
    help_reply: str = ""


ENGLISH = KeywordLanguage(
    stop=frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"}),
    start=frozenset({"START", "UNSTOP"}),
    help=frozenset({"HELP", "INFO"}),
    help_reply="Reply STOP to unsubscribe, START to subscribe again.",
)


@dataclass(frozen=True)
class InboundConfig:
    """The routing file's ``[inbound]`` table."""

    # Language code -> its keywords; English unless the file gives others.
    languages: Mapping[str, KeywordLanguage] = field(default_factory=lambda: {"en": ENGLISH})
    # E.164 number we receive on -> the account id that owns it.
    owners: Mapping[str, int] = field(default_factory=dict)

    def keyword(self, text: str) -> tuple[Keyword, str]:
        """The keyword the whole text is (trimmed, any case), and the HELP reply of the
        language it is in ("" unless HELP)."""
        word = " ".join(text.split()).upper()
        if not word:
            return Keyword.NONE, ""
        for language in self.languages.values():
            if word in language.stop:
                return Keyword.STOP, ""
            if word in language.start:
                return Keyword.START, ""
            if word in language.help:
                # A language without a reply of its own answers with the first one's.
                fallback = next((x.help_reply for x in self.languages.values() if x.help_reply), "")
                return Keyword.HELP, language.help_reply or fallback
        return Keyword.NONE, ""


@dataclass(frozen=True)
class InboundSms:
    """A message a provider received for us, verified by its transport."""

    provider: str  # the provider's name in the routing file
    from_number: str
    to_number: str
    text: str
    provider_message_id: str = ""
    reply_to_message_id: str = ""


@dataclass(frozen=True)
class InboundMessage:
    id: str
    event_id: int
    account_id: int
    from_number: str
    to_number: str
    text: str
    provider: str
    keyword: Keyword
    received_at: datetime
    reply_to_message_id: str = ""


@dataclass(frozen=True)
class InboundPage:
    messages: list[InboundMessage]
    next_page_token: str


class InboundRepository(Protocol):
    async def page(self, account_id: int, before_event_id: int, limit: int) -> list[InboundMessage]:
        """Newest first: the account's messages with event_id < before_event_id."""
        ...

    async def after(self, account_id: int, event_id: int, limit: int) -> list[InboundMessage]:
        """Oldest first: the account's messages with event_id > event_id."""
        ...

    async def count_after(self, account_id: int, event_id: int, limit: int) -> int: ...

    async def last_event_id(self) -> int: ...


def as_e164(number: str) -> str:
    try:
        return normalize_any_spelling(number.strip(), "From", None)
    except InvalidArgument:
        return number.strip()


def check_inbound(sms: InboundSms) -> None:
    """Refuses what no provider would send (the transport checked the signature)."""
    violations: list[FieldViolation] = []
    if not sms.from_number:
        violations.append(FieldViolation("From", "the sender is required"))
    if not sms.to_number:
        violations.append(FieldViolation("To", "the number it was sent to is required"))
    if len(sms.text) > MAX_INBOUND_TEXT:
        violations.append(FieldViolation("Body", f"at most {MAX_INBOUND_TEXT} characters"))
    if violations:
        raise InvalidArgument(violations)


class InboundMessages:
    """ListInboundMessages."""

    def __init__(self, repository: InboundRepository) -> None:
        self._repository = repository

    async def list(self, account_id: int, requested_size: int, token: str) -> InboundPage:
        size = page_size(requested_size)
        scope = f"inbound:{account_id}"
        before = 2**63 - 1
        if token:
            (position,) = decode_page_token(token, scope, shape=(int,))
            before = int(position)
        rows = await self._repository.page(account_id, before, size + 1)
        more = len(rows) > size
        rows = rows[:size]
        next_token = encode_page_token(scope, [rows[-1].event_id]) if more and rows else ""
        return InboundPage(rows, next_token)


class InboundRecorder(Protocol):
    async def record(
        self, sms: InboundSms, config: InboundConfig
    ) -> tuple[InboundMessage | None, bool]:
        """Stores the message and its keyword's effects in one transaction: (the
        message, or None when no account owns it; whether a HELP reply was queued)."""
        ...


class InboundIntake:
    """Takes a verified inbound message: stores it with its effects, durable on return."""

    def __init__(
        self,
        recorder: InboundRecorder,
        config: Callable[[], InboundConfig],
        on_reply: Callable[[], None] = lambda: None,
    ) -> None:
        """``config``: the routing file's [inbound] in use (a reload replaces it);
        ``on_reply``: a HELP reply was queued (wakes the dispatcher)."""
        self._recorder = recorder
        self._config = config
        self._on_reply = on_reply

    async def receive(self, sms: InboundSms) -> InboundMessage | None:
        check_inbound(sms)
        # The sender as SendMessage and suppressions spell it (E.164), when it is a
        # phone number; a short code or sender name is kept as given.
        sms = dataclasses.replace(sms, from_number=as_e164(sms.from_number))
        message, replied = await self._recorder.record(sms, self._config())
        if message is None:
            log.warning(
                "inbound message via %s to %s: no account owns the number or sent to the "
                "sender; dropped (name an owner in [inbound] owners)",
                sms.provider,
                sms.to_number[:20],
            )
        if replied:
            self._on_reply()
        return message
