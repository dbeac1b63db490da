"""``smsgw send``, ``smsgw watch`` and ``smsgw batch``: the API from a shell.

Plain gRPC clients of a running server, like any other caller: the address from
``--addr`` (else ``SMSGW_ADDR``, else ``SMSGW_GRPC_ADDR``), the credential from
``SMSGW_API_KEY`` and ``SMSGW_API_SECRET`` (environment only, so the secret stays out
of shell history and the process list), TLS when ``SMSGW_TLS_CA`` names the CA to
trust (with ``SMSGW_TLS_CLIENT_CERT``/``KEY`` for mutual TLS). Results are JSON on
stdout; errors go to stderr with their code, reason and each bad field, exit 1.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO, cast

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from sms.v1 import (
    batch_pb2,
    batch_pb2_grpc,
    common_pb2,
    message_pb2,
    message_pb2_grpc,
)

from server.tls import TlsConfigError, client_channel

USE_TYPES = {
    "verification": common_pb2.USE_TYPE_VERIFICATION,
    "notification": common_pb2.USE_TYPE_NOTIFICATION,
    "marketing": common_pb2.USE_TYPE_MARKETING,
}
FINAL_BATCH = {
    common_pb2.BATCH_STATUS_SUCCEEDED,
    common_pb2.BATCH_STATUS_FAILED,
    common_pb2.BATCH_STATUS_CANCELLED,
}
CALL_TIMEOUT = 30.0
BAR_WIDTH = 30


class ClientError(Exception):
    """A usage problem found before any call (exit 2)."""


def add_client_commands(commands: Any) -> None:
    """Adds send, watch and batch to the ``smsgw`` parser's subcommands."""
    send = commands.add_parser("send", help="send one message (SMSGW_API_KEY/SECRET)")
    send.add_argument("mobile", help="E.164, e.g. +8613800138000")
    send.add_argument("text", nargs="?", help="the text (or --template-id)")
    send.add_argument("--template-id", type=int)
    send.add_argument("--data", action="append", default=[], metavar="NAME=VALUE")
    _common(send)
    send.add_argument("--watch", action="store_true", help="then follow it to a final status")

    watch = commands.add_parser(
        "watch", help="follow status events (of IDS, or all the account's) as JSON lines"
    )
    watch.add_argument("ids", nargs="*", help="message ids; none: every message")
    watch.add_argument("--after-event-id", type=int, default=0, help="resume after this event")
    watch.add_argument("--addr", help="host:port (default SMSGW_ADDR or SMSGW_GRPC_ADDR)")

    batch = commands.add_parser("batch", help="create and follow batches").add_subparsers(
        dest="batch_action", required=True
    )
    create = batch.add_parser("create", help="send one content to many numbers")
    create.add_argument("--content", help="text, with #variable# placeholders")
    create.add_argument("--template-id", type=int)
    create.add_argument("--number", action="append", default=[], help="a number (repeats)")
    create.add_argument("--numbers-file", help="a file with one number per line ('-': stdin)")
    _common(create)
    create.add_argument("--watch", action="store_true", help="then show its progress")
    for name, text in (("get", "a batch's counts"), ("watch", "a batch's progress")):
        sub = batch.add_parser(name, help=text)
        sub.add_argument("task_id")
        sub.add_argument("--addr", help="host:port (default SMSGW_ADDR or SMSGW_GRPC_ADDR)")


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--use-type", choices=sorted(USE_TYPES), default="notification")
    parser.add_argument("--request-id", default="", help="idempotency key")
    parser.add_argument("--addr", help="host:port (default SMSGW_ADDR or SMSGW_GRPC_ADDR)")


def run_client(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> int:
    env = os.environ if env is None else env
    try:
        return asyncio.run(_run(args, env))
    except ClientError as exc:
        print(f"smsgw: {exc}", file=sys.stderr)
        return 2
    except grpc.aio.AioRpcError as exc:
        print(describe_error(exc), file=sys.stderr)
        return 1


async def _run(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    metadata = _metadata(env)
    async with _channel(args.addr or env.get("SMSGW_ADDR") or _grpc_addr(env), env) as channel:
        messages = message_pb2_grpc.MessageServiceStub(channel)
        batches = batch_pb2_grpc.BatchServiceStub(channel)
        if args.command == "send":
            reply = await messages.SendMessage(
                _send_request(args), metadata=metadata, timeout=CALL_TIMEOUT
            )
            _print(reply)
            if args.watch:
                await _follow(messages, metadata, [reply.id], 0)
            return 0
        if args.command == "watch":
            await _follow(messages, metadata, args.ids, args.after_event_id)
            return 0
        if args.batch_action == "create":
            created = await batches.CreateBatch(
                _batch_request(args), metadata=metadata, timeout=CALL_TIMEOUT
            )
            _print(created)
            if not args.watch:
                return 0
            task_id = created.task_id
        else:
            task_id = args.task_id
        if args.batch_action == "get":
            batch = await batches.GetBatch(
                batch_pb2.GetBatchRequest(task_id=task_id), metadata=metadata, timeout=CALL_TIMEOUT
            )
            _print(batch)
            return 0
        final = await _progress(batches, metadata, task_id, sys.stderr)
        _print(final)
        return 0 if final.status == common_pb2.BATCH_STATUS_SUCCEEDED else 1


def _grpc_addr(env: Mapping[str, str]) -> str:
    host, _, port = env.get("SMSGW_GRPC_ADDR", "127.0.0.1:50051").rpartition(":")
    return f"{'127.0.0.1' if host in ('0.0.0.0', '[::]', '::') else host}:{port}"


def _metadata(env: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    key, secret = env.get("SMSGW_API_KEY"), env.get("SMSGW_API_SECRET")
    if not key or not secret:
        raise ClientError(
            "set SMSGW_API_KEY and SMSGW_API_SECRET (smsgw account create prints them)"
        )
    token = base64.b64encode(f"{key}:{secret}".encode()).decode()
    return (("authorization", f"Basic {token}"),)


def _channel(target: str, env: Mapping[str, str]) -> grpc.aio.Channel:
    try:
        return client_channel(target, env)
    except TlsConfigError as exc:
        raise ClientError(str(exc)) from None


def _send_request(args: argparse.Namespace) -> message_pb2.SendMessageRequest:
    if (args.text is None) == (args.template_id is None):
        raise ClientError("give the text or --template-id (one of them)")
    request = message_pb2.SendMessageRequest(
        mobile=args.mobile,
        use_type=USE_TYPES[args.use_type],
        data=_pairs(args.data),
        request_id=args.request_id,
    )
    if args.text is not None:
        request.text = args.text
    else:
        request.template_id = args.template_id
    return request


def _batch_request(args: argparse.Namespace) -> batch_pb2.CreateBatchRequest:
    if (args.content is None) == (args.template_id is None):
        raise ClientError("give --content or --template-id (one of them)")
    numbers = list(args.number)
    if args.numbers_file:
        numbers += _read_numbers(args.numbers_file)
    if not numbers:
        raise ClientError("give numbers with --number or --numbers-file")
    request = batch_pb2.CreateBatchRequest(
        use_type=USE_TYPES[args.use_type], numbers=numbers, request_id=args.request_id
    )
    if args.content is not None:
        request.content = args.content
    else:
        request.template_id = args.template_id
    return request


def _read_numbers(path: str) -> list[str]:
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ClientError(f"--numbers-file: cannot read {path} ({exc.strerror})") from None
    return [line.strip() for line in text.splitlines() if line.strip()]


def _pairs(items: Sequence[str]) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ClientError(f"--data {item!r}: use NAME=VALUE")
        pairs[name] = value
    return pairs


async def _follow(
    stub: message_pb2_grpc.MessageServiceStub,
    metadata: tuple[tuple[str, str], ...],
    ids: Sequence[str],
    after: int,
) -> None:
    """Prints each status event as a JSON line until the server ends the stream."""
    request = message_pb2.WatchMessageStatusRequest(ids=list(ids), after_event_id=after)
    # The generated stubs are typed for the blocking API; on an aio channel a server
    # stream is an async iterator.
    events = cast(
        AsyncIterator[message_pb2.MessageStatusEvent],
        stub.WatchMessageStatus(request, metadata=metadata),
    )
    async for event in events:
        _print(event, indent=None)


async def _progress(
    stub: batch_pb2_grpc.BatchServiceStub,
    metadata: tuple[tuple[str, str], ...],
    task_id: str,
    out: TextIO,
) -> batch_pb2.Batch:
    """Shows the batch's progress on ``out`` (a bar redrawn in place on a terminal, a
    line per change otherwise) until it is final; returns the last snapshot."""
    last = batch_pb2.Batch()
    live = out.isatty()
    snapshots = cast(
        AsyncIterator[batch_pb2.Batch],
        stub.WatchBatch(batch_pb2.WatchBatchRequest(task_id=task_id), metadata=metadata),
    )
    async for batch in snapshots:
        last = batch
        out.write(("\r" if live else "") + progress_line(batch) + ("" if live else "\n"))
        out.flush()
        if batch.status in FINAL_BATCH:
            break
    if live:
        out.write("\n")
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


def describe_error(exc: grpc.aio.AioRpcError) -> str:
    """The code, message, reason and every bad field of a failed call."""
    lines = [f"smsgw: {exc.code().name}: {exc.details()}"]
    for key, value in exc.trailing_metadata() or ():
        if key != "grpc-status-details-bin" or not isinstance(value, bytes):
            continue
        status = status_pb2.Status.FromString(value)
        for detail in status.details:
            info = error_details_pb2.ErrorInfo()
            bad = error_details_pb2.BadRequest()
            retry = error_details_pb2.RetryInfo()
            if detail.Unpack(info):
                lines.append(f"  reason: {info.reason}")
            elif detail.Unpack(bad):
                lines += [f"  {v.field}: {v.description}" for v in bad.field_violations]
            elif detail.Unpack(retry):
                wait = retry.retry_delay.seconds + retry.retry_delay.nanos / 1e9
                lines.append(f"  retry after {wait:.1f} s")
    return "\n".join(lines)


def _print(message: Message, indent: int | None = 2) -> None:
    print(json.dumps(json_format.MessageToDict(message), indent=indent, ensure_ascii=False))
