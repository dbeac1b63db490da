"""Routing: pure, so tested without any I/O (the breaker: test_breaker.py)."""

from __future__ import annotations

from collections import Counter

from server.dispatch.route_choice import Router, failover_order
from server.domain.models import OutboundMessage, UseType
from server.routes_file import RouteSpec


def msg(to: str, use_type: UseType = UseType.NOTIFICATION, mid: str = "m1") -> OutboundMessage:
    return OutboundMessage(mid, 1, to, "hi", use_type, 1)


ROUTES = [
    RouteSpec(providers=("default",)),
    RouteSpec(providers=("china", "backup"), prefixes=("+86",)),
    RouteSpec(providers=("china_mobile",), prefixes=("+86138",)),
    RouteSpec(providers=("otp",), prefixes=("+86",), use_types=frozenset({UseType.VERIFICATION})),
]


def test_longest_prefix_for_the_use_type_wins() -> None:
    router = Router(ROUTES)
    assert router.candidates(msg("+14155550123")) == ["default"]
    assert router.candidates(msg("+8613900000000")) == ["china", "backup"]
    assert router.candidates(msg("+8613800138000")) == ["china_mobile"]
    assert router.candidates(msg("+8613900000000", UseType.VERIFICATION)) == ["otp"]
    assert Router([ROUTES[1]]).candidates(msg("+14155550123")) == []


def test_weights_split_first_attempts_and_are_stable_per_message() -> None:
    router = Router([RouteSpec(providers=("a", "b"), weights=(3, 1))])
    firsts = Counter(router.candidates(msg("+1415", mid=f"id{i}"))[0] for i in range(4000))
    assert 2800 < firsts["a"] < 3200
    assert router.candidates(msg("+1", mid="x")) == router.candidates(msg("+1", mid="x"))
    assert sorted(router.candidates(msg("+1", mid="x"))) == ["a", "b"]


def test_failover_order_gives_each_provider_its_attempts_in_turn() -> None:
    names = ["a", "b", "c"]
    firsts = [failover_order(names, attempt, 2)[0] for attempt in range(1, 8)]
    assert firsts == ["a", "a", "b", "b", "c", "c", "a"]
    assert failover_order([], 3, 2) == []
