"""``Batches`` (server/domain/batch_tasks.py) on in-memory fakes of its ports: every
branch of ``create``, ``get``, ``messages`` and ``cancel`` in milliseconds. The
wiring through gRPC and PostgreSQL is tested end to end in tests/e2e/test_batches.py."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest

from server.domain.batch_slots import BatchSlots, SlotLimits
from server.domain.batch_tasks import (
    NO_ROUTE_REASON,
    Batches,
    BatchRecord,
    CreateBatchCommand,
)
from server.domain.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
)
from server.domain.messaging import Caller
from server.domain.models import MessageStatus, OutboundMessage, Priority, UseType
from server.domain.number_judge import DUPLICATE_REASON
from tests.fakes import (
    BATCH_CANCELLED,
    BATCH_FAILED,
    BATCH_PENDING,
    FakeClock,
    FakeRoutes,
    InMemoryBatches,
    InMemoryMessages,
    InMemoryTemplates,
)

CALLER = Caller(account_id=1, verified=True)
OTHER = Caller(account_id=2, verified=True)
NOTE = UseType.NOTIFICATION
BAD_FORMAT = "The mobile number must be in E.164 format"


def numbers(count: int, start: int = 0) -> list[str]:
    """Distinct valid Chinese mobiles."""
    return [f"+86138{start + i:08d}" for i in range(count)]


@dataclass
class World:
    clock: FakeClock
    messages: InMemoryMessages
    templates: InMemoryTemplates
    store: InMemoryBatches
    routes: FakeRoutes
    slots: BatchSlots
    batches: Batches
    accepted: list[None] = field(default_factory=list)

    def stored_of(self, batch_id: str) -> list[str]:
        """The numbers of the batch's stored messages."""
        return sorted(
            r.message.to_number
            for r in self.messages.rows.values()
            if r.message.batch_id == batch_id
        )


def world(*, routes: FakeRoutes | None = None, slots: SlotLimits | None = None) -> World:
    clock = FakeClock(datetime(2026, 3, 1, 12, 0, tzinfo=UTC))
    messages = InMemoryMessages(clock)
    templates = InMemoryTemplates(clock)
    store = InMemoryBatches(messages)
    routes = routes or FakeRoutes()
    batch_slots = BatchSlots(slots or SlotLimits(1, 2))
    accepted: list[None] = []
    batches = Batches(
        store,
        templates,
        clock=clock,
        on_accepted=lambda: accepted.append(None),
        routes=routes,
        slots=batch_slots,
    )
    return World(clock, messages, templates, store, routes, batch_slots, batches, accepted)


def command(
    nums: Sequence[str],
    content: str | None = "Hello",
    *,
    template_id: int | None = None,
    data: Mapping[str, Mapping[str, str]] | None = None,
    request_id: str = "",
    send_at: datetime | None = None,
    use_type: UseType = NOTE,
) -> CreateBatchCommand:
    return CreateBatchCommand(
        use_type=use_type,
        numbers=nums,
        content=content,
        template_id=template_id,
        template_data=data or {},
        request_id=request_id,
        send_at=send_at,
    )


def fields_of(exc: InvalidArgument) -> set[str]:
    return {v.field for v in exc.violations}


async def test_a_batch_stores_one_pending_message_a_number_and_wakes_the_dispatcher() -> None:
    w = world()
    nums = numbers(3)
    batch = await w.batches.create(CALLER, command(nums))
    assert (batch.status, batch.total, batch.rejected) == (BATCH_PENDING, 3, [])
    assert (batch.sent, batch.delivered, batch.failed, batch.cancelled) == (0, 0, 0, 0)
    assert w.stored_of(batch.id) == nums
    for row in w.messages.rows.values():
        m = row.message
        assert (m.body, m.priority, m.use_type, m.account_id) == ("Hello", Priority.BATCH, NOTE, 1)
        assert m.not_before == w.clock.now and row.events == [MessageStatus.PENDING]
    # A text without variables is the messages' body; no campaign text is kept.
    assert w.store.contents[batch.id] is None
    assert len(w.accepted) == 1
    assert await w.batches.get(CALLER, batch.id) == batch


async def test_every_bad_field_is_named_and_nothing_is_stored() -> None:
    w = world()
    with pytest.raises(InvalidArgument) as caught:
        await w.batches.create(
            CALLER,
            command(
                [],
                None,
                use_type=UseType.UNSPECIFIED,
                request_id="r" * 129,
                data={"+" + "1" * 64: {"name": "Ann"}},
                send_at=w.clock.now + timedelta(days=30, seconds=1),
            ),
        )
    assert fields_of(caught.value) == {
        "use_type",
        "request_id",
        "numbers",
        "template_data",
        "send_at",
        "content",
    }
    assert not w.store.rows and not w.messages.rows and not w.accepted


async def test_an_unreadable_number_is_named_by_its_index_and_refuses_the_call() -> None:
    w = world()
    with pytest.raises(InvalidArgument) as caught:
        await w.batches.create(CALLER, command([*numbers(2), "+86\x00138", "9" * 65]))
    assert fields_of(caught.value) == {"numbers[2]", "numbers[3]"}
    assert not w.store.rows and not w.messages.rows


@pytest.mark.parametrize(
    "data",
    [
        {"+8613800000000\x00": {"name": "Ann"}},
        {"+8613800000000": {"na\x00me": "Ann"}},
        {"+8613800000000": {"name": "A\x00nn"}},
    ],
    ids=["in a key", "in a variable name", "in a value"],
)
async def test_a_nul_in_template_data_refuses_the_call(data: dict[str, dict[str, str]]) -> None:
    w = world()
    with pytest.raises(InvalidArgument) as caught:
        await w.batches.create(CALLER, command(numbers(1), "Hi #name#", data=data))
    assert fields_of(caught.value) == {"template_data"}
    assert "NUL" in caught.value.violations[0].description
    assert not w.store.rows and not w.messages.rows


async def test_bad_content_is_named() -> None:
    w = world()
    with pytest.raises(InvalidArgument) as caught:
        await w.batches.create(CALLER, command(numbers(1), "   "))
    assert fields_of(caught.value) == {"content"}
    assert not w.store.rows


async def test_bad_numbers_are_rejected_with_reasons_and_the_rest_go_on() -> None:
    w = world()
    good = numbers(2)
    batch = await w.batches.create(
        CALLER, command([good[0], "abc", good[0], "+861380013800", good[1]])
    )
    assert batch.total == 2 and w.stored_of(batch.id) == good
    reasons = dict(batch.rejected)
    assert [n for n, _ in batch.rejected] == ["abc", good[0], "+861380013800"]
    assert reasons["abc"].startswith(BAD_FORMAT)
    assert reasons[good[0]] == DUPLICATE_REASON
    assert "not a valid phone number" in reasons["+861380013800"]


async def test_when_every_number_is_rejected_the_batch_is_stored_failed_and_empty() -> None:
    w = world()
    batch = await w.batches.create(CALLER, command(["abc", "def"]))
    assert (batch.status, batch.total, len(batch.rejected)) == (BATCH_FAILED, 0, 2)
    assert not w.messages.rows
    assert (await w.batches.messages(CALLER, batch.id, 10, "")).messages == []


async def test_content_with_variables_renders_each_number_and_keeps_the_campaign_text() -> None:
    w = world()
    ann, bob, cat = numbers(3)
    batch = await w.batches.create(
        CALLER,
        command(
            [ann, bob, cat],
            "Hi #name#, see you at #time#",
            data={
                ann: {"name": "Ann", "time": "9"},
                bob: {"name": "Bob"},  # time is missing
                cat: {"name": "Cat", "time": "10", "extra": "x"},
            },
        ),
    )
    assert w.stored_of(batch.id) == [ann]
    [row] = w.messages.rows.values()
    assert row.message.body == "Hi Ann, see you at 9"
    assert row.message.template_data == {"name": "Ann", "time": "9"}
    assert row.message.template_id is None
    assert w.store.contents[batch.id] == "Hi #name#, see you at #time#"
    reasons = dict(batch.rejected)
    assert set(reasons) == {bob, cat}
    assert "time" in reasons[bob] and "extra" in reasons[cat]


async def test_values_for_a_text_without_variables_reject_that_number() -> None:
    w = world()
    ann, bob = numbers(2)
    batch = await w.batches.create(CALLER, command([ann, bob], "Hi", data={bob: {"x": "1"}}))
    assert w.stored_of(batch.id) == [ann] and [n for n, _ in batch.rejected] == [bob]


async def test_a_template_is_rendered_with_its_code_and_values() -> None:
    w = world()
    template = await w.templates.create(1, "greet", "Hello #name#", NOTE, ("name",))
    ann, nobody = numbers(2)
    batch = await w.batches.create(
        CALLER,
        command([ann, nobody], None, template_id=template.id, data={ann: {"name": "Ann"}}),
    )
    # A number without the template's values is rejected, naming the variable.
    [(rejected, reason)] = batch.rejected
    assert rejected == nobody and "name" in reason
    [row] = w.messages.rows.values()
    m = row.message
    assert (m.body, m.template_id, m.template_code, m.template_data) == (
        "Hello Ann",
        template.id,
        "greet",
        {"name": "Ann"},
    )
    # The template holds the text: no campaign text of the batch's own.
    assert w.store.contents[batch.id] is None


async def test_another_accounts_or_a_deleted_template_is_not_found() -> None:
    w = world()
    theirs = await w.templates.create(2, "theirs", "Hi", NOTE, ())
    gone = await w.templates.create(1, "gone", "Hi", NOTE, ())
    await w.templates.delete(1, gone.id)
    for template_id in (theirs.id, gone.id):
        with pytest.raises(NotFound) as caught:
            await w.batches.create(CALLER, command(numbers(1), None, template_id=template_id))
        assert caught.value.reason == "TEMPLATE_NOT_FOUND"
    assert not w.store.rows and not w.messages.rows


async def test_an_unverified_account_sends_only_verification_batches() -> None:
    w = world()
    unverified = Caller(account_id=3, verified=False)
    with pytest.raises(PermissionDenied):
        await w.batches.create(unverified, command(numbers(1), use_type=UseType.MARKETING))
    assert not w.store.rows
    batch = await w.batches.create(unverified, command(numbers(1), use_type=UseType.VERIFICATION))
    assert batch.total == 1


async def test_send_at_schedules_every_message() -> None:
    w = world()
    later = w.clock.now + timedelta(days=30)
    batch = await w.batches.create(CALLER, command(numbers(2), send_at=later))
    assert batch.total == 2
    assert {r.message.not_before for r in w.messages.rows.values()} == {later}
    past = w.clock.now - timedelta(days=1)
    await w.batches.create(CALLER, command(numbers(1, start=5), send_at=past))
    assert max(r.message.not_before for r in w.messages.rows.values()) == later
    assert min(r.message.not_before for r in w.messages.rows.values()) == w.clock.now


def not_to_the_us(message: OutboundMessage) -> bool:
    return not message.to_number.startswith("+1")


US = ["+12025550123", "+12025550124"]


async def test_numbers_no_route_carries_are_rejected_no_route_and_the_rest_stored() -> None:
    w = world(routes=FakeRoutes(not_to_the_us))
    cn = numbers(2)
    batch = await w.batches.create(CALLER, command([cn[0], US[0], cn[1]]))
    assert w.stored_of(batch.id) == cn and batch.total == 2
    assert batch.rejected == [(US[0], NO_ROUTE_REASON)]
    # The routes were asked about the messages as the dispatcher will send them.
    assert sorted(m.to_number for m in w.routes.asked) == sorted([*cn, US[0]])


async def test_a_batch_no_route_can_carry_at_all_is_refused_and_stores_nothing() -> None:
    carry = False
    w = world(routes=FakeRoutes(lambda m: carry))
    with pytest.raises(FailedPrecondition) as caught:
        await w.batches.create(CALLER, command(US, request_id="r1"))
    assert caught.value.reason == "NO_ROUTE"
    assert not w.store.rows and not w.messages.rows and not w.accepted
    # Its request_id was not taken: once a route is configured, the retry is stored.
    carry = True
    batch = await w.batches.create(CALLER, command(US, request_id="r1"))
    assert batch.total == 2 and len(w.accepted) == 1


async def test_a_repeated_request_id_answers_the_first_batch_and_stores_it_once() -> None:
    w = world()
    first = await w.batches.create(CALLER, command(numbers(2), request_id="r1"))
    again = await w.batches.create(CALLER, command(numbers(2), request_id="r1"))
    assert again == first and len(w.store.rows) == 1 and len(w.messages.rows) == 2
    # The key is the account's own: another account's same request_id is another batch.
    theirs = await w.batches.create(OTHER, command(numbers(2), request_id="r1"))
    assert theirs.id != first.id


async def test_a_request_id_reused_with_other_content_is_refused() -> None:
    w = world()
    await w.batches.create(CALLER, command(numbers(2), request_id="r1"))
    for other in (
        command(numbers(3), request_id="r1"),
        command(numbers(2), "Bye", request_id="r1"),
        command(numbers(2), request_id="r1", send_at=w.clock.now + timedelta(hours=1)),
    ):
        with pytest.raises(FailedPrecondition) as caught:
            await w.batches.create(CALLER, other)
        assert caught.value.reason == "REQUEST_ID_REUSED"
    assert len(w.store.rows) == 1 and len(w.messages.rows) == 2


async def test_a_request_id_is_free_again_after_its_hour() -> None:
    w = world()
    first = await w.batches.create(CALLER, command(numbers(1), request_id="r1"))
    w.clock.advance(3601)
    second = await w.batches.create(CALLER, command(numbers(1), request_id="r1"))
    assert second.id != first.id and len(w.store.rows) == 2


LARGE = 1_001  # more than LARGE_BATCH_NUMBERS: takes a slot


async def test_a_second_large_batch_of_an_account_at_once_is_refused_with_a_wait() -> None:
    w = world(slots=SlotLimits(per_account=1, per_server=2))
    results = await asyncio.gather(
        w.batches.create(CALLER, command(numbers(LARGE))),
        w.batches.create(CALLER, command(numbers(LARGE, start=LARGE))),
        return_exceptions=True,
    )
    stored, refused = results
    assert isinstance(stored, BatchRecord) and stored.total == LARGE
    assert isinstance(refused, ResourceExhausted)
    assert refused.reason == "LARGE_BATCHES_PER_ACCOUNT" and refused.retry_after > 0
    assert len(w.store.rows) == 1 and len(w.messages.rows) == LARGE
    # The slot was given back: the account's next large batch is taken.
    assert w.slots.held == 0
    again = await w.batches.create(CALLER, command(numbers(LARGE, start=LARGE)))
    assert again.total == LARGE


async def test_the_server_stores_at_most_its_limit_of_large_batches_at_once() -> None:
    w = world(slots=SlotLimits(per_account=1, per_server=2))
    callers = [Caller(account_id=a, verified=True) for a in (1, 2, 3)]
    results = await asyncio.gather(
        *(w.batches.create(c, command(numbers(LARGE))) for c in callers),
        return_exceptions=True,
    )
    assert [type(r) for r in results] == [BatchRecord, BatchRecord, ResourceExhausted]
    refused = results[2]
    assert isinstance(refused, ResourceExhausted)
    assert refused.reason == "LARGE_BATCHES_PER_SERVER"
    # Small batches take no slot.
    small = await asyncio.gather(
        *(w.batches.create(c, command(numbers(2))) for c in [*callers, *callers])
    )
    assert all(b.total == 2 for b in small)


async def test_a_refused_large_batch_gives_its_slot_back() -> None:
    w = world(routes=FakeRoutes(lambda m: False), slots=SlotLimits(per_account=1, per_server=1))
    with pytest.raises(FailedPrecondition):
        await w.batches.create(CALLER, command(numbers(LARGE)))
    assert w.slots.held == 0 and not w.store.rows and not w.messages.rows


async def test_a_repeat_of_a_large_batch_being_stored_waits_for_it_instead_of_a_slot() -> None:
    w = world(slots=SlotLimits(per_account=1, per_server=1))
    first, again = await asyncio.gather(
        w.batches.create(CALLER, command(numbers(LARGE), request_id="big")),
        w.batches.create(CALLER, command(numbers(LARGE), request_id="big")),
    )
    assert first == again and len(w.messages.rows) == LARGE


async def test_messages_are_paged_in_id_order_with_the_batch_total() -> None:
    w = world()
    batch = await w.batches.create(CALLER, command(numbers(5)))
    seen: list[str] = []
    token = ""
    sizes = []
    while True:
        page = await w.batches.messages(CALLER, batch.id, 2, token)
        assert page.total_size == 5
        sizes.append(len(page.messages))
        seen.extend(m.id for m in page.messages)
        assert all(m.status == MessageStatus.PENDING for m in page.messages)
        token = page.next_page_token
        if not token:
            break
    assert sizes == [2, 2, 1]
    assert seen == sorted(seen) and set(seen) == set(w.messages.rows)


async def test_a_page_token_of_another_batch_or_garbage_is_a_bad_page_token() -> None:
    w = world()
    one = await w.batches.create(CALLER, command(numbers(3)))
    two = await w.batches.create(CALLER, command(numbers(3, start=3)))
    token = (await w.batches.messages(CALLER, one.id, 1, "")).next_page_token
    assert token
    for bad in (token, "garbage"):
        with pytest.raises(InvalidArgument) as caught:
            await w.batches.messages(CALLER, two.id, 1, bad)
        assert fields_of(caught.value) == {"page_token"}
    with pytest.raises(InvalidArgument) as size:
        await w.batches.messages(CALLER, one.id, -1, "")
    assert fields_of(size.value) == {"page_size"}


async def test_cancel_cancels_the_messages_not_yet_sent() -> None:
    w = world()
    batch = await w.batches.create(CALLER, command(numbers(3)))
    sent = next(iter(w.messages.rows.values()))
    sent.status = MessageStatus.SENT  # a worker sent it already
    w.clock.advance(5)
    cancelled = await w.batches.cancel(CALLER, batch.id)
    assert (cancelled.status, cancelled.cancelled, cancelled.finished) == (BATCH_CANCELLED, 2, 2)
    assert cancelled.updated_at == w.clock.now
    statuses = sorted(r.status for r in w.messages.rows.values())
    assert statuses == [MessageStatus.SENT, MessageStatus.CANCELLED, MessageStatus.CANCELLED]
    # A second cancel changes nothing.
    assert await w.batches.cancel(CALLER, batch.id) == cancelled
    assert await w.batches.get(CALLER, batch.id) == cancelled


async def test_another_accounts_batch_is_not_found_and_left_alone() -> None:
    w = world()
    batch = await w.batches.create(CALLER, command(numbers(2)))
    with pytest.raises(NotFound) as got:
        await w.batches.get(OTHER, batch.id)
    assert got.value.reason == "BATCH_NOT_FOUND"
    with pytest.raises(NotFound):
        await w.batches.messages(OTHER, batch.id, 10, "")
    with pytest.raises(NotFound):
        await w.batches.cancel(OTHER, batch.id)
    assert {r.status for r in w.messages.rows.values()} == {MessageStatus.PENDING}
    assert (await w.batches.get(CALLER, batch.id)).status == BATCH_PENDING


@pytest.mark.parametrize("task_id", ["", "b" * 65, "b_\x00"], ids=["empty", "long", "NUL"])
async def test_a_task_id_that_cannot_exist_is_a_bad_task_id(task_id: str) -> None:
    w = world()
    for call in (w.batches.get(CALLER, task_id), w.batches.cancel(CALLER, task_id)):
        with pytest.raises(InvalidArgument) as caught:
            await call
        assert fields_of(caught.value) == {"task_id"}
