"""``smsgw batch …``: BatchService from a shell — create (numbers from arguments, a
file or a CSV with per-number variables), get, watch with a progress bar, list a
batch's messages, cancel."""

from __future__ import annotations

import argparse
import csv
import io
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

from sms.v1 import batch_pb2, common_pb2

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

FINAL_BATCH = {
    common_pb2.BATCH_STATUS_SUCCEEDED,
    common_pb2.BATCH_STATUS_FAILED,
    common_pb2.BATCH_STATUS_CANCELLED,
}
NUMBER_COLUMNS = ("number", "mobile")
MESSAGE_COLUMNS = ("id", "to_number", "status", "error_code", "send_time")
BAR_WIDTH = 30


def add_commands(commands: Any) -> None:
    batch = commands.add_parser("batch", help="create and follow batches").add_subparsers(
        dest="batch_action", required=True
    )
    create = batch.add_parser("create", help="send one content to many numbers")
    create.add_argument("--content", help="text, with #variable# placeholders")
    create.add_argument("--template-id", type=int)
    create.add_argument("--number", action="append", default=[], help="a number (repeats)")
    create.add_argument("--numbers-file", help="a file with one number per line ('-': stdin)")
    create.add_argument(
        "--csv",
        metavar="FILE",
        help="a CSV ('-': stdin) with a header: a number (or mobile) column, and one "
        "column per template variable, the values for that number",
    )
    create.add_argument(
        "--data",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a variable's value for every number (a --csv column overrides it)",
    )
    use_type_option(create)
    create.add_argument("--request-id", default="", help="idempotency key")
    reference_options(create)
    create.add_argument("--watch", action="store_true", help="then show its progress")
    client_command(create, _create)

    for name, text, call in (
        ("get", "a batch's counts", _get),
        ("watch", "a batch's progress until it is final (exit 1 unless it succeeded)", _watch),
        ("cancel", "stop what has not been handed to a provider yet", _cancel),
    ):
        sub = batch.add_parser(name, help=text)
        sub.add_argument("task_id")
        client_command(sub, call)
    messages = batch.add_parser("messages", help="a batch's messages, a page at a time")
    messages.add_argument("task_id")
    messages.add_argument("--page-size", type=int, default=0, help="default 20, at most 100")
    messages.add_argument("--page-token", default="", help="the next_page_token of a page")
    client_command(messages, _messages)


def read_csv(text: str, shared: Mapping[str, str]) -> tuple[list[str], dict[str, dict[str, str]]]:
    """The numbers of a CSV and each one's variables (``shared`` under its own columns).

    The header names the columns; ``number`` (or ``mobile``) holds the numbers, else the
    first column does; every other column is a template variable."""
    rows = csv.reader(io.StringIO(text))
    header = [name.strip() for name in next(rows, [])]
    if not header or not any(header):
        raise UsageError("--csv: the first line must name the columns (number,name,…)")
    lowered = [name.lower() for name in header]
    key = next((lowered.index(c) for c in NUMBER_COLUMNS if c in lowered), 0)
    numbers: list[str] = []
    data: dict[str, dict[str, str]] = {}
    for line, row in enumerate(rows, start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise UsageError(f"--csv line {line}: {len(row)} values for {len(header)} columns")
        number = row[key].strip()
        numbers.append(number)
        values = dict(shared)
        values.update((n, v) for i, (n, v) in enumerate(zip(header, row, strict=True)) if i != key)
        if values:
            data[number] = values
    return numbers, data


def _read(path: str, option: str) -> str:
    try:
        return sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"{option}: cannot read {path} ({exc.strerror})") from None


def batch_request(args: argparse.Namespace) -> batch_pb2.CreateBatchRequest:
    if (args.content is None) == (args.template_id is None):
        raise UsageError("give --content or --template-id (one of them)")
    if args.numbers_file == "-" and args.csv == "-":
        raise UsageError("only one of --numbers-file and --csv can read stdin")
    shared = pairs(args.data)
    numbers = list(args.number)
    if args.numbers_file:
        text = _read(args.numbers_file, "--numbers-file")
        numbers += [line.strip() for line in text.splitlines() if line.strip()]
    data = {number: dict(shared) for number in numbers} if shared else {}
    if args.csv:
        csv_numbers, csv_data = read_csv(_read(args.csv, "--csv"), shared)
        numbers += csv_numbers
        data.update(csv_data)
    if not numbers:
        raise UsageError("give numbers with --number, --numbers-file or --csv")
    reference, metadata = references(args)
    request = batch_pb2.CreateBatchRequest(
        use_type=USE_TYPES[args.use_type],
        numbers=numbers,
        request_id=args.request_id,
        reference=reference,
        metadata=metadata,
    )
    for number, values in data.items():
        request.template_data[number].values.update(values)
    if args.content is not None:
        request.content = args.content
    else:
        request.template_id = args.template_id
    return request


async def _create(api: Api, args: argparse.Namespace, out: Output) -> int:
    created = await api.batches.CreateBatch(
        batch_request(args), metadata=api.metadata, timeout=api.timeout
    )
    out.item(created)
    if created.accepted_count == 0:
        print(f"smsgw: every number was rejected ({len(created.rejected)})", file=sys.stderr)
        return 1
    if not args.watch:
        return 0
    return await _follow(api, out, created.task_id)


async def _get(api: Api, args: argparse.Namespace, out: Output) -> int:
    batch = await api.batches.GetBatch(
        batch_pb2.GetBatchRequest(task_id=args.task_id), metadata=api.metadata, timeout=api.timeout
    )
    out.item(batch)
    return 0


async def _watch(api: Api, args: argparse.Namespace, out: Output) -> int:
    return await _follow(api, out, args.task_id)


async def _cancel(api: Api, args: argparse.Namespace, out: Output) -> int:
    batch = await api.batches.CancelBatch(
        batch_pb2.CancelBatchRequest(task_id=args.task_id),
        metadata=api.metadata,
        timeout=api.timeout,
    )
    out.item(batch)
    return 0


async def _messages(api: Api, args: argparse.Namespace, out: Output) -> int:
    page = await api.batches.ListBatchMessages(
        batch_pb2.ListBatchMessagesRequest(
            task_id=args.task_id, page_size=args.page_size, page_token=args.page_token
        ),
        metadata=api.metadata,
        timeout=api.timeout,
    )
    if out.format == "table":
        out.items(list(page.messages), MESSAGE_COLUMNS)
        if page.next_page_token:
            print(f"more: --page-token {page.next_page_token}", file=sys.stderr)
    else:
        out.item(page)
    return 0


async def _follow(api: Api, out: Output, task_id: str) -> int:
    final = await progress(api, task_id, sys.stderr)
    out.item(final)
    return 0 if final.status == common_pb2.BATCH_STATUS_SUCCEEDED else 1


async def progress(api: Api, task_id: str, to: TextIO) -> batch_pb2.Batch:
    """Shows the batch's progress on ``to`` (a bar redrawn in place on a terminal, a
    line per change otherwise) until it is final; returns the last snapshot."""
    last = batch_pb2.Batch()
    live = to.isatty()
    request = batch_pb2.WatchBatchRequest(task_id=task_id)
    async for batch in api.batches.WatchBatch(request, metadata=api.metadata):
        last = batch
        to.write(("\r" if live else "") + progress_line(batch) + ("" if live else "\n"))
        to.flush()
        if batch.status in FINAL_BATCH:
            break
    if live:
        to.write("\n")
    return last


def progress_line(batch: batch_pb2.Batch) -> str:
    """``[#####-----]  50%  500/1,000 final · sent 520 · delivered 480 · failed 20  EXECUTING``"""
    final = batch.delivered + batch.failed
    done = final / batch.total if batch.total else 1.0
    filled = round(BAR_WIDTH * done)
    status = common_pb2.BatchStatus.Name(batch.status).removeprefix("BATCH_STATUS_")
    return (
        f"[{'#' * filled}{'-' * (BAR_WIDTH - filled)}] {100 * done:3.0f}%  "
        f"{final:,}/{batch.total:,} final · sent {batch.sent:,} · delivered {batch.delivered:,}"
        f" · failed {batch.failed:,}  {status}"
    )
