"""``Messaging`` (server/domain/messaging.py) on in-memory fakes of its ports: every
branch of ``send`` and ``get_status`` in milliseconds. The wiring through gRPC and
PostgreSQL is tested end to end in tests/e2e/test_send_message.py."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest

from server.domain.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
)
from server.domain.messaging import Caller, Messaging, SendCommand
from server.domain.models import MessageStatus, OutboundMessage, Priority, UseType
from server.domain.quiet_hours import QuietHours
from tests.fakes import FakeClock, FakeRoutes, InMemoryMessages, InMemoryTemplates

MOBILE = "+8613800138000"  # Shanghai time: UTC+8, one zone
CALLER = Caller(account_id=1, verified=True)


@dataclass
class World:
    clock: FakeClock
    messages: InMemoryMessages
    templates: InMemoryTemplates
    routes: FakeRoutes
    messaging: Messaging
    accepted: list[None] = field(default_factory=list)


def world(
    *,
    intervals: Mapping[UseType, float] | None = None,
    routes: FakeRoutes | None = None,
) -> World:
    clock = FakeClock(datetime(2026, 3, 1, 12, 0, tzinfo=UTC))
    messages = InMemoryMessages(clock)
    templates = InMemoryTemplates(clock)
    routes = routes or FakeRoutes()
    accepted: list[None] = []
    messaging = Messaging(
        messages,
        templates,
        clock=clock,
        on_accepted=lambda: accepted.append(None),
        mobile_intervals=intervals,
        routes=routes,
    )
    return World(clock, messages, templates, routes, messaging, accepted)


def fields_of(exc: InvalidArgument) -> set[str]:
    return {v.field for v in exc.violations}


async def test_a_text_is_stored_pending_and_the_dispatcher_is_woken() -> None:
    w = world()
    result = await w.messaging.send(
        CALLER, SendCommand(mobile=MOBILE, use_type=UseType.NOTIFICATION, text="hi")
    )
    assert (result.to_number, result.status, result.segments) == (
        MOBILE,
        MessageStatus.PENDING,
        1,
    )
    stored = w.messages.rows[result.id]
    assert stored.status == MessageStatus.PENDING and stored.events == [MessageStatus.PENDING]
    assert stored.message.body == "hi" and stored.message.to_number == MOBILE
    assert stored.message.priority == Priority.SINGLE
    assert stored.message.not_before == w.clock.now
    assert len(w.accepted) == 1


async def test_a_long_text_counts_its_segments() -> None:
    w = world()
    result = await w.messaging.send(
        CALLER, SendCommand(mobile=MOBILE, use_type=UseType.NOTIFICATION, text="x" * 161)
    )
    assert result.segments == 2 == w.messages.rows[result.id].message.segments


async def test_a_verification_message_goes_before_the_others() -> None:
    w = world()
    result = await w.messaging.send(
        CALLER, SendCommand(mobile=MOBILE, use_type=UseType.VERIFICATION, text="code 1234")
    )
    assert w.messages.rows[result.id].message.priority == Priority.VERIFICATION


async def test_every_bad_field_is_named_and_nothing_is_stored() -> None:
    w = world()
    with pytest.raises(InvalidArgument) as caught:
        await w.messaging.send(
            CALLER,
            SendCommand(
                mobile="not a number",
                use_type=UseType.UNSPECIFIED,
                text="x" * 461,
                data={"name": "Ann"},
                request_id="r" * 129,
                send_at=w.clock.now + timedelta(days=31),
            ),
        )
    assert fields_of(caught.value) == {
        "mobile",
        "use_type",
        "text",
        "data",
        "request_id",
        "send_at",
    }
    assert not w.messages.rows and not w.accepted


@pytest.mark.parametrize(
    ("text", "template_id"),
    [(None, None), ("   ", None)],
    ids=["neither text nor template", "blank text"],
)
async def test_a_message_needs_text_or_a_template(
    text: str | None, template_id: int | None
) -> None:
    w = world()
    with pytest.raises(InvalidArgument) as caught:
        await w.messaging.send(
            CALLER,
            SendCommand(mobile=MOBILE, use_type=UseType.NOTIFICATION, text=text),
        )
    assert fields_of(caught.value) == {"text"}
    assert not w.messages.rows


async def test_an_unverified_account_sends_only_verification_messages() -> None:
    w = world()
    unverified = Caller(account_id=1, verified=False)
    with pytest.raises(PermissionDenied) as caught:
        await w.messaging.send(
            unverified, SendCommand(mobile=MOBILE, use_type=UseType.MARKETING, text="sale")
        )
    assert caught.value.reason == "ACCOUNT_NOT_VERIFIED"
    assert not w.messages.rows
    await w.messaging.send(
        unverified, SendCommand(mobile=MOBILE, use_type=UseType.VERIFICATION, text="code 1")
    )
    assert len(w.messages.rows) == 1


async def test_send_at_schedules_and_a_past_send_at_means_now() -> None:
    w = world()
    later = w.clock.now + timedelta(days=2)
    scheduled = await w.messaging.send(
        CALLER, SendCommand(mobile=MOBILE, use_type=UseType.NOTIFICATION, text="a", send_at=later)
    )
    past = await w.messaging.send(
        CALLER,
        SendCommand(
            mobile=MOBILE,
            use_type=UseType.NOTIFICATION,
            text="b",
            send_at=w.clock.now - timedelta(hours=1),
        ),
    )
    assert w.messages.rows[scheduled.id].message.not_before == later
    assert w.messages.rows[past.id].message.not_before == w.clock.now


async def test_marketing_waits_for_the_recipients_quiet_hours_to_end() -> None:
    w = world()
    # 12:00 UTC is 20:00 in Shanghai, inside 19:00-08:00; released at 08:00 there.
    quiet = Caller(account_id=1, verified=True, quiet_hours=QuietHours.parse(["19:00-08:00"]))
    sale = await w.messaging.send(
        quiet, SendCommand(mobile=MOBILE, use_type=UseType.MARKETING, text="sale")
    )
    notice = await w.messaging.send(
        quiet, SendCommand(mobile=MOBILE, use_type=UseType.NOTIFICATION, text="your parcel")
    )
    assert w.messages.rows[sale.id].message.not_before == datetime(2026, 3, 2, 0, 0, tzinfo=UTC)
    assert w.messages.rows[notice.id].message.not_before == w.clock.now


async def test_a_template_is_rendered_and_its_values_kept_in_variable_order() -> None:
    w = world()
    t = await w.templates.create(
        1, "parcel", "Hi #name#, parcel #no# is here", UseType.NOTIFICATION, ["name", "no"]
    )
    result = await w.messaging.send(
        CALLER,
        SendCommand(
            mobile=MOBILE,
            use_type=UseType.NOTIFICATION,
            template_id=t.id,
            data={"no": "42", "name": "Ann"},
        ),
    )
    stored = w.messages.rows[result.id].message
    assert stored.body == "Hi Ann, parcel 42 is here"
    assert stored.template_id == t.id and stored.template_code == "parcel"
    assert list((stored.template_data or {}).items()) == [("name", "Ann"), ("no", "42")]


async def test_a_template_value_missing_is_a_bad_data_field() -> None:
    w = world()
    t = await w.templates.create(1, "hi", "Hi #name#", UseType.NOTIFICATION, ["name"])
    with pytest.raises(InvalidArgument) as caught:
        await w.messaging.send(
            CALLER, SendCommand(mobile=MOBILE, use_type=UseType.NOTIFICATION, template_id=t.id)
        )
    assert all(v.field.startswith("data") for v in caught.value.violations)
    assert not w.messages.rows


async def test_another_accounts_or_a_deleted_template_is_not_found() -> None:
    w = world()
    theirs = await w.templates.create(2, "hi", "Hi", UseType.NOTIFICATION, [])
    mine = await w.templates.create(1, "bye", "Bye", UseType.NOTIFICATION, [])
    await w.templates.delete(1, mine.id)
    for template_id in (theirs.id, mine.id):
        with pytest.raises(NotFound) as caught:
            await w.messaging.send(
                CALLER,
                SendCommand(mobile=MOBILE, use_type=UseType.NOTIFICATION, template_id=template_id),
            )
        assert caught.value.reason == "TEMPLATE_NOT_FOUND"
    assert not w.messages.rows


async def test_a_message_no_route_can_carry_is_refused_and_not_stored() -> None:
    def carries(m: OutboundMessage) -> bool:
        return not m.to_number.startswith("+86")

    w = world(routes=FakeRoutes(carries))
    with pytest.raises(FailedPrecondition) as caught:
        await w.messaging.send(
            CALLER, SendCommand(mobile=MOBILE, use_type=UseType.NOTIFICATION, text="hi")
        )
    assert caught.value.reason == "NO_ROUTE"
    assert not w.messages.rows and not w.accepted
    # The routes were asked about the message as it would be sent.
    [asked] = w.routes.asked
    assert (asked.to_number, asked.body, asked.use_type) == (MOBILE, "hi", UseType.NOTIFICATION)


async def test_a_repeated_request_id_answers_the_first_message_and_stores_one() -> None:
    w = world()
    cmd = SendCommand(mobile=MOBILE, use_type=UseType.NOTIFICATION, text="hi", request_id="r-1")
    first = await w.messaging.send(CALLER, cmd)
    again = await w.messaging.send(CALLER, cmd)
    assert again == first and len(w.messages.rows) == 1
    # Another account's key of the same name is its own.
    other = await w.messaging.send(Caller(account_id=2, verified=True), cmd)
    assert other.id != first.id and len(w.messages.rows) == 2


async def test_a_request_id_reused_with_other_content_is_refused() -> None:
    w = world()
    await w.messaging.send(
        CALLER,
        SendCommand(mobile=MOBILE, use_type=UseType.NOTIFICATION, text="hi", request_id="r-1"),
    )
    with pytest.raises(FailedPrecondition) as caught:
        await w.messaging.send(
            CALLER,
            SendCommand(mobile=MOBILE, use_type=UseType.NOTIFICATION, text="ho", request_id="r-1"),
        )
    assert caught.value.reason == "REQUEST_ID_REUSED"
    assert len(w.messages.rows) == 1


async def test_a_request_id_is_free_again_after_its_hour() -> None:
    w = world()
    cmd = SendCommand(mobile=MOBILE, use_type=UseType.NOTIFICATION, text="hi", request_id="r-1")
    first = await w.messaging.send(CALLER, cmd)
    w.clock.advance(3601)
    second = await w.messaging.send(CALLER, cmd)
    assert second.id != first.id and len(w.messages.rows) == 2


async def test_the_mobile_interval_refuses_a_second_message_of_the_use_type_too_soon() -> None:
    w = world(intervals={UseType.MARKETING: 60.0})
    sale = SendCommand(mobile=MOBILE, use_type=UseType.MARKETING, text="sale")
    await w.messaging.send(CALLER, sale)
    w.clock.advance(20)
    with pytest.raises(ResourceExhausted) as caught:
        await w.messaging.send(CALLER, sale)
    assert caught.value.reason == "MOBILE_INTERVAL"
    assert caught.value.retry_after == pytest.approx(40.0)
    # Other use types have no interval; after it, the mobile may have another.
    await w.messaging.send(
        CALLER, SendCommand(mobile=MOBILE, use_type=UseType.NOTIFICATION, text="hi")
    )
    w.clock.advance(40)
    await w.messaging.send(CALLER, sale)
    assert len(w.messages.rows) == 3 and len(w.accepted) == 3


async def test_a_refused_interval_does_not_take_the_request_id() -> None:
    w = world(intervals={UseType.NOTIFICATION: 60.0})
    await w.messaging.send(
        CALLER, SendCommand(mobile=MOBILE, use_type=UseType.NOTIFICATION, text="a")
    )
    retry = SendCommand(mobile=MOBILE, use_type=UseType.NOTIFICATION, text="b", request_id="r-2")
    with pytest.raises(ResourceExhausted):
        await w.messaging.send(CALLER, retry)
    w.clock.advance(60)
    result = await w.messaging.send(CALLER, retry)
    assert w.messages.rows[result.id].message.body == "b"


async def test_status_lists_found_and_missing_ids_once_each() -> None:
    w = world()
    mine = await w.messaging.send(
        CALLER, SendCommand(mobile=MOBILE, use_type=UseType.NOTIFICATION, text="hi")
    )
    theirs = await w.messaging.send(
        Caller(account_id=2, verified=True),
        SendCommand(mobile=MOBILE, use_type=UseType.NOTIFICATION, text="hi"),
    )
    found, missing = await w.messaging.get_status(CALLER, [mine.id, "0" * 32, mine.id, theirs.id])
    assert [s.id for s in found] == [mine.id]
    assert found[0].status == MessageStatus.PENDING
    assert missing == ["0" * 32, theirs.id]


@pytest.mark.parametrize("count", [0, 101])
async def test_status_takes_one_to_a_hundred_ids(count: int) -> None:
    w = world()
    with pytest.raises(InvalidArgument) as caught:
        await w.messaging.get_status(CALLER, [f"{i:032x}" for i in range(count)])
    assert fields_of(caught.value) == {"ids"}
