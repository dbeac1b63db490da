"""The Routes port as the provider set answers it (pure: loopback transports, no I/O):
what routing can tell at call time, for SendMessage, SendVerification and batches."""

from __future__ import annotations

from dataclasses import replace

from server.dispatch.provider_set import ProviderRoutes, ProviderSet
from server.domain.models import Channel, OutboundMessage, UseType
from server.domain.ports import Receipt
from server.providers.loopback import LoopbackConfig, LoopbackTransport
from server.routes_file import ProviderSpec, RouteSpec, RoutingConfig

CN, US = "+8613800138000", "+14155550123"


async def _ignore(receipt: Receipt) -> None:
    pass


class ShortVoiceCodes(LoopbackTransport):
    """Like SendCloud's voice API (seed 001): codes of 4 to 6 digits only."""

    def can_carry_voice(self, message: OutboundMessage) -> bool:
        return message.code is not None and 4 <= len(message.code) <= 6


class TextOnly(LoopbackTransport):
    capabilities = replace(LoopbackTransport.capabilities, voice=False)


def providers() -> ProviderSet:
    routing = RoutingConfig(
        providers=(ProviderSpec("voice", "loopback"), ProviderSpec("text", "loopback")),
        routes=(RouteSpec(providers=("text", "voice"), prefixes=("+86",)),),
    )
    built = ProviderSet.build(routing, receipts=_ignore, loopback=LoopbackConfig())
    built.transports["voice"] = ShortVoiceCodes(LoopbackConfig(), _ignore, name="voice")
    built.transports["text"] = TextOnly(LoopbackConfig(), _ignore, name="text")
    return built


def message(to: str = CN, **fields: object) -> OutboundMessage:
    base = OutboundMessage("m1", 1, to, "Your code is 1234", UseType.VERIFICATION, 0)
    return replace(base, **fields)  # type: ignore[arg-type]


def test_a_number_no_route_covers_cannot_be_carried() -> None:
    routes = ProviderRoutes(providers)
    assert routes.can_carry(message())
    assert not routes.can_carry(message(US))
    assert providers().carriers(message()) == ["text", "voice"]


def test_a_voice_code_needs_a_provider_that_calls_and_takes_its_length() -> None:
    routes = ProviderRoutes(providers)
    assert routes.places_calls(CN) and not routes.places_calls(US)
    assert routes.can_carry(message(channel=Channel.VOICE, code="1234"))
    assert routes.can_carry(message(channel=Channel.VOICE, code="123456"))
    # An 8-digit code: the only provider that places calls takes 4 to 6.
    assert not routes.can_carry(message(channel=Channel.VOICE, code="12345678"))
    assert providers().carriers(message(channel=Channel.VOICE, code="1234")) == ["voice"]


def test_a_batch_is_judged_number_by_number() -> None:
    routes = ProviderRoutes(providers)
    batch = [message(CN, id="a"), message(US, id="b"), message("+8613900139000", id="c")]
    assert routes.can_carry_batch(batch) == [True, False, True]
    assert routes.can_carry_batch([]) == []
