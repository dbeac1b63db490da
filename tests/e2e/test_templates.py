"""TemplateService and template sends, through a real server."""

from __future__ import annotations

import grpc
import pytest
from sms.v1 import common_pb2, message_pb2, template_pb2

from tests.e2e.conftest import Client, Running
from tests.e2e.errors import bad_fields, reason

CN = "+8613800138000"


async def create(client: Client, code: str, content: str) -> template_pb2.Template:
    return await client.templates.CreateTemplate(
        template_pb2.CreateTemplateRequest(
            template=template_pb2.Template(
                code=code, content=content, use_type=common_pb2.USE_TYPE_NOTIFICATION
            )
        ),
        metadata=client.metadata,
    )


async def test_create_get_list_delete(gw: Running) -> None:
    client = await gw.client()
    created = await create(client, "order_shipped", "Your order #order_no# shipped on #day#.")
    assert created.id > 0
    assert list(created.variables) == ["order_no", "day"]
    assert created.status == template_pb2.TEMPLATE_STATUS_ACTIVE
    got = await client.templates.GetTemplate(
        template_pb2.GetTemplateRequest(id=created.id), metadata=client.metadata
    )
    assert got == created

    for i in range(4):
        await create(client, f"t{i}", f"Template number {i}")
    seen: list[int] = []
    token = ""
    while True:
        page = await client.templates.ListTemplates(
            template_pb2.ListTemplatesRequest(page_size=2, page_token=token),
            metadata=client.metadata,
        )
        assert page.total_size == 5
        assert len(page.templates) <= 2
        seen.extend(t.id for t in page.templates)
        token = page.next_page_token
        if not token:
            break
    assert len(seen) == 5 == len(set(seen))

    await client.templates.DeleteTemplate(
        template_pb2.DeleteTemplateRequest(id=created.id), metadata=client.metadata
    )
    for call in (
        client.templates.GetTemplate(
            template_pb2.GetTemplateRequest(id=created.id), metadata=client.metadata
        ),
        client.templates.DeleteTemplate(
            template_pb2.DeleteTemplateRequest(id=created.id), metadata=client.metadata
        ),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(
    "content",
    [
        "x" * 461,
        "Deal 【today】 only",
        "Best ★ offer",
        "Click https://x.io/#code# now",
        "Hi #name# and #name# again",
        "Hi #a_name_that_is_far_too_long_x#",
        "Hi #bad-name#",
        "",
    ],
)
async def test_invalid_content_is_refused_naming_the_field(gw: Running, content: str) -> None:
    client = await gw.client()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await create(client, "bad", content)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_fields(caught.value) == {"template.content"}


async def test_duplicate_code_and_bad_page_token(gw: Running) -> None:
    client = await gw.client()
    await create(client, "welcome", "Welcome!")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await create(client, "welcome", "Welcome again!")
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
    for request in (
        template_pb2.ListTemplatesRequest(page_token="garbage"),
        template_pb2.ListTemplatesRequest(page_size=-1),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await client.templates.ListTemplates(request, metadata=client.metadata)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    # A token from one account does not page another account's templates.
    for i in range(2):
        await create(client, f"p{i}", "Hello")
    page = await client.templates.ListTemplates(
        template_pb2.ListTemplatesRequest(page_size=1), metadata=client.metadata
    )
    other = await gw.client()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await other.templates.ListTemplates(
            template_pb2.ListTemplatesRequest(page_token=page.next_page_token),
            metadata=other.metadata,
        )
    assert reason(caught.value) == "INVALID_PAGE_TOKEN"


async def test_unverified_account_cannot_create_templates(gw: Running) -> None:
    client = await gw.client(verified=False)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await create(client, "promo", "Big sale")
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_send_with_template_renders_data(gw: Running) -> None:
    client = await gw.client()
    template = await create(client, "otp", "Code #code#, valid #minutes# minutes.")
    reply = await client.messages.SendMessage(
        message_pb2.SendMessageRequest(
            mobile=CN,
            use_type=common_pb2.USE_TYPE_NOTIFICATION,
            template_id=template.id,
            data={"code": "123456", "minutes": "5"},
        ),
        metadata=client.metadata,
    )
    body = await gw.gateway.pool.fetchval("SELECT body FROM messages WHERE id = $1", reply.id)
    assert body == "Code 123456, valid 5 minutes."

    bad = {"code": "1" * 33, "extra": "x"}
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await client.messages.SendMessage(
            message_pb2.SendMessageRequest(
                mobile=CN,
                use_type=common_pb2.USE_TYPE_NOTIFICATION,
                template_id=template.id,
                data=bad,
            ),
            metadata=client.metadata,
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_fields(caught.value) == {"data.code", "data.minutes", "data.extra"}

    other = await gw.client()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await other.messages.SendMessage(
            message_pb2.SendMessageRequest(
                mobile=CN,
                use_type=common_pb2.USE_TYPE_NOTIFICATION,
                template_id=template.id,
                data={"code": "1", "minutes": "5"},
            ),
            metadata=other.metadata,
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
