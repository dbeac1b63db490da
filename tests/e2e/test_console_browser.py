"""The operator console at /console in a real browser (Debian's Chromium, driven by
Playwright) against a real gateway: an operator logs in with an API key and secret,
watches a batch made through the API progress to done, finds a message by id and
reads its events, and sees the per-provider chart drawn from live figures; a wrong
secret is refused, an account's login shows only its own batches, and its failing
webhook deliveries and suppressions are listed."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from google.protobuf import timestamp_pb2
from playwright.async_api import Browser, Page, async_playwright, expect
from sms.v1 import (
    batch_pb2,
    common_pb2,
    message_pb2,
    suppression_pb2,
    suppression_pb2_grpc,
    webhook_pb2,
    webhook_pb2_grpc,
)

from server.providers.loopback import LoopbackConfig
from server.store.accounts import PgAccountStore
from tests.e2e.conftest import Client, GatewayFactory, Running, final_state

CHROMIUM = Path("/usr/bin/chromium")  # Debian's package (.ci/run installs it)
CN = "+8613800138000"
NOTE = common_pb2.USE_TYPE_NOTIFICATION
WAIT_MS = 10_000
expect.set_options(timeout=WAIT_MS)


@pytest.fixture(scope="module")
async def gateway(start_gateway: GatewayFactory) -> Running:
    # Webhooks to a local endpoint, retried slowly: a failed delivery stays visible.
    return await start_gateway(
        loopback=LoopbackConfig(delivery_delay=0.3),
        webhook_allow_insecure=True,
        webhook_retry_base_seconds=60,
    )


@pytest.fixture
async def failing_endpoint() -> AsyncIterator[str]:
    """A webhook endpoint that answers every delivery 503."""

    async def refuse(_: web.Request) -> web.Response:
        return web.Response(status=503)

    app = web.Application()
    app.router.add_post("/hook", refuse)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}/hook"
    await runner.cleanup()


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield browser
        await browser.close()


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    context = await browser.new_context()  # its own session storage
    page = await context.new_page()
    page.set_default_timeout(WAIT_MS)
    yield page
    await context.close()


async def admin_login(gateway: Running) -> tuple[str, str]:
    store = PgAccountStore(gateway.gateway.pool)
    operators = await store.create_account("operators", verified=True)
    credential, secret = await store.create_credential(operators.id, admin=True)
    return credential.api_key, secret


async def log_in(page: Page, gateway: Running, key: str, secret: str) -> None:
    await page.goto(f"http://127.0.0.1:{gateway.gateway.http_port}/console")
    await page.fill("#api-key", key)
    await page.fill("#api-secret", secret)
    await page.click("#login button[type=submit]")


async def scheduled_batch(client: Client, numbers: list[str], seconds: float) -> str:
    """A batch that starts ``seconds`` from now, so the page sees it before it runs."""
    at = timestamp_pb2.Timestamp()
    at.FromNanoseconds(time.time_ns() + int(seconds * 1e9))
    created = await client.batches.CreateBatch(
        batch_pb2.CreateBatchRequest(
            use_type=NOTE, content="Console test", numbers=numbers, send_at=at
        ),
        metadata=client.metadata,
    )
    return created.task_id


async def test_log_in_watch_a_batch_find_a_message_see_the_chart(
    gateway: Running, page: Page
) -> None:
    owner = await gateway.client(name="shop")
    key, secret = await admin_login(gateway)
    await log_in(page, gateway, key, secret)
    await expect(page.locator("#who")).to_contain_text("admin")
    # The secret stays in this tab's session storage, not in local storage or cookies.
    assert await page.evaluate("() => localStorage.length") == 0
    assert await page.context.cookies() == []

    # A batch made through the API shows up and progresses to done, live.
    numbers = [f"+86138001380{i:02d}" for i in range(5)]
    task_id = await scheduled_batch(owner, numbers, 2.5)
    row = page.locator(f"tr[data-task-id='{task_id}']")
    await expect(row.locator(".status")).to_have_text("PENDING")
    await expect(row.locator(".progress span")).to_have_text("0%")
    await expect(row.locator(".status")).to_have_text("SUCCEEDED")
    await expect(row.locator("td.delivered")).to_have_text("5")
    await expect(row.locator(".progress span")).to_have_text("100%")
    # Its messages, one click away.
    await row.click()
    results = page.locator("#messages tr.result")
    await expect(results).to_have_count(5)
    assert set(await results.locator("td:nth-child(3)").all_inner_texts()) == set(numbers)

    # Find a message by its id and read its history.
    sent = await owner.messages.SendMessage(
        message_pb2.SendMessageRequest(mobile=CN, use_type=NOTE, text="find me"),
        metadata=owner.metadata,
    )
    await final_state(owner, sent.id)
    await page.fill("#query", sent.id)
    await page.click("#search button[type=submit]")
    history = page.locator(f"#history[data-message-id='{sent.id}']")
    await expect(history.locator(".status")).to_have_text("DELIVERED")
    events = history.locator("ol.events li")
    await expect(events.last).to_have_attribute("data-status", "DELIVERED")
    assert "SENT" in await events.evaluate_all("els => els.map(e => e.dataset.status)")

    # The chart: deliveries per second per provider, with a point above zero once
    # messages are delivered while the page samples.
    await page.click("#tab-providers")
    rate = page.locator("figure[data-title='Delivered per second']")
    await expect(rate.locator("g[data-provider='loopback'] circle.point").first).to_be_visible()
    for i in range(3):
        await owner.messages.SendMessage(
            message_pb2.SendMessageRequest(mobile=CN, use_type=NOTE, text=f"chart {i}"),
            metadata=owner.metadata,
        )
    moving = rate.locator("circle.point title").filter(has_not_text=re.compile(r": 0\.00 "))
    await expect(moving.first).to_be_attached()
    latency = page.locator("figure[data-title='Provider request time (mean)'] circle.point")
    await expect(latency.first).to_be_visible()
    await expect(page.locator("#breakers tr[data-provider='loopback']")).to_contain_text("closed")


async def test_a_wrong_secret_is_refused(gateway: Running, page: Page) -> None:
    owner = await gateway.client(name="wrong")
    await log_in(page, gateway, owner.api_key, "sec_not_it")
    await expect(page.locator("#login .error")).to_contain_text("Unauthenticated")
    await expect(page.locator("#app")).to_have_count(0)


async def test_an_account_sees_its_own_batches_only(gateway: Running, page: Page) -> None:
    mine = await gateway.client(name="mine")
    theirs = await gateway.client(name="theirs")
    my_batch = await scheduled_batch(mine, [CN], 0)
    their_batch = await scheduled_batch(theirs, [CN], 0)
    await log_in(page, gateway, mine.api_key, mine.api_secret)
    await expect(page.locator(f"tr[data-task-id='{my_batch}']")).to_be_visible()
    await expect(page.locator("tr[data-task-id]")).to_have_count(1)
    assert await page.locator(f"tr[data-task-id='{their_batch}']").count() == 0
    # Gateway-wide figures are for admin credentials: no providers tab here.
    await expect(page.locator("#tab-providers")).to_have_count(0)


async def test_failing_webhook_deliveries_and_suppressions(
    gateway: Running, page: Page, failing_endpoint: str
) -> None:
    owner = await gateway.client(name="hooks")
    hook = await webhook_pb2_grpc.WebhookServiceStub(gateway.channel).CreateWebhook(
        webhook_pb2.CreateWebhookRequest(
            url=failing_endpoint, event_types=[webhook_pb2.EVENT_TYPE_MESSAGE_STATUS]
        ),
        metadata=owner.metadata,
    )
    await suppression_pb2_grpc.SuppressionServiceStub(gateway.channel).AddSuppressions(
        suppression_pb2.AddSuppressionsRequest(
            mobiles=["+8613800138077"], reason=suppression_pb2.SUPPRESSION_REASON_OPT_OUT
        ),
        metadata=owner.metadata,
    )
    await owner.messages.SendMessage(
        message_pb2.SendMessageRequest(mobile=CN, use_type=NOTE, text="hooked"),
        metadata=owner.metadata,
    )
    await log_in(page, gateway, owner.api_key, owner.api_secret)
    await page.click("#tab-webhooks")
    card = page.locator(f".webhook[data-webhook-id='{hook.id}']")
    await expect(card.locator("h3")).to_contain_text(failing_endpoint)
    # The endpoint's 503 shows on a delivery that is being retried (refreshed every 5 s).
    await expect(card.locator("tbody tr").first).to_contain_text("503", timeout=15_000)
    await page.click("#tab-suppressions")
    row = page.locator("#suppressions tr[data-mobile='+8613800138077']")
    await expect(row).to_contain_text("OPT_OUT")


async def test_the_page_is_locked_down(gateway: Running) -> None:
    url = f"http://127.0.0.1:{gateway.gateway.http_port}/console/"
    async with aiohttp.ClientSession() as http:
        async with http.get(url) as r:
            assert r.status == 200
            csp = r.headers["Content-Security-Policy"]
            assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp
        async with http.get(url + "secret.txt") as r:
            assert r.status == 404


async def test_no_console_where_the_rpcs_are_off(start_gateway: GatewayFactory) -> None:
    """SMSGW_HTTP_RPC=false: the page would have nothing to call, so it is not served."""
    off = await start_gateway(http_rpc=False)
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{off.gateway.http_port}/console/") as r,
    ):
        assert r.status == 404
