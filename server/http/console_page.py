"""The operator console at /console: static files from server/http/console/ (the
page, its stylesheet and the bundle scripts/build_console.sh builds from console/src).

The page holds no data and no secret: it calls the sms.v1 RPCs on this port over
Connect with the operator's credential, so it is served only where those RPCs are.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

STATIC = Path(__file__).with_name("console")
FILES = {
    "": ("index.html", "text/html"),
    "console.js": ("console.js", "text/javascript"),
    "console.css": ("console.css", "text/css"),
}
# Only this origin's own scripts, styles and calls; no framing (clickjacking), no
# inline script, no form posts elsewhere.
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


async def _redirect(_: web.Request) -> web.Response:
    raise web.HTTPMovedPermanently("/console/")


async def _file(request: web.Request) -> web.StreamResponse:
    entry = FILES.get(request.match_info.get("name", ""))
    if entry is None:
        raise web.HTTPNotFound()
    name, content_type = entry
    body = (STATIC / name).read_bytes()
    return web.Response(body=body, content_type=content_type, charset="utf-8", headers=HEADERS)


def add_console_routes(app: web.Application) -> None:
    app.router.add_get("/console", _redirect)
    app.router.add_get("/console/", _file)
    app.router.add_get("/console/{name}", _file)
