"""``TemplateCatalog`` (server/domain/template_catalog.py) on the in-memory
``InMemoryTemplates``: create, get, list and delete with their refusals, in
milliseconds. The wiring through gRPC and PostgreSQL is tested end to end in
tests/e2e (TemplateService)."""

from __future__ import annotations

import pytest

from server.domain.errors import AlreadyExists, InvalidArgument, NotFound, PermissionDenied
from server.domain.messaging import Caller
from server.domain.models import UseType
from server.domain.template_catalog import TemplateCatalog
from tests.fakes import FakeClock, InMemoryTemplates

CALLER = Caller(account_id=1, verified=True)
OTHER = Caller(account_id=2, verified=True)
NOTE = UseType.NOTIFICATION


def catalog() -> tuple[TemplateCatalog, InMemoryTemplates]:
    store = InMemoryTemplates(FakeClock())
    return TemplateCatalog(store), store


def fields_of(exc: InvalidArgument) -> set[str]:
    return {v.field for v in exc.violations}


async def test_a_template_is_stored_with_its_variables_in_order() -> None:
    templates, store = catalog()
    created = await templates.create(CALLER, "order.shipped", "Hi #name#, order #order#", NOTE)
    assert (created.account_id, created.code, created.use_type) == (1, "order.shipped", NOTE)
    assert created.variables == ("name", "order")
    assert created.created_at == store.clock.now
    assert await templates.get(CALLER, created.id) == created


async def test_every_bad_field_is_named_and_nothing_is_stored() -> None:
    templates, store = catalog()
    with pytest.raises(InvalidArgument) as caught:
        await templates.create(CALLER, "bad code", "Hi #first name#", UseType.UNSPECIFIED)
    assert caught.value.reason == "INVALID_TEMPLATE"
    assert fields_of(caught.value) == {
        "template.code",
        "template.content",
        "template.use_type",
    }
    assert not store.rows


@pytest.mark.parametrize(
    ("code", "content", "named"),
    [
        ("", "Hi", "template.code"),
        ("c" * 65, "Hi", "template.code"),
        ("ok", "", "template.content"),
        ("ok", "x" * 461, "template.content"),
        ("ok", "Buy now ★", "template.content"),
        ("ok", "#a# and #a#", "template.content"),
    ],
    ids=["no code", "long code", "no content", "long content", "symbol", "repeated variable"],
)
async def test_each_rule_names_its_field(code: str, content: str, named: str) -> None:
    templates, store = catalog()
    with pytest.raises(InvalidArgument) as caught:
        await templates.create(CALLER, code, content, NOTE)
    assert fields_of(caught.value) == {named}
    assert not store.rows


async def test_an_unverified_account_cannot_create_templates() -> None:
    templates, store = catalog()
    with pytest.raises(PermissionDenied) as caught:
        await templates.create(Caller(account_id=3, verified=False), "hi", "Hi", NOTE)
    assert caught.value.reason == "ACCOUNT_NOT_VERIFIED"
    assert not store.rows


async def test_a_code_is_unique_among_an_accounts_live_templates() -> None:
    templates, _ = catalog()
    first = await templates.create(CALLER, "greet", "Hi", NOTE)
    with pytest.raises(AlreadyExists) as caught:
        await templates.create(CALLER, "greet", "Hello", NOTE)
    assert caught.value.reason == "TEMPLATE_CODE_TAKEN"
    # Another account has codes of its own; a deleted template frees its code.
    await templates.create(OTHER, "greet", "Hi", NOTE)
    await templates.delete(CALLER, first.id)
    again = await templates.create(CALLER, "greet", "Hello", NOTE)
    assert again.id != first.id and (await templates.get(CALLER, again.id)).content == "Hello"


async def test_another_accounts_template_is_not_found_nor_deleted() -> None:
    templates, _ = catalog()
    mine = await templates.create(CALLER, "greet", "Hi", NOTE)
    with pytest.raises(NotFound) as got:
        await templates.get(OTHER, mine.id)
    assert got.value.reason == "TEMPLATE_NOT_FOUND"
    with pytest.raises(NotFound):
        await templates.delete(OTHER, mine.id)
    assert (await templates.list(OTHER, 10, "")).templates == []
    assert await templates.get(CALLER, mine.id) == mine


async def test_a_deleted_template_is_gone_and_a_second_delete_is_not_found() -> None:
    templates, _ = catalog()
    template = await templates.create(CALLER, "greet", "Hi", NOTE)
    await templates.delete(CALLER, template.id)
    with pytest.raises(NotFound):
        await templates.get(CALLER, template.id)
    with pytest.raises(NotFound):
        await templates.delete(CALLER, template.id)
    page = await templates.list(CALLER, 10, "")
    assert (page.templates, page.total_size) == ([], 0)


async def test_list_pages_through_the_accounts_templates_in_id_order() -> None:
    templates, _ = catalog()
    mine = [await templates.create(CALLER, f"t{i}", "Hi", NOTE) for i in range(5)]
    await templates.create(OTHER, "theirs", "Hi", NOTE)
    await templates.delete(CALLER, mine[1].id)
    seen: list[str] = []
    sizes: list[int] = []
    token = ""
    while True:
        page = await templates.list(CALLER, 2, token)
        assert page.total_size == 4
        sizes.append(len(page.templates))
        seen.extend(t.code for t in page.templates)
        token = page.next_page_token
        if not token:
            break
    assert seen == ["t0", "t2", "t3", "t4"] and sizes == [2, 2]


async def test_a_page_token_of_another_account_or_garbage_is_a_bad_page_token() -> None:
    templates, _ = catalog()
    for i in range(3):
        await templates.create(CALLER, f"t{i}", "Hi", NOTE)
        await templates.create(OTHER, f"t{i}", "Hi", NOTE)
    token = (await templates.list(CALLER, 1, "")).next_page_token
    assert token
    for bad in (token, "garbage"):
        with pytest.raises(InvalidArgument) as caught:
            await templates.list(OTHER, 1, bad)
        assert fields_of(caught.value) == {"page_token"}
    with pytest.raises(InvalidArgument) as size:
        await templates.list(CALLER, -1, "")
    assert fields_of(size.value) == {"page_size"}


async def test_a_page_size_of_zero_means_the_default() -> None:
    templates, _ = catalog()
    for i in range(25):
        await templates.create(CALLER, f"t{i}", "Hi", NOTE)
    page = await templates.list(CALLER, 0, "")
    assert len(page.templates) == 20 and page.next_page_token and page.total_size == 25
