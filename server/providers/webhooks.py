"""The interface of transports whose provider pushes delivery events (webhooks)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, runtime_checkable

from server.domain.ports import Receipt


@runtime_checkable
class WebhookTransport(Protocol):
    """Posted to /webhooks/<provider kind>[/<provider name>]."""

    def parse_hook(self, form: Mapping[str, str], *, now: float | None = None) -> list[Receipt]:
        """Verifies a push (signature, freshness, replay) and returns its receipts;
        raises ProviderError when it must be refused."""
        ...
