"""A reload replaces the provider set in use; the set it replaces stays open for the
grace (sends in flight on it finish), then closes. Stopping closes every set."""

from __future__ import annotations

import asyncio

from server.dispatch.provider_set import LiveProviders, ProviderSet
from server.domain.ports import Receipt
from server.providers.loopback import LoopbackConfig, LoopbackTransport
from server.routes_file import ProviderSpec, RouteSpec, RoutingConfig


async def _ignore(receipt: Receipt) -> None:
    pass


class Closing(LoopbackTransport):
    def __init__(self) -> None:
        super().__init__(LoopbackConfig(), _ignore, name="p")
        self.closed = False

    async def close(self) -> None:
        self.closed = True


def provider_set() -> tuple[ProviderSet, Closing]:
    routing = RoutingConfig(providers=(ProviderSpec("p", "loopback"),), routes=(RouteSpec(("p",)),))
    built = ProviderSet.build(routing, receipts=_ignore, loopback=LoopbackConfig())
    transport = built.transports["p"] = Closing()
    return built, transport


async def test_a_replaced_set_closes_after_the_grace_and_the_new_one_is_in_use() -> None:
    live = LiveProviders(grace=0.2)
    first, first_transport = provider_set()
    second, second_transport = provider_set()
    live.use(first)
    assert live() is first
    live.use(second)
    assert live() is second
    await asyncio.sleep(0.05)
    assert not first_transport.closed  # sends begun on it may still be in flight
    await asyncio.sleep(0.3)
    assert first_transport.closed and not second_transport.closed
    await live.close()
    assert second_transport.closed


async def test_stopping_within_the_grace_closes_the_replaced_set_too() -> None:
    live = LiveProviders(grace=60)
    first, first_transport = provider_set()
    second, second_transport = provider_set()
    live.use(first)
    live.use(second)
    await live.close()
    assert first_transport.closed and second_transport.closed
