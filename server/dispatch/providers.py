"""The providers in use: transports, their routing, breakers and rate limiters.

A ProviderSet is built from the routing config inside the running loop (aiolimiter
limiters bind to it) and replaced as a whole on reload; sends in flight finish on
the set they started with.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from aiolimiter import AsyncLimiter

from server.dispatch.breaker import CircuitBreaker
from server.dispatch.routing import Router
from server.domain.ports import ReceiptSink, Transport
from server.providers.loopback import LoopbackConfig
from server.providers.registry import build_transport
from server.routing_config import RoutingConfig


@dataclass(frozen=True)
class BreakerSettings:
    failure_threshold: int = 5
    reset_seconds: float = 30.0


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
    ) -> ProviderSet:
        breaker = breaker or BreakerSettings()
        transports = {
            spec.name: build_transport(spec, receipts=receipts, loopback=loopback)
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
            breakers={
                name: CircuitBreaker(breaker.failure_threshold, breaker.reset_seconds)
                for name in transports
            },
            limiters=limiters,
        )

    def breaker_states(self) -> dict[str, str]:
        return {name: b.state for name, b in self.breakers.items()}

    async def close(self) -> None:
        for transport in self.transports.values():
            with contextlib.suppress(Exception):
                await transport.close()
