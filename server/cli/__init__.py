"""The ``smsgw`` command: one module per group of subcommands, each adding its
commands to the parser with a ``handler`` that runs it.

- serve.py: serve, migrate, healthcheck     - admin.py: account, credential
- emulate.py: provider emulators            - messages.py: send, status, watch
- batches.py: batch …                       - templates.py: template …
- verify.py: verify send|check              - inbound.py: inbound list|watch|inject
- webhooks.py: webhook …                    - client.py, output.py, settings.py: shared
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable, Sequence
from importlib import metadata

from server.cli import (
    admin,
    batches,
    emulate,
    inbound,
    messages,
    serve,
    templates,
    verify,
    webhooks,
)
from server.cli.settings import UsageError

# 128 + SIGPIPE, what a shell reports for a command whose reader went away.
BROKEN_PIPE_EXIT = 141
Handler = Callable[[argparse.Namespace], int]


def version() -> str:
    try:
        return metadata.version("smsgw")
    except metadata.PackageNotFoundError:
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="smsgw", description="Self-hosted SMS gateway (gRPC).")
    parser.add_argument("--version", action="version", version=f"smsgw {version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in (serve, admin, messages, batches, templates, verify, webhooks, inbound, emulate):
        group.add_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except UsageError as exc:
        print(f"smsgw: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader (``| head``) is gone: stop quietly, and keep Python from
        # complaining when it flushes stdout at exit.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return BROKEN_PIPE_EXIT
    except KeyboardInterrupt:
        return 130
