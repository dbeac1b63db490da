"""Choosing providers for a message (pure: no I/O).

The route with the longest matching E.164 prefix (among those for the message's use
type; on a tie, the one that names the use type) gives the failover order; with
weights, the first provider is drawn by weight, stably per message, so retries of
one message see the same order.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from server.domain.models import OutboundMessage, UseType
from server.routes_file import RouteSpec


class Router:
    def __init__(self, routes: Sequence[RouteSpec]) -> None:
        self._routes = list(routes)

    def route_for(self, message: OutboundMessage) -> RouteSpec | None:
        return self.route(message.to_number, message.use_type)

    def route(self, to_number: str, use_type: UseType) -> RouteSpec | None:
        """The route for messages of ``use_type`` to ``to_number`` (None: no route)."""
        best: RouteSpec | None = None
        best_score = (-1, -1)
        for route in self._routes:
            if route.use_types and use_type not in route.use_types:
                continue
            prefixes = route.prefixes or ("",)
            length = max((len(p) for p in prefixes if to_number.startswith(p)), default=-1)
            # Longest prefix first; on a tie, a route naming the use type is more specific.
            score = (length, 1 if route.use_types else 0)
            if length >= 0 and score > best_score:
                best, best_score = route, score
        return best

    def candidates(self, message: OutboundMessage) -> list[str]:
        """Provider names in the order to try them; empty when no route matches."""
        route = self.route_for(message)
        if route is None:
            return []
        order = list(route.providers)
        if route.weights:
            first = _weighted_pick(order, route.weights, message.id)
            order.remove(first)
            order.insert(0, first)
        return order


def _weighted_pick(names: Sequence[str], weights: Sequence[float], key: str) -> str:
    total = sum(weights)
    point = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2**64 * total
    running = 0.0
    for name, weight in zip(names, weights, strict=True):
        running += weight
        if point < running:
            return name
    return names[-1]


def failover_order(candidates: Sequence[str], attempts: int, per_provider: int) -> list[str]:
    """Rotates the candidates so that each gets ``per_provider`` attempts in turn.

    ``attempts`` counts this attempt too (1 for the first)."""
    if not candidates:
        return []
    start = ((max(attempts, 1) - 1) // max(per_provider, 1)) % len(candidates)
    return [*candidates[start:], *candidates[:start]]
