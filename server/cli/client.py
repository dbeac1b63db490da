"""What the client commands share: a connection to a running server, its stubs and
credential, and one place that turns failures into exit codes.

A client command is ``async def call(api: Api, args, out: Output) -> int``; it is run
by :func:`client_command`. A failed call prints its code, reason and each bad field on
stderr and exits 1; a usage problem found before any call exits 2.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

import grpc
from sms.v1 import (
    batch_pb2_grpc,
    common_pb2,
    inbound_pb2_grpc,
    message_pb2_grpc,
    template_pb2_grpc,
    verification_pb2_grpc,
    webhook_pb2_grpc,
)

from server.cli.output import Output, add_output_option, describe_error
from server.cli.settings import UsageError, client_metadata, client_target, open_channel

USE_TYPES = {
    "verification": common_pb2.USE_TYPE_VERIFICATION,
    "notification": common_pb2.USE_TYPE_NOTIFICATION,
    "marketing": common_pb2.USE_TYPE_MARKETING,
}
CALL_TIMEOUT = 30.0


@dataclass(frozen=True)
class Api:
    """The stubs of one connection and the credential every call carries."""

    messages: message_pb2_grpc.MessageServiceAsyncStub
    batches: batch_pb2_grpc.BatchServiceAsyncStub
    templates: template_pb2_grpc.TemplateServiceAsyncStub
    verifications: verification_pb2_grpc.VerificationServiceAsyncStub
    webhooks: webhook_pb2_grpc.WebhookServiceAsyncStub
    inbound: inbound_pb2_grpc.InboundServiceAsyncStub
    metadata: tuple[tuple[str, str], ...]
    timeout: float = CALL_TIMEOUT

    @classmethod
    def over(cls, channel: grpc.aio.Channel, metadata: tuple[tuple[str, str], ...]) -> Api:
        return cls(
            messages=message_pb2_grpc.MessageServiceStub(channel),
            batches=batch_pb2_grpc.BatchServiceStub(channel),
            templates=template_pb2_grpc.TemplateServiceStub(channel),
            verifications=verification_pb2_grpc.VerificationServiceStub(channel),
            webhooks=webhook_pb2_grpc.WebhookServiceStub(channel),
            inbound=inbound_pb2_grpc.InboundServiceStub(channel),
            metadata=metadata,
        )


Call = Callable[[Api, argparse.Namespace, Output], Awaitable[int]]


def add_connection_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--addr", help="host:port (default SMSGW_ADDR or SMSGW_GRPC_ADDR)")
    add_output_option(parser)


def client_command(parser: argparse.ArgumentParser, call: Call) -> None:
    """Makes ``parser``'s command run ``call`` against a running server."""
    add_connection_options(parser)
    parser.set_defaults(handler=lambda args: run_client(call, args))


def run_client(call: Call, args: argparse.Namespace, env: Mapping[str, str] | None = None) -> int:
    env = os.environ if env is None else env
    try:
        return asyncio.run(_connect_and_call(call, args, env))
    except grpc.aio.AioRpcError as exc:
        print(describe_error(exc), file=sys.stderr)
        return 1


async def _connect_and_call(call: Call, args: argparse.Namespace, env: Mapping[str, str]) -> int:
    metadata = client_metadata(env)
    async with open_channel(client_target(args.addr, env), env) as channel:
        return await call(Api.over(channel, metadata), args, Output(args.output))


def pairs(items: Sequence[str], option: str = "--data") -> dict[str, str]:
    """``NAME=VALUE`` arguments as a dict."""
    values: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise UsageError(f"{option} {item!r}: use NAME=VALUE")
        values[name] = value
    return values


def reference_options(parser: argparse.ArgumentParser) -> None:
    """The caller's reference and metadata, echoed in status answers and events."""
    parser.add_argument("--reference", default="", help="your own id (at most 128 characters)")
    parser.add_argument(
        "--metadata",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a key-value pair echoed with the status (repeats; at most 10)",
    )


def references(args: argparse.Namespace) -> tuple[str, dict[str, str]]:
    """``--reference`` and ``--metadata`` as the request fields take them."""
    return args.reference, pairs(args.metadata, "--metadata")


def use_type_option(parser: argparse.ArgumentParser, default: str = "notification") -> None:
    parser.add_argument("--use-type", choices=sorted(USE_TYPES), default=default)
