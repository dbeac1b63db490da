"""Provider webhooks: a push posted to /webhooks/<kind>[/<name>] is verified by the
transports of that kind and its receipts recorded before the answer."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from server.dispatch.provider_set import ProviderSet
from server.dispatch.receipts import ReceiptRecorder
from server.domain.ports import ProviderError
from server.providers.webhooks import HookRequest


class WebhookRejected(Exception):
    """A webhook that failed verification (signature, freshness, replay, provider)."""


class WebhookReceiver:
    """Routes a push to the provider it is for (SendCloud SMSHook, ...)."""

    def __init__(self, providers: Callable[[], ProviderSet], receipts: ReceiptRecorder) -> None:
        """``providers``: the set in use (a reload replaces it)."""
        self._providers = providers
        self._receipts = receipts

    async def __call__(
        self,
        kind: str,
        name: str | None,
        form: Mapping[str, str],
        request: HookRequest | None = None,
    ) -> None:
        """Records the push's receipts (durable on return); raises WebhookRejected when
        no transport of that kind (and name) accepts it."""
        candidates = self._providers().hook_receivers(kind, name)
        if not candidates:
            raise WebhookRejected(f"no {kind} provider" + (f" named {name}" if name else ""))
        errors: list[str] = []
        for transport in candidates:
            try:
                receipts = transport.parse_hook(form, request=request)
            except ProviderError as exc:
                errors.append(str(exc))
                continue
            for receipt in receipts:
                await self._receipts(receipt)
            await self._receipts.flush()
            return
        raise WebhookRejected("; ".join(errors))
