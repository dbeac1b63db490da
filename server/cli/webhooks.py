"""``smsgw webhook …``: WebhookService from a shell — register an endpoint (its signing
secret is printed once), show, list and delete endpoints, page through deliveries and
send a time range of events again."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from typing import Any

from google.protobuf import timestamp_pb2
from sms.v1 import webhook_pb2

from server.cli.client import Api, client_command
from server.cli.output import Output
from server.cli.settings import UsageError

EVENT_TYPES = {
    "message-status": webhook_pb2.EVENT_TYPE_MESSAGE_STATUS,
    "batch-status": webhook_pb2.EVENT_TYPE_BATCH_STATUS,
    "verification": webhook_pb2.EVENT_TYPE_VERIFICATION,
    "inbound-message": webhook_pb2.EVENT_TYPE_INBOUND_MESSAGE,
    "suppression": webhook_pb2.EVENT_TYPE_SUPPRESSION,
}
WEBHOOK_COLUMNS = ("id", "url", "event_types", "disabled", "create_time", "description")
DELIVERY_COLUMNS = (
    "id",
    "event_id",
    "event_type",
    "state",
    "attempts",
    "last_http_status",
    "next_attempt_time",
)


def add_commands(commands: Any) -> None:
    webhook = commands.add_parser(
        "webhook", help="register endpoints the account's events are pushed to"
    ).add_subparsers(dest="webhook_action", required=True)
    create = webhook.add_parser("create", help="register an endpoint; prints its secret once")
    create.add_argument("url", help="https://…, resolving to public addresses")
    create.add_argument(
        "--event-type",
        action="append",
        required=True,
        choices=sorted(EVENT_TYPES),
        help="what to send it (repeats)",
    )
    create.add_argument("--description", default="", help="a note, at most 200 characters")
    client_command(create, _create)
    for name, text, call in (
        ("get", "one endpoint (without its secret)", _get),
        ("delete", "remove an endpoint and its pending deliveries", _delete),
    ):
        sub = webhook.add_parser(name, help=text)
        sub.add_argument("id", type=int)
        client_command(sub, call)
    listing = webhook.add_parser("list", help="the account's endpoints, a page at a time")
    _page_options(listing)
    client_command(listing, _list)
    deliveries = webhook.add_parser("deliveries", help="an endpoint's deliveries, newest first")
    deliveries.add_argument("id", type=int)
    _page_options(deliveries)
    client_command(deliveries, _deliveries)
    redeliver = webhook.add_parser(
        "redeliver", help="send again the events that occurred in [--start, --end)"
    )
    redeliver.add_argument("id", type=int)
    redeliver.add_argument("--start", required=True, help="ISO 8601, e.g. 2026-05-01T08:00Z")
    redeliver.add_argument("--end", default="", help="ISO 8601 (default: now)")
    client_command(redeliver, _redeliver)


def _page_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--page-size", type=int, default=0, help="default 20, at most 100")
    parser.add_argument("--page-token", default="", help="the next_page_token of a page")


def timestamp(value: str, option: str) -> timestamp_pb2.Timestamp:
    """An ISO 8601 time (UTC when it names no offset) as a Timestamp."""
    try:
        when = datetime.fromisoformat(value) if value else datetime.now(UTC)
    except ValueError:
        raise UsageError(f"{option} {value!r}: use ISO 8601, e.g. 2026-05-01T08:00Z") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(when)
    return stamp


async def _create(api: Api, args: argparse.Namespace, out: Output) -> int:
    request = webhook_pb2.CreateWebhookRequest(
        url=args.url,
        event_types=[EVENT_TYPES[t] for t in args.event_type],
        description=args.description,
    )
    out.item(await api.webhooks.CreateWebhook(request, metadata=api.metadata, timeout=api.timeout))
    return 0


async def _get(api: Api, args: argparse.Namespace, out: Output) -> int:
    hook = await api.webhooks.GetWebhook(
        webhook_pb2.GetWebhookRequest(id=args.id), metadata=api.metadata, timeout=api.timeout
    )
    out.item(hook)
    return 0


async def _delete(api: Api, args: argparse.Namespace, out: Output) -> int:
    await api.webhooks.DeleteWebhook(
        webhook_pb2.DeleteWebhookRequest(id=args.id), metadata=api.metadata, timeout=api.timeout
    )
    out.item({"id": str(args.id), "deleted": True}, compact=True)
    return 0


async def _list(api: Api, args: argparse.Namespace, out: Output) -> int:
    page = await api.webhooks.ListWebhooks(
        webhook_pb2.ListWebhooksRequest(page_size=args.page_size, page_token=args.page_token),
        metadata=api.metadata,
        timeout=api.timeout,
    )
    _page(out, page, list(page.webhooks), WEBHOOK_COLUMNS)
    return 0


async def _deliveries(api: Api, args: argparse.Namespace, out: Output) -> int:
    page = await api.webhooks.ListWebhookDeliveries(
        webhook_pb2.ListWebhookDeliveriesRequest(
            webhook_id=args.id, page_size=args.page_size, page_token=args.page_token
        ),
        metadata=api.metadata,
        timeout=api.timeout,
    )
    _page(out, page, list(page.deliveries), DELIVERY_COLUMNS)
    return 0


def _page(out: Output, page: Any, records: list[Any], columns: tuple[str, ...]) -> None:
    if out.format == "table":
        out.items(records, columns)
        if page.next_page_token:
            print(f"more: --page-token {page.next_page_token}", file=sys.stderr)
    else:
        out.item(page)


async def _redeliver(api: Api, args: argparse.Namespace, out: Output) -> int:
    request = webhook_pb2.RedeliverWebhookEventsRequest(
        webhook_id=args.id,
        start_time=timestamp(args.start, "--start"),
        end_time=timestamp(args.end, "--end"),
    )
    reply = await api.webhooks.RedeliverWebhookEvents(
        request, metadata=api.metadata, timeout=api.timeout
    )
    out.item(reply, all_fields=True)
    return 0
