"""``smsgw send``, ``smsgw status`` and ``smsgw watch``: MessageService from a shell."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from sms.v1 import message_pb2

from server.cli.client import (
    USE_TYPES,
    Api,
    client_command,
    pairs,
    reference_options,
    references,
    use_type_option,
)
from server.cli.output import Output
from server.cli.settings import UsageError

EVENT_COLUMNS = ("event_id", "message_id", "to_number", "status", "error_code", "occurred_at")
STATE_COLUMNS = ("id", "to_number", "status", "error_code", "provider", "updated_at")


def add_commands(commands: Any) -> None:
    send = commands.add_parser("send", help="send one message (SMSGW_API_KEY/SECRET)")
    send.add_argument("mobile", help="E.164, e.g. +8613800138000")
    send.add_argument("text", nargs="?", help="the text (or --template-id)")
    send.add_argument("--template-id", type=int)
    send.add_argument("--data", action="append", default=[], metavar="NAME=VALUE")
    use_type_option(send)
    send.add_argument("--request-id", default="", help="idempotency key")
    reference_options(send)
    send.add_argument("--watch", action="store_true", help="then follow it to a final status")
    client_command(send, _send)

    status = commands.add_parser(
        "status", help="messages' current status (exit 1 if an id is not found)"
    )
    status.add_argument("ids", nargs="+", metavar="ID", help="message ids (at most 100)")
    client_command(status, _status)

    watch = commands.add_parser(
        "watch", help="follow status events (of IDS, or all the account's) as JSON lines"
    )
    watch.add_argument("ids", nargs="*", help="message ids; none: every message")
    watch.add_argument("--after-event-id", type=int, default=0, help="resume after this event")
    client_command(watch, _watch)


def send_request(args: argparse.Namespace) -> message_pb2.SendMessageRequest:
    if (args.text is None) == (args.template_id is None):
        raise UsageError("give the text or --template-id (one of them)")
    reference, metadata = references(args)
    request = message_pb2.SendMessageRequest(
        mobile=args.mobile,
        use_type=USE_TYPES[args.use_type],
        data=pairs(args.data),
        request_id=args.request_id,
        reference=reference,
        metadata=metadata,
    )
    if args.text is not None:
        request.text = args.text
    else:
        request.template_id = args.template_id
    return request


async def _send(api: Api, args: argparse.Namespace, out: Output) -> int:
    reply = await api.messages.SendMessage(
        send_request(args), metadata=api.metadata, timeout=api.timeout
    )
    out.item(reply)
    if args.watch:
        await follow(api, out, [reply.id], 0)
    return 0


async def _status(api: Api, args: argparse.Namespace, out: Output) -> int:
    reply = await api.messages.GetMessageStatus(
        message_pb2.GetMessageStatusRequest(ids=args.ids),
        metadata=api.metadata,
        timeout=api.timeout,
    )
    if out.format == "table":
        out.items(list(reply.messages), STATE_COLUMNS)
    else:
        out.item(reply)
    for missing in reply.not_found_ids:
        print(f"smsgw: message {missing} not found", file=sys.stderr)
    return 1 if reply.not_found_ids else 0


async def _watch(api: Api, args: argparse.Namespace, out: Output) -> int:
    await follow(api, out, args.ids, args.after_event_id)
    return 0


async def follow(api: Api, out: Output, ids: Sequence[str], after: int) -> None:
    """Prints each status event (a JSON line, or a table row) until the server ends
    the stream: with ids, when every one of them is final."""
    request = message_pb2.WatchMessageStatusRequest(ids=list(ids), after_event_id=after)
    async for event in api.messages.WatchMessageStatus(request, metadata=api.metadata):
        out.event(event, EVENT_COLUMNS)
