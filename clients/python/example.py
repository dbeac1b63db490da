"""How to call smsgw from Python with the client package ``smsgw_client``.

Run it against a server (see clients/run.sh, which does all of this for you):

    pip install ./clients/python                             # the package, from a checkout
    export SMSGW_ADDR=127.0.0.1:50051
    export SMSGW_API_KEY=app_...  SMSGW_API_SECRET=sec_...   # smsgw account create NAME
    python clients/python/example.py

``smsgw_client.Client`` is an asyncio client: one channel, the credential on every
call, retries that follow the server's RetryInfo, the typed stubs of every service
(``client.messages``, ``client.verifications``, ...) and ``client.watch``, a status
stream that resumes from the last event across disconnects. The messages are the
generated package ``sms.v1``, installed with it. Rich error details come from
``grpcio-status`` and ``googleapis-common-protos``.

It sends a message, checks a verification code (a wrong one, then the right one),
shows a rejected request's google.rpc details, and follows the message's status
stream until the message is final. It exits 0 only if everything went as expected.
"""

from __future__ import annotations

import asyncio
import os
import sys

import grpc
import grpc.aio
from google.rpc import error_details_pb2
from sms.v1 import common_pb2, message_pb2, verification_pb2
from smsgw_client import FINAL_STATUSES, Client, rpc_status


def check(condition: bool, what: str) -> None:
    """The example's own assertions: a failed one ends the program with exit code 1."""
    if not condition:
        sys.exit(f"FAILED: {what}")


async def main() -> None:
    # A different number per example: codes to one number are limited to one a minute.
    verify_mobile = os.environ.get("SMSGW_VERIFY_MOBILE", "+8613800138001")

    # SMSGW_ADDR, SMSGW_API_KEY, SMSGW_API_SECRET. Every call carries
    # `authorization: Basic base64(api_key:api_secret)`.
    # TLS: Client(..., credentials=grpc.ssl_channel_credentials(...)).
    async with Client.from_env() as client:
        # 1. Send a message. It is stored durably before the answer comes back. The
        # client gives it a request_id, so a retry after a lost answer is stored once.
        sent = await client.messages.SendMessage(
            message_pb2.SendMessageRequest(
                mobile="+8613800138000",
                use_type=common_pb2.USE_TYPE_NOTIFICATION,
                text="Your order has shipped.",
            ),
            timeout=10,
        )
        print(f"sent message {sent.id} to {sent.to_number} ({sent.segments} segment(s))")
        check(sent.status == common_pb2.MESSAGE_STATUS_PENDING, "a new message is PENDING")

        # 2a. A verification code. We choose the code ourselves (`code`) so that the
        # example knows a wrong one; normally the server draws it and you omit `code`.
        otp = await client.verifications.SendVerification(
            verification_pb2.SendVerificationRequest(
                mobile=verify_mobile, scene="login", code="123456"
            ),
            timeout=10,
        )
        print(f"verification {otp.verify_id} sent to {verify_mobile}")

        # A wrong code is not an error: the answer is OK with valid=false and the
        # attempts left. (Expired or exhausted codes are FAILED_PRECONDITION errors.)
        wrong = await client.verifications.CheckVerification(
            verification_pb2.CheckVerificationRequest(
                verify_id=otp.verify_id, mobile=verify_mobile, code="654321"
            ),
            timeout=10,
        )
        print(f"wrong code: valid={wrong.valid}, {wrong.remaining_attempts} attempts left")
        check(not wrong.valid and wrong.remaining_attempts == 2, "a wrong code leaves 2 attempts")
        right = await client.verifications.CheckVerification(
            verification_pb2.CheckVerificationRequest(
                verify_id=otp.verify_id, mobile=verify_mobile, code="123456"
            ),
            timeout=10,
        )
        print(f"right code: valid={right.valid}")
        check(right.valid, "the right code verifies")

        # 2b. A bad request: INVALID_ARGUMENT with google.rpc details (not retried: only
        # RESOURCE_EXHAUSTED with RetryInfo and UNAVAILABLE are). The server puts a
        # google.rpc.Status in the `grpc-status-details-bin` trailer; rpc_status
        # decodes it, and each detail is a google.protobuf.Any to unpack.
        try:
            await client.messages.SendMessage(
                message_pb2.SendMessageRequest(
                    mobile="12", use_type=common_pb2.USE_TYPE_NOTIFICATION, text="x"
                ),
                timeout=10,
            )
            check(False, "an invalid mobile is refused")
        except grpc.aio.AioRpcError as error:
            print(f"bad request: {error.code().name}: {error.details()}")
            check(error.code() == grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")
            status = rpc_status(error.trailing_metadata())
            check(status is not None, "the error carries google.rpc.Status details")
            assert status is not None
            fields, reason = [], ""
            for detail in status.details:
                if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                    bad = error_details_pb2.BadRequest()
                    detail.Unpack(bad)
                    for violation in bad.field_violations:
                        print(f"  field {violation.field}: {violation.description}")
                        fields.append(violation.field)
                elif detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                    info = error_details_pb2.ErrorInfo()
                    detail.Unpack(info)
                    print(f"  reason {info.reason} (domain {info.domain}) {dict(info.metadata)}")
                    reason = info.reason
            check("mobile" in fields, "the BadRequest names the field `mobile`")
            check(reason != "", "the ErrorInfo has a reason")
            check(status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0], "same code")

        # 3. Follow the message until it is final. With ids the stream first sends the
        # current state, then each change, and ends at a final status; client.watch
        # opens it again from the last event_id if the connection breaks.
        last = common_pb2.MESSAGE_STATUS_UNSPECIFIED
        async for event in client.watch([sent.id]):
            last = event.status
            print(
                f"event {event.event_id}: {event.message_id} "
                f"{common_pb2.MessageStatus.Name(event.status)} {event.error_code}".rstrip()
            )
        check(last in FINAL_STATUSES, "the stream ends at a final status")
        check(last == common_pb2.MESSAGE_STATUS_DELIVERED, "the message is DELIVERED")

    print("python example: OK")


if __name__ == "__main__":
    asyncio.run(main())
