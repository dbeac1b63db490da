"""The interface of transports whose provider pushes delivery events (webhooks)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from server.domain.inbound import InboundSms
from server.domain.ports import Receipt


@dataclass(frozen=True)
class HookRequest:
    """What of the HTTP request beyond its form a push may be signed over (Twilio signs
    the URL it called; SendCloud signs fields of the form alone)."""

    raw_path: str  # path and query string exactly as received ("/webhooks/twilio?x=1")
    headers: Mapping[str, str] = field(default_factory=dict)  # case-insensitive in use


@runtime_checkable
class WebhookTransport(Protocol):
    """Posted to /webhooks/<provider kind>[/<provider name>]."""

    def parse_hook(
        self,
        form: Mapping[str, str],
        *,
        now: float | None = None,
        request: HookRequest | None = None,
    ) -> list[Receipt]:
        """Verifies a push (signature, freshness, replay) and returns its receipts;
        raises ProviderError when it must be refused."""
        ...


@runtime_checkable
class InboundTransport(Protocol):
    """Posted to /inbound/<provider kind>[/<provider name>]: a message a recipient sent."""

    def parse_inbound(
        self, form: Mapping[str, str], *, request: HookRequest | None = None
    ) -> InboundSms:
        """Verifies the post (signature) and returns the message it carries; raises
        ProviderError when it must be refused."""
        ...
