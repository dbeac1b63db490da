"""``smsgw template …``: TemplateService from a shell."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from sms.v1 import template_pb2

from server.cli.client import USE_TYPES, Api, client_command, use_type_option
from server.cli.output import Output

TEMPLATE_COLUMNS = ("id", "code", "use_type", "variables", "content")


def add_commands(commands: Any) -> None:
    template = commands.add_parser(
        "template", help="create, show, list and delete message templates"
    ).add_subparsers(dest="template_action", required=True)
    create = template.add_parser("create", help="a template, with #variable# placeholders")
    create.add_argument("content", help="at most 460 characters, e.g. 'Hi #name#, …'")
    create.add_argument("--code", default="", help="your readable identifier for it")
    use_type_option(create)
    client_command(create, _create)
    get = template.add_parser("get", help="one template")
    get.add_argument("id", type=int)
    client_command(get, _get)
    listing = template.add_parser("list", help="the account's templates, a page at a time")
    listing.add_argument("--page-size", type=int, default=0)
    listing.add_argument("--page-token", default="", help="the next_page_token of a page")
    client_command(listing, _list)
    delete = template.add_parser("delete", help="delete a template")
    delete.add_argument("id", type=int)
    client_command(delete, _delete)


async def _create(api: Api, args: argparse.Namespace, out: Output) -> int:
    template = template_pb2.Template(
        code=args.code, content=args.content, use_type=USE_TYPES[args.use_type]
    )
    created = await api.templates.CreateTemplate(
        template_pb2.CreateTemplateRequest(template=template),
        metadata=api.metadata,
        timeout=api.timeout,
    )
    out.item(created)
    return 0


async def _get(api: Api, args: argparse.Namespace, out: Output) -> int:
    template = await api.templates.GetTemplate(
        template_pb2.GetTemplateRequest(id=args.id), metadata=api.metadata, timeout=api.timeout
    )
    out.item(template)
    return 0


async def _list(api: Api, args: argparse.Namespace, out: Output) -> int:
    page = await api.templates.ListTemplates(
        template_pb2.ListTemplatesRequest(page_size=args.page_size, page_token=args.page_token),
        metadata=api.metadata,
        timeout=api.timeout,
    )
    if out.format == "table":
        out.items(list(page.templates), TEMPLATE_COLUMNS)
        if page.next_page_token:
            print(f"more: --page-token {page.next_page_token}", file=sys.stderr)
    else:
        out.item(page)
    return 0


async def _delete(api: Api, args: argparse.Namespace, out: Output) -> int:
    await api.templates.DeleteTemplate(
        template_pb2.DeleteTemplateRequest(id=args.id), metadata=api.metadata, timeout=api.timeout
    )
    out.item({"id": str(args.id), "deleted": True}, compact=True)
    return 0
