"""How to call smsgw from Python with the generated package `sms.v1`.

Run it against a server (see clients/run.sh, which does all of this for you):

    export SMSGW_ADDR=127.0.0.1:50051
    export SMSGW_API_KEY=app_...  SMSGW_API_SECRET=sec_...   # smsgw account create NAME
    .venv/bin/python clients/python/example.py

The package `sms.v1` is the protoc output in generated/ (installed into the venv by
`pip install -e .`); elsewhere, generate it from proto/ with grpcio-tools. Rich error
details come from `grpcio-status` and `googleapis-common-protos`.

It sends a message, checks a verification code (a wrong one, then the right one),
shows a rejected request's google.rpc details, and follows the message's status
stream until the message is final. It exits 0 only if everything went as expected.
"""

from __future__ import annotations

import base64
import os
import sys

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from sms.v1 import (
    common_pb2,
    message_pb2,
    message_pb2_grpc,
    verification_pb2,
    verification_pb2_grpc,
)

# Statuses after which a message never changes again (API.md).
FINAL = {
    common_pb2.MESSAGE_STATUS_DELIVERED,
    common_pb2.MESSAGE_STATUS_UNDELIVERED,
    common_pb2.MESSAGE_STATUS_FAILED,
    common_pb2.MESSAGE_STATUS_REJECTED,
    common_pb2.MESSAGE_STATUS_CANCELLED,
}


def check(condition: bool, what: str) -> None:
    """The example's own assertions: a failed one ends the program with exit code 1."""
    if not condition:
        sys.exit(f"FAILED: {what}")


def main() -> None:
    addr = os.environ.get("SMSGW_ADDR", "127.0.0.1:50051")
    key, secret = os.environ["SMSGW_API_KEY"], os.environ["SMSGW_API_SECRET"]
    # A different number per example: codes to one number are limited to one a minute.
    verify_mobile = os.environ.get("SMSGW_VERIFY_MOBILE", "+8613800138001")

    # Every call carries `authorization: Basic base64(api_key:api_secret)` metadata.
    token = base64.b64encode(f"{key}:{secret}".encode()).decode()
    auth = (("authorization", f"Basic {token}"),)

    # One channel (one HTTP/2 connection) for all calls; TLS: grpc.secure_channel.
    with grpc.insecure_channel(addr) as channel:
        messages = message_pb2_grpc.MessageServiceStub(channel)
        verifications = verification_pb2_grpc.VerificationServiceStub(channel)

        # 1. Send a message. It is stored durably before the answer comes back.
        sent = messages.SendMessage(
            message_pb2.SendMessageRequest(
                mobile="+8613800138000",
                use_type=common_pb2.USE_TYPE_NOTIFICATION,
                text="Your order has shipped.",
            ),
            metadata=auth,
            timeout=10,
        )
        print(f"sent message {sent.id} to {sent.to_number} ({sent.segments} segment(s))")
        check(sent.status == common_pb2.MESSAGE_STATUS_PENDING, "a new message is PENDING")

        # 2a. A verification code. We choose the code ourselves (`code`) so that the
        # example knows a wrong one; normally the server draws it and you omit `code`.
        otp = verifications.SendVerification(
            verification_pb2.SendVerificationRequest(
                mobile=verify_mobile, scene="login", code="123456"
            ),
            metadata=auth,
            timeout=10,
        )
        print(f"verification {otp.verify_id} sent to {verify_mobile}")

        # A wrong code is not an error: the answer is OK with valid=false and the
        # attempts left. (Expired or exhausted codes are FAILED_PRECONDITION errors.)
        wrong = verifications.CheckVerification(
            verification_pb2.CheckVerificationRequest(
                verify_id=otp.verify_id, mobile=verify_mobile, code="654321"
            ),
            metadata=auth,
            timeout=10,
        )
        print(f"wrong code: valid={wrong.valid}, {wrong.remaining_attempts} attempts left")
        check(not wrong.valid and wrong.remaining_attempts == 2, "a wrong code leaves 2 attempts")
        right = verifications.CheckVerification(
            verification_pb2.CheckVerificationRequest(
                verify_id=otp.verify_id, mobile=verify_mobile, code="123456"
            ),
            metadata=auth,
            timeout=10,
        )
        print(f"right code: valid={right.valid}")
        check(right.valid, "the right code verifies")

        # 2b. A bad request: INVALID_ARGUMENT with google.rpc details. The server puts a
        # google.rpc.Status in the `grpc-status-details-bin` trailer; rpc_status.from_call
        # decodes it, and each detail is a google.protobuf.Any to unpack.
        try:
            messages.SendMessage(
                message_pb2.SendMessageRequest(
                    mobile="12", use_type=common_pb2.USE_TYPE_NOTIFICATION, text="x"
                ),
                metadata=auth,
                timeout=10,
            )
            check(False, "an invalid mobile is refused")
        except grpc.RpcError as error:
            call: grpc.Call = error  # type: ignore[assignment]
            print(f"bad request: {call.code().name}: {call.details()}")
            check(call.code() == grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")
            status = rpc_status.from_call(call)
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

        # 3. Follow the message until it is final. With `ids` the stream first sends
        # the current state, then each change, and ends by itself at a final status.
        last = common_pb2.MESSAGE_STATUS_UNSPECIFIED
        stream = messages.WatchMessageStatus(
            message_pb2.WatchMessageStatusRequest(ids=[sent.id]), metadata=auth, timeout=60
        )
        for event in stream:
            last = event.status
            print(
                f"event {event.event_id}: {event.message_id} "
                f"{common_pb2.MessageStatus.Name(event.status)} {event.error_code}".rstrip()
            )
        check(last in FINAL, "the stream ends at a final status")
        check(last == common_pb2.MESSAGE_STATUS_DELIVERED, "the message is DELIVERED")

    print("python example: OK")


if __name__ == "__main__":
    main()
