"""The HTTP side of the gateway: /healthz, /metrics (Prometheus), provider webhooks
(delivery receipts at /webhooks/..., messages from recipients at /inbound/...),
the sms.v1 RPCs over Connect and gRPC-Web (server/http/rpc_bridge.py) and, with them,
the operator console at /console (server/http/console_page.py)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from server.domain.errors import InvalidArgument
from server.http.console_page import add_console_routes
from server.http.rpc_bridge import RpcBridge
from server.http.webhooks import WebhookRejected
from server.providers.webhooks import HookRequest

log = logging.getLogger(__name__)

MAX_WEBHOOK_BYTES = 64 * 1024
# Providers post forms; any other body is refused before it is read as one.
FORM_TYPES = frozenset({"application/x-www-form-urlencoded", "multipart/form-data"})


WebhookHandler = Callable[[str, str | None, dict[str, str], HookRequest], Awaitable[None]]
InboundHandler = Callable[[str, str | None, dict[str, str], HookRequest], Awaitable[object]]
# What an inbound webhook is answered: Twilio reads TwiML, an empty Response sends nothing.
EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'


@dataclass(frozen=True)
class MetricsEndpoint:
    render: Callable[[], Awaitable[bytes]]  # the exposition
    content_type: str


def build_http_app(
    is_healthy: Callable[[], Awaitable[bool]],
    receive_webhook: WebhookHandler | None = None,
    metrics: MetricsEndpoint | None = None,
    receive_inbound: InboundHandler | None = None,
    rpc: RpcBridge | None = None,
) -> web.Application:
    async def healthz(_: web.Request) -> web.Response:
        healthy = await is_healthy()
        return web.json_response(
            {"status": "SERVING" if healthy else "NOT_SERVING"}, status=200 if healthy else 503
        )

    async def webhook(request: web.Request) -> web.Response:
        assert receive_webhook is not None
        refused = await _receive_form(request, receive_webhook)
        return refused or web.json_response({"accepted": True})

    async def inbound(request: web.Request) -> web.Response:
        assert receive_inbound is not None
        refused = await _receive_form(request, receive_inbound)
        return refused or web.Response(text=EMPTY_TWIML, content_type="text/xml")

    async def exposition(_: web.Request) -> web.Response:
        assert metrics is not None
        body = await metrics.render()
        return web.Response(body=body, headers={"Content-Type": metrics.content_type})

    app = web.Application(client_max_size=MAX_WEBHOOK_BYTES)
    app.router.add_get("/healthz", healthz)
    if metrics is not None:
        app.router.add_get("/metrics", exposition)
    if receive_webhook is not None:
        app.router.add_post("/webhooks/{kind}", webhook)
        app.router.add_post("/webhooks/{kind}/{name}", webhook)
    if receive_inbound is not None:
        app.router.add_post("/inbound/{kind}", inbound)
        app.router.add_post("/inbound/{kind}/{name}", inbound)
    if rpc is not None:
        rpc.add_routes(app)  # reads its bodies itself, up to the gRPC message limit
        add_console_routes(app)  # the operator console calls those RPCs
    return app


async def _receive_form(
    request: web.Request,
    receive: InboundHandler,  # (a WebhookHandler is one too)
) -> web.Response | None:
    """Hands a provider's posted form to ``receive``: None once it is taken, else the
    refusal to answer (400 unreadable or malformed, 403 not verified)."""
    fields = await _form_fields(request)
    if fields is None:
        return web.json_response({"accepted": False, "reason": "malformed body"}, status=400)
    try:
        await receive(
            request.match_info["kind"],
            request.match_info.get("name"),
            fields,
            HookRequest(request.raw_path, request.headers),
        )
    except WebhookRejected as exc:
        return web.json_response({"accepted": False, "reason": str(exc)}, status=403)
    except InvalidArgument as exc:
        reasons = "; ".join(f"{v.field}: {v.description}" for v in exc.violations)
        return web.json_response({"accepted": False, "reason": reasons}, status=400)
    return None


async def _form_fields(request: web.Request) -> dict[str, str] | None:
    """The text fields of a posted form, or None (after one short log line) when the
    body is not a readable form: another content type, bytes that are not UTF-8 (or
    not the declared charset), a multipart body without its boundary or cut short."""
    where = request.match_info.get("kind", "?")[:40]  # the caller's text: bounded, repr
    if request.content_type not in FORM_TYPES:
        log.warning("webhook %r: refused a %.60r body (not a form)", where, request.content_type)
        return None
    try:
        form = await request.post()
    except web.HTTPException:
        raise  # too large (413): aiohttp's own answer
    except Exception as exc:  # any parse failure is the sender's mistake
        log.warning("webhook %r: refused a malformed form (%s)", where, type(exc).__name__)
        return None
    return {k: v for k, v in form.items() if isinstance(v, str)}
