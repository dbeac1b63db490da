"""sms.v1.ConsoleService, the operator console's reads, on a real gateway: an account
sees its own batches and messages only (another's answer as if they did not exist),
an admin credential sees every account's, searches match an id, a batch id, a number or a
reference exactly, a message's history is every status change in order, and bad
input names its field."""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass

import grpc
import pytest
from sms.v1 import batch_pb2, common_pb2, console_pb2, console_pb2_grpc, message_pb2

from server.store.accounts import PgAccountStore
from tests.conftest import basic_auth
from tests.e2e.conftest import Client, Running, final_state, wait_for
from tests.e2e.errors import bad_fields, reason

CN = "+8613800138000"
OTHER_CN = "+8613800138099"
NOTE = common_pb2.USE_TYPE_NOTIFICATION


@dataclass
class World:
    console: console_pb2_grpc.ConsoleServiceAsyncStub
    owner: Client
    other: Client
    admin: tuple[tuple[str, str], ...]
    message_id: str
    batch_ids: list[str]
    other_batch_id: str
    other_message_id: str


@pytest.fixture(scope="module")
async def world(gw: Running) -> World:
    owner = await gw.client(name="owner")
    other = await gw.client(name="other")
    store = PgAccountStore(gw.gateway.pool)
    operators = await store.create_account("operators", verified=True)
    credential, secret = await store.create_credential(operators.id, admin=True)
    sent = await owner.messages.SendMessage(
        message_pb2.SendMessageRequest(mobile=CN, use_type=NOTE, text="hi", reference="order-7"),
        metadata=owner.metadata,
    )
    batch_ids = []
    for i in range(3):
        created = await owner.batches.CreateBatch(
            batch_pb2.CreateBatchRequest(
                use_type=NOTE, content=f"campaign {i}", numbers=[CN], reference=f"camp-{i}"
            ),
            metadata=owner.metadata,
        )
        batch_ids.append(created.task_id)
    theirs = await other.batches.CreateBatch(
        batch_pb2.CreateBatchRequest(use_type=NOTE, content="theirs", numbers=[OTHER_CN]),
        metadata=other.metadata,
    )
    other_sent = await other.messages.SendMessage(
        message_pb2.SendMessageRequest(mobile=CN, use_type=NOTE, text="theirs"),
        metadata=other.metadata,
    )
    await final_state(owner, sent.id)
    return World(
        console=console_pb2_grpc.ConsoleServiceStub(gw.channel),
        owner=owner,
        other=other,
        admin=basic_auth(credential.api_key, secret),
        message_id=sent.id,
        batch_ids=batch_ids,
        other_batch_id=theirs.task_id,
        other_message_id=other_sent.id,
    )


async def test_an_account_lists_its_own_batches_newest_first_in_pages(world: World) -> None:
    c = world.console
    first = await c.ListBatches(
        console_pb2.ListBatchesRequest(page_size=2), metadata=world.owner.metadata
    )
    second = await c.ListBatches(
        console_pb2.ListBatchesRequest(page_size=2, page_token=first.next_page_token),
        metadata=world.owner.metadata,
    )
    ids = [b.batch.task_id for b in [*first.batches, *second.batches]]
    assert ids == list(reversed(world.batch_ids))  # newest first, nobody else's
    assert second.next_page_token == ""
    assert {b.account_id for b in first.batches} == {world.owner.account_id}
    assert first.batches[0].batch.reference == "camp-2"
    assert first.batches[0].batch.total == 1


async def test_the_batch_progress_reaches_done(world: World) -> None:
    async def done() -> bool:
        page = await world.console.ListBatches(
            console_pb2.ListBatchesRequest(), metadata=world.owner.metadata
        )
        return all(
            b.batch.status == common_pb2.BATCH_STATUS_SUCCEEDED and b.batch.delivered == 1
            for b in page.batches
        )

    await wait_for(done, within=15)


async def test_an_admin_sees_every_account_and_may_narrow_to_one(world: World) -> None:
    c = world.console
    everything = await c.ListBatches(console_pb2.ListBatchesRequest(), metadata=world.admin)
    owners = {b.batch.task_id: b.account_id for b in everything.batches}
    assert owners[world.other_batch_id] == world.other.account_id
    assert all(owners[i] == world.owner.account_id for i in world.batch_ids)
    narrowed = await c.ListBatches(
        console_pb2.ListBatchesRequest(account_id=world.other.account_id), metadata=world.admin
    )
    assert [b.batch.task_id for b in narrowed.batches] == [world.other_batch_id]
    found = await c.SearchMessages(
        console_pb2.SearchMessagesRequest(query=world.other_message_id), metadata=world.admin
    )
    assert [m.account_id for m in found.messages] == [world.other.account_id]


async def test_another_accounts_data_is_invisible(world: World) -> None:
    c = world.console
    md = world.owner.metadata
    mine = await c.ListBatches(console_pb2.ListBatchesRequest(), metadata=md)
    assert world.other_batch_id not in {b.batch.task_id for b in mine.batches}
    for query in (world.other_message_id, OTHER_CN):
        found = await c.SearchMessages(console_pb2.SearchMessagesRequest(query=query), metadata=md)
        assert list(found.messages) == []
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await c.GetMessageHistory(
            console_pb2.GetMessageHistoryRequest(id=world.other_message_id), metadata=md
        )
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as denied:
        await c.ListBatches(
            console_pb2.ListBatchesRequest(account_id=world.other.account_id), metadata=md
        )
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert reason(denied.value) == "ADMIN_REQUIRED"


async def test_search_matches_an_id_a_number_or_a_reference(world: World) -> None:
    c = world.console
    md = world.owner.metadata
    by_id = await c.SearchMessages(
        console_pb2.SearchMessagesRequest(query=world.message_id), metadata=md
    )
    assert [m.state.id for m in by_id.messages] == [world.message_id]
    assert by_id.messages[0].state.reference == "order-7"
    by_reference = await c.SearchMessages(
        console_pb2.SearchMessagesRequest(query="order-7"), metadata=md
    )
    assert [m.state.id for m in by_reference.messages] == [world.message_id]
    by_batch_reference = await c.SearchMessages(
        console_pb2.SearchMessagesRequest(query="camp-1"), metadata=md
    )
    assert [m.batch_id for m in by_batch_reference.messages] == [world.batch_ids[1]]
    by_batch = await c.SearchMessages(
        console_pb2.SearchMessagesRequest(query=world.batch_ids[0]), metadata=md
    )
    assert [m.batch_id for m in by_batch.messages] == [world.batch_ids[0]]
    theirs = await c.SearchMessages(
        console_pb2.SearchMessagesRequest(query=world.other_batch_id), metadata=md
    )
    assert list(theirs.messages) == []
    by_number = await c.SearchMessages(console_pb2.SearchMessagesRequest(query=CN), metadata=md)
    assert len(by_number.messages) == 4  # the single send and one per batch
    assert {m.state.to_number for m in by_number.messages} == {CN}
    spelled = await c.SearchMessages(
        console_pb2.SearchMessagesRequest(query="+86 138-0013-8000"), metadata=md
    )
    assert [m.state.id for m in spelled.messages] == [m.state.id for m in by_number.messages]
    limited = await c.SearchMessages(
        console_pb2.SearchMessagesRequest(query=CN, page_size=2), metadata=md
    )
    assert len(limited.messages) == 2


async def test_history_is_every_status_change_in_order(world: World) -> None:
    history = await world.console.GetMessageHistory(
        console_pb2.GetMessageHistoryRequest(id=world.message_id), metadata=world.owner.metadata
    )
    statuses = [e.status for e in history.events]
    assert statuses[-1] == common_pb2.MESSAGE_STATUS_DELIVERED
    assert common_pb2.MESSAGE_STATUS_SENT in statuses
    assert [e.event_id for e in history.events] == sorted(e.event_id for e in history.events)
    assert history.message.state.provider == "loopback"
    assert history.message.HasField("send_time")
    assert history.message.account_id == world.owner.account_id


async def test_bad_input_names_its_field(world: World) -> None:
    c = world.console
    md = world.owner.metadata
    cases: list[tuple[Awaitable[object], str]] = [
        (c.SearchMessages(console_pb2.SearchMessagesRequest(query="  "), metadata=md), "query"),
        (
            c.SearchMessages(console_pb2.SearchMessagesRequest(query="x" * 129), metadata=md),
            "query",
        ),
        (c.GetMessageHistory(console_pb2.GetMessageHistoryRequest(), metadata=md), "id"),
        (
            c.ListBatches(console_pb2.ListBatchesRequest(page_token="garbage"), metadata=md),
            "page_token",
        ),
        (c.ListBatches(console_pb2.ListBatchesRequest(page_size=-1), metadata=md), "page_size"),
    ]
    for call, field in cases:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, field
        assert bad_fields(err.value) == {field}


async def test_a_page_token_is_not_valid_for_another_credential(world: World) -> None:
    first = await world.console.ListBatches(
        console_pb2.ListBatchesRequest(page_size=1), metadata=world.owner.metadata
    )
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await world.console.ListBatches(
            console_pb2.ListBatchesRequest(page_size=1, page_token=first.next_page_token),
            metadata=world.other.metadata,
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
