"""``smsgw inbound …``: InboundService from a shell — list and watch the messages
recipients sent, and (with the loopback provider, when SMSGW_LOOPBACK_INBOUND is set)
inject one as if a recipient had sent it, to try keywords offline."""

from __future__ import annotations

import argparse
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from sms.v1 import inbound_pb2

from server.cli.client import Api, client_command
from server.cli.output import Output
from server.cli.settings import UsageError

COLUMNS = ("event_id", "id", "from_number", "to", "keyword", "text", "received_at")
INJECT_TIMEOUT = 10.0


def add_commands(commands: Any) -> None:
    inbound = commands.add_parser(
        "inbound", help="messages recipients sent (STOP, START, HELP and the rest)"
    ).add_subparsers(dest="inbound_action", required=True)
    listing = inbound.add_parser("list", help="the account's inbound messages, newest first")
    listing.add_argument("--page-size", type=int, default=0, help="default 20, at most 100")
    listing.add_argument("--page-token", default="", help="the next_page_token of a page")
    client_command(listing, _list)
    watch = inbound.add_parser("watch", help="print inbound messages as they arrive")
    watch.add_argument(
        "--after-event-id",
        type=int,
        default=0,
        help="replay those after this event first (0: only new ones)",
    )
    client_command(watch, _watch)
    inject = inbound.add_parser(
        "inject",
        help="post a message to the loopback provider as a recipient (SMSGW_LOOPBACK_INBOUND)",
    )
    inject.add_argument("--from", dest="sender", required=True, help="the sender, E.164")
    inject.add_argument("--to", default="+15550000000", help="the number it was sent to")
    inject.add_argument("--text", required=True, help="what the recipient wrote (e.g. STOP)")
    inject.add_argument(
        "--http-addr", help="the gateway's HTTP port, host:port (default SMSGW_HTTP_ADDR)"
    )
    inject.add_argument("--provider", default="", help="the loopback provider's name, if several")
    inject.set_defaults(handler=_inject)


async def _list(api: Api, args: argparse.Namespace, out: Output) -> int:
    page = await api.inbound.ListInboundMessages(
        inbound_pb2.ListInboundMessagesRequest(
            page_size=args.page_size, page_token=args.page_token
        ),
        metadata=api.metadata,
        timeout=api.timeout,
    )
    if out.format == "table":
        out.items(list(page.inbound_messages), COLUMNS)
        if page.next_page_token:
            print(f"more: --page-token {page.next_page_token}", file=sys.stderr)
    else:
        out.item(page)
    return 0


async def _watch(api: Api, args: argparse.Namespace, out: Output) -> int:
    request = inbound_pb2.WatchInboundMessagesRequest(after_event_id=args.after_event_id)
    async for message in api.inbound.WatchInboundMessages(request, metadata=api.metadata):
        out.event(message, COLUMNS)
    return 0


def _inject(args: argparse.Namespace) -> int:
    addr = args.http_addr or os.environ.get("SMSGW_HTTP_ADDR") or "127.0.0.1:8080"
    host, _, port = addr.rpartition(":")
    if not host or not port.isdigit():
        raise UsageError(f"--http-addr must be host:port, got {addr!r}")
    if host in ("0.0.0.0", "::", "[::]"):
        host = "127.0.0.1"
    path = "/inbound/loopback" + (f"/{urllib.parse.quote(args.provider)}" if args.provider else "")
    body = urllib.parse.urlencode({"From": args.sender, "To": args.to, "Body": args.text})
    request = urllib.request.Request(
        f"http://{host}:{port}{path}",
        data=body.encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=INJECT_TIMEOUT):
            pass
    except urllib.error.HTTPError as exc:
        print(
            f"smsgw: refused (HTTP {exc.code}): {exc.read()[:300].decode(errors='replace')}",
            file=sys.stderr,
        )
        return 1
    except OSError as exc:
        print(f"smsgw: cannot reach {host}:{port} ({exc})", file=sys.stderr)
        return 1
    print("injected")
    return 0
