"""Planning provider requests: which batch messages share one bulk request."""

from __future__ import annotations

from collections.abc import Hashable, Sequence

from server.dispatch.bulk import (
    Request,
    Routed,
    bulk_claim_cap,
    next_claim_size,
    plan_requests,
)
from server.domain.models import Channel, OutboundMessage, UseType
from server.domain.ports import Capabilities, SendOutcome


class ByBody:
    """A bulk API whose requests share one content (like SendCloud's ``send``)."""

    capabilities = Capabilities(free_text=True, templates=False)

    def __init__(self, max_bulk: int) -> None:
        self.max_bulk = max_bulk

    def bulk_key(self, message: OutboundMessage) -> Hashable | None:
        return None if message.channel != Channel.SMS else message.body

    async def send_bulk(self, messages: Sequence[OutboundMessage]) -> list[SendOutcome]:
        raise AssertionError("planning sends nothing")


class SingleOnly:
    """A provider without a bulk API."""

    capabilities = Capabilities(free_text=True, templates=False)


def msg(
    n: int,
    *,
    body: str = "Sale today.",
    account: int = 1,
    to: str | None = None,
    channel: Channel = Channel.SMS,
) -> OutboundMessage:
    return OutboundMessage(
        id=f"m{n}",
        account_id=account,
        to_number=to or f"+86138{n:08d}",
        body=body,
        use_type=UseType.MARKETING,
        attempts=1,
        channel=channel,
    )


def routed(message: OutboundMessage, provider: str = "bulk", shareable: bool = True) -> Routed:
    return Routed(message, provider, (provider,), shareable)


def ids(requests: list[Request]) -> list[list[str]]:
    return [[r.message.id for r in request.items] for request in requests]


TRANSPORTS = {"bulk": ByBody(max_bulk=3), "single": SingleOnly()}


def test_same_content_shares_requests_of_at_most_max_bulk() -> None:
    requests = plan_requests([routed(msg(i)) for i in range(7)], TRANSPORTS)
    assert ids(requests) == [["m0", "m1", "m2"], ["m3", "m4", "m5"], ["m6"]]
    assert all(r.bulk and r.provider == "bulk" for r in requests)


def test_other_content_goes_in_other_requests_in_order_of_first_message() -> None:
    items = [routed(msg(i, body="A" if i % 2 else "B")) for i in range(5)]
    assert ids(plan_requests(items, TRANSPORTS)) == [["m0", "m2", "m4"], ["m1", "m3"]]


def test_accounts_never_share_a_request() -> None:
    items = [routed(msg(i, account=1 + i % 2)) for i in range(4)]
    assert ids(plan_requests(items, TRANSPORTS)) == [["m0", "m2"], ["m1", "m3"]]


def test_a_mobile_appears_at_most_once_per_request() -> None:
    same = "+8613800000001"
    items = [routed(msg(0, to=same)), routed(msg(1, to=same)), routed(msg(2)), routed(msg(3))]
    assert ids(plan_requests(items, TRANSPORTS)) == [["m0", "m2", "m3"], ["m1"]]


def test_codes_single_sends_calls_and_providers_without_bulk_go_alone() -> None:
    items = [
        routed(msg(0), shareable=False),  # a code or a single send
        routed(msg(1, channel=Channel.VOICE)),  # the transport's key is None
        routed(msg(2), provider="single"),  # no bulk API
        routed(msg(3)),
        routed(msg(4)),
    ]
    requests = plan_requests(items, TRANSPORTS)
    assert ids(requests) == [["m0"], ["m1"], ["m2"], ["m3", "m4"]]
    assert [r.bulk for r in requests] == [False, False, False, True]
    assert [r.provider for r in requests] == ["bulk", "bulk", "single", "bulk"]


def test_a_bulk_api_of_one_number_is_no_bulk_api() -> None:
    requests = plan_requests([routed(msg(i)) for i in range(3)], {"bulk": ByBody(max_bulk=1)})
    assert ids(requests) == [["m0"], ["m1"], ["m2"]]
    assert not any(r.bulk for r in requests)


def test_every_message_is_planned_exactly_once_at_scale() -> None:
    items = [
        routed(msg(i, body=f"content {i % 7}", account=i % 3, to=f"+8613{i % 50:09d}"))
        for i in range(2_000)
    ]
    requests = plan_requests(items, {"bulk": ByBody(max_bulk=40)})
    planned = [r.message.id for request in requests for r in request.items]
    assert sorted(planned) == sorted(r.message.id for r in items)
    for request in requests:
        members = [r.message for r in request.items]
        assert len(members) <= 40
        assert len({m.to_number for m in members}) == len(members)
        assert len({(m.account_id, m.body) for m in members}) == 1
    # 21 (account, content) groups; numbers repeat every 50 messages, so each group
    # needs more than one request, but never one per message.
    assert 21 < len(requests) < 200


def test_a_claim_that_shared_requests_is_followed_by_a_larger_one_up_to_a_full_request() -> None:
    # 100 messages in one request: the next claim may take 100 times as many,
    # as far as the largest request a provider takes.
    assert next_claim_size(100, 2000, messages=100, requests=1) == 2000
    assert next_claim_size(100, 2000, messages=100, requests=10) == 1000
    # Messages that went alone (or nothing sent) keep the configured size.
    assert next_claim_size(100, 2000, messages=100, requests=100) == 100
    assert next_claim_size(100, 2000, messages=0, requests=0) == 100
    # Never below the configured size, even when the providers take less per request.
    assert next_claim_size(100, 3, messages=100, requests=34) == 100


def test_the_claim_cap_is_the_largest_request_of_a_bulk_provider() -> None:
    transports = {"a": ByBody(max_bulk=3), "b": ByBody(max_bulk=2000), "c": SingleOnly()}
    assert bulk_claim_cap(transports, 5000) == 2000
    assert bulk_claim_cap(transports, 500) == 500
    assert bulk_claim_cap({"c": SingleOnly()}, 5000) == 1
