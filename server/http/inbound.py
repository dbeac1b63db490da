"""Inbound messages: a post to /inbound/<kind>[/<name>] is verified by the transports
of that kind and stored (with what its keyword changes) before the answer."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from server.dispatch.provider_set import ProviderSet
from server.domain.inbound import InboundIntake, InboundMessage
from server.domain.ports import ProviderError
from server.http.webhooks import WebhookRejected
from server.providers.webhooks import HookRequest


class InboundReceiver:
    """Routes an inbound post to the provider it is for (Twilio, loopback)."""

    def __init__(self, providers: Callable[[], ProviderSet], intake: InboundIntake) -> None:
        self._providers = providers
        self._intake = intake

    async def __call__(
        self,
        kind: str,
        name: str | None,
        form: Mapping[str, str],
        request: HookRequest | None = None,
    ) -> InboundMessage | None:
        """Stores the message (durable on return; None when no account owns it);
        raises WebhookRejected when no transport of that kind (and name) accepts it,
        InvalidArgument when what it carries is malformed."""
        candidates = self._providers().inbound_receivers(kind, name)
        if not candidates:
            raise WebhookRejected(
                f"no {kind} provider takes inbound messages" + (f" named {name}" if name else "")
            )
        errors: list[str] = []
        for transport in candidates:
            try:
                sms = transport.parse_inbound(form, request=request)
            except ProviderError as exc:
                errors.append(str(exc))
                continue
            return await self._intake.receive(sms)
        raise WebhookRejected("; ".join(errors))
