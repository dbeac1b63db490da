"""``smsgw verify send|check``: VerificationService from a shell."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from sms.v1 import common_pb2, verification_pb2

from server.cli.client import Api, client_command, reference_options, references
from server.cli.output import Output
from server.cli.settings import UsageError

CHANNELS = {"sms": common_pb2.CHANNEL_SMS, "voice": common_pb2.CHANNEL_VOICE}


def add_commands(commands: Any) -> None:
    verify = commands.add_parser(
        "verify", help="send a verification code, check what the user typed"
    ).add_subparsers(dest="verify_action", required=True)
    send = verify.add_parser("send", help="send a code; prints its verify_id")
    send.add_argument("mobile", help="E.164, e.g. +8613800138000")
    send.add_argument("--code-length", type=int, default=0, help="4-8 (default 6)")
    send.add_argument("--expire-minutes", type=int, default=0, help="default 5")
    send.add_argument("--scene", default="", help="what the code is for, e.g. login")
    send.add_argument("--template-id", type=int, default=0)
    send.add_argument("--channel", choices=sorted(CHANNELS), default="sms")
    send.add_argument(
        "--code", default="", help="your own code ('-': read it from stdin) instead of a random one"
    )
    send.add_argument("--request-id", default="", help="idempotency key")
    reference_options(send)
    client_command(send, _send)
    check = verify.add_parser("check", help="check a code: exit 0 if valid, 1 if not")
    check.add_argument("verify_id")
    check.add_argument("mobile")
    check.add_argument("code", help="the code the user typed ('-': read it from stdin)")
    client_command(check, _check)


def _code(value: str) -> str:
    if value != "-":
        return value
    code = sys.stdin.readline().strip()
    if not code:
        raise UsageError("no code on stdin")
    return code


async def _send(api: Api, args: argparse.Namespace, out: Output) -> int:
    reference, metadata = references(args)
    request = verification_pb2.SendVerificationRequest(
        mobile=args.mobile,
        code_length=args.code_length,
        expire_minutes=args.expire_minutes,
        scene=args.scene,
        template_id=args.template_id,
        channel=CHANNELS[args.channel],
        code=_code(args.code),
        request_id=args.request_id,
        reference=reference,
        metadata=metadata,
    )
    sent = await api.verifications.SendVerification(
        request, metadata=api.metadata, timeout=api.timeout
    )
    out.item(sent)
    return 0


async def _check(api: Api, args: argparse.Namespace, out: Output) -> int:
    request = verification_pb2.CheckVerificationRequest(
        verify_id=args.verify_id, mobile=args.mobile, code=_code(args.code)
    )
    reply = await api.verifications.CheckVerification(
        request, metadata=api.metadata, timeout=api.timeout
    )
    out.item(reply, all_fields=True)
    return 0 if reply.valid else 1
