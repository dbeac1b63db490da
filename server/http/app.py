"""The HTTP side of the gateway: /healthz now; /metrics and provider webhooks later."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web


def build_http_app(is_healthy: Callable[[], Awaitable[bool]]) -> web.Application:
    async def healthz(_: web.Request) -> web.Response:
        healthy = await is_healthy()
        return web.json_response(
            {"status": "SERVING" if healthy else "NOT_SERVING"}, status=200 if healthy else 503
        )

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    return app
