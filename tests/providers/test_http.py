"""The shared HTTP helper classifies real answers: what is retryable, what is not."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from server.emulators.common import RunningEmulator
from server.providers.http import TransientHttpError, call, new_session


@pytest.fixture
async def base_url() -> AsyncIterator[str]:
    async def answer(request: web.Request) -> web.Response:
        kind = request.match_info["kind"]
        if kind == "html401":
            return web.Response(status=401, content_type="text/html", text="<h1>nope</h1>")
        if kind == "json400":
            return web.json_response({"code": "400"}, status=400)
        if kind == "garbage200":
            return web.Response(status=200, text="{oops")
        if kind == "throttled":
            return web.json_response({"message": "slow down"}, status=429)
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_get("/{kind}", answer)
    emulator = await RunningEmulator(app).start()
    yield emulator.base_url
    await emulator.stop()


async def test_answers_are_classified(base_url: str) -> None:
    async with new_session() as session:
        assert (await call(session, "GET", f"{base_url}/ok", seconds=2)).body == {"ok": True}
        refused = await call(session, "GET", f"{base_url}/html401", seconds=2)
        assert (refused.status, refused.body) == (401, None)
        bad = await call(session, "GET", f"{base_url}/json400", seconds=2)
        assert (bad.status, bad.body) == (400, {"code": "400"})
        for path, code in (("garbage200", "BAD_RESPONSE"), ("throttled", "HTTP_429")):
            with pytest.raises(TransientHttpError) as caught:
                await call(session, "GET", f"{base_url}/{path}", seconds=2)
            assert caught.value.code == code
        with pytest.raises(TransientHttpError) as caught:
            await call(session, "GET", "http://127.0.0.1:9/nothing-listens", seconds=2)
        assert caught.value.code == "CONNECTION"
