"""The providers in use: transports, their routing, breakers and rate limiters.

A ProviderSet is built from the routing config inside the running loop (aiolimiter
limiters bind to it) and replaced as a whole on reload; sends in flight finish on
the set they started with.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace

from aiolimiter import AsyncLimiter

from server.dispatch.breaker import BreakerSettings, CircuitBreaker
from server.dispatch.route_choice import Router
from server.domain.inbound import InboundSms
from server.domain.models import Channel, OutboundMessage, UseType
from server.domain.ports import ReceiptSink, Transport, VoiceTransport
from server.providers.loopback import LoopbackConfig
from server.providers.registry import build_transport
from server.providers.webhooks import InboundTransport, WebhookTransport
from server.routes_file import RoutingConfig

__all__ = ["BreakerSettings", "LiveProviders", "ProviderRoutes", "ProviderSet", "can_carry"]


def can_carry(transport: Transport, message: OutboundMessage) -> bool:
    """Whether ``transport`` could send ``message`` at all (routing skips it if not).

    Voice codes need a provider that places calls; a transport with rules of its own
    for them (SendCloud: codes of 4 to 6 digits) says so in ``can_carry_voice``.
    Everything else asks the transport's ``can_carry``."""
    if message.channel == Channel.VOICE:
        if not (
            transport.capabilities.voice
            and message.code is not None
            and isinstance(transport, VoiceTransport)
        ):
            return False
        voice_rule = getattr(transport, "can_carry_voice", None)
        return True if voice_rule is None else bool(voice_rule(message))
    return transport.can_carry(message)


@dataclass
class ProviderSet:
    transports: dict[str, Transport]
    kinds: dict[str, str]  # provider name -> kind (skynoo, sendcloud, ...)
    router: Router
    breakers: dict[str, CircuitBreaker]
    limiters: dict[str, AsyncLimiter | contextlib.nullcontext[None]]

    @classmethod
    def build(
        cls,
        routing: RoutingConfig,
        *,
        receipts: ReceiptSink,
        loopback: LoopbackConfig,
        breaker: BreakerSettings | None = None,
        inbound: Callable[[InboundSms], Awaitable[None]] | None = None,
    ) -> ProviderSet:
        breaker = breaker or BreakerSettings()
        transports = {
            spec.name: build_transport(spec, receipts=receipts, loopback=loopback, inbound=inbound)
            for spec in routing.providers
        }
        limiters: dict[str, AsyncLimiter | contextlib.nullcontext[None]] = {}
        for spec in routing.providers:
            rate = spec.rate_per_second
            if rate is None:
                limiters[spec.name] = contextlib.nullcontext()  # no limit configured
            elif rate >= 1:
                # Smooth outbound traffic: a bucket of one second's worth.
                limiters[spec.name] = AsyncLimiter(rate, 1.0)
            else:
                limiters[spec.name] = AsyncLimiter(1, 1 / rate)
        return cls(
            transports=transports,
            kinds={spec.name: spec.kind for spec in routing.providers},
            router=Router(routing.routes),
            breakers={name: CircuitBreaker(breaker) for name in transports},
            limiters=limiters,
        )

    def carriers(self, message: OutboundMessage) -> list[str]:
        """The providers that could send ``message``, in its route's failover order
        (empty: no route can carry it)."""
        return [
            name
            for name in self.router.candidates(message)
            if name in self.transports and can_carry(self.transports[name], message)
        ]

    def can_carry(self, message: OutboundMessage) -> bool:
        return bool(self.carriers(message))

    def can_carry_batch(self, messages: Sequence[OutboundMessage]) -> list[bool]:
        """``can_carry`` for each message; messages alike in what routing looks at
        (number prefix aside, a batch's messages share all of it) are judged once."""
        verdicts: dict[tuple[object, ...], bool] = {}
        out: list[bool] = []
        for message in messages:
            route = self.router.route_for(message)
            key = (
                id(route),
                message.channel,
                message.template_code,
                message.use_type,
                message.code is None or len(message.code),
            )
            if key not in verdicts:
                verdicts[key] = self.can_carry(message)
            out.append(verdicts[key])
        return out

    def can_carry_to(self, message: OutboundMessage, numbers: Sequence[str]) -> list[bool]:
        """``can_carry_batch`` for ``message`` to each of ``numbers``: one verdict per
        route (routes differ by number prefix only), no message built per number."""
        verdicts: dict[int, bool] = {}
        out: list[bool] = []
        for number in numbers:
            route = self.router.route(number, message.use_type)
            verdict = verdicts.get(id(route))
            if verdict is None:
                verdict = self.can_carry(replace(message, to_number=number))
                verdicts[id(route)] = verdict
            out.append(verdict)
        return out

    def hook_receivers(self, kind: str, name: str | None = None) -> list[WebhookTransport]:
        """The transports that take pushes posted for provider ``kind`` (and ``name``,
        when the post names one)."""
        return [
            transport
            for n, transport in self.transports.items()
            if (name is None or n == name)
            and self.kinds[n] == kind
            and isinstance(transport, WebhookTransport)
        ]

    def inbound_receivers(self, kind: str, name: str | None = None) -> list[InboundTransport]:
        """The transports that take inbound messages posted for ``kind`` (and ``name``)."""
        return [
            transport
            for n, transport in self.transports.items()
            if (name is None or n == name)
            and self.kinds[n] == kind
            and isinstance(transport, InboundTransport)
        ]

    def places_calls(self, mobile: str) -> bool:
        """Whether some provider routed for verification codes to ``mobile`` places
        voice calls at all."""
        route = self.router.route(mobile, UseType.VERIFICATION)
        return route is not None and any(
            self.transports[name].capabilities.voice
            and isinstance(self.transports[name], VoiceTransport)
            for name in route.providers
            if name in self.transports
        )

    def breaker_states(self) -> dict[str, str]:
        return {name: b.state for name, b in self.breakers.items()}

    async def close(self) -> None:
        for transport in self.transports.values():
            with contextlib.suppress(Exception):
                await transport.close()


class ProviderRoutes:
    """The domain's Routes port, answered by the provider set in use (a reload
    replaces it; each question reads the current one)."""

    def __init__(self, providers: Callable[[], ProviderSet]) -> None:
        self._providers = providers

    def can_carry(self, message: OutboundMessage) -> bool:
        return self._providers().can_carry(message)

    def can_carry_batch(self, messages: Sequence[OutboundMessage]) -> list[bool]:
        return self._providers().can_carry_batch(messages)

    def can_carry_to(self, message: OutboundMessage, numbers: Sequence[str]) -> list[bool]:
        return self._providers().can_carry_to(message, numbers)

    def places_calls(self, mobile: str) -> bool:
        return self._providers().places_calls(mobile)


class LiveProviders:
    """The provider set in use. A reload replaces it; the set replaced stays open for
    ``grace`` seconds so that sends in flight on its transports finish, then closes."""

    def __init__(self, grace: float) -> None:
        self._grace = grace
        self._current: ProviderSet | None = None
        self._retired: list[ProviderSet] = []
        self._closing: set[asyncio.Task[None]] = set()

    def __call__(self) -> ProviderSet:
        assert self._current is not None, "no providers yet"
        return self._current

    def breaker_states(self) -> dict[str, str]:
        return {} if self._current is None else self._current.breaker_states()

    def use(self, providers: ProviderSet) -> ProviderSet:
        """Puts ``providers`` in use (returned); the set it replaces closes after the
        grace."""
        old, self._current = self._current, providers
        if old is not None:
            self._retired.append(old)
            task = asyncio.create_task(self._close_later(old), name="close-old-providers")
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)
        return providers

    async def close(self) -> None:
        """Closes every set, the one in use and those still in their grace."""
        for task in list(self._closing):
            task.cancel()
        await asyncio.gather(*self._closing, return_exceptions=True)
        for retired in [*self._retired, self._current]:
            if retired is not None:
                await retired.close()
        self._retired.clear()

    async def _close_later(self, old: ProviderSet) -> None:
        await asyncio.sleep(self._grace)
        self._retired.remove(old)
        await old.close()
