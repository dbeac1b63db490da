"""The Python client package's retry rules (clients/python, smsgw_client.retry):
which answers are tried again, after how long, and the request_id a send gets."""

from __future__ import annotations

import grpc
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2, status_pb2
from sms.v1 import common_pb2, message_pb2, template_pb2
from smsgw_client.retry import (
    STATUS_DETAILS_KEY,
    RetryPolicy,
    retry_delay,
    retry_info_delay,
    with_request_id,
)

POLICY = RetryPolicy(attempts=3, backoff_base=0.5, backoff_max=4.0, max_delay=10.0)


def trailer(delay: float | None) -> tuple[tuple[str, bytes], ...]:
    """Trailing metadata as smsgw sends it: a google.rpc.Status with ErrorInfo and,
    when given, RetryInfo."""
    status = status_pb2.Status(code=8, message="slow down")
    info = error_details_pb2.ErrorInfo(reason="MOBILE_INTERVAL", domain="smsgw")
    status.details.add().Pack(info)
    if delay is not None:
        retry = error_details_pb2.RetryInfo(
            retry_delay=duration_pb2.Duration(seconds=int(delay), nanos=int(delay % 1 * 1e9))
        )
        status.details.add().Pack(retry)
    return ((STATUS_DETAILS_KEY, status.SerializeToString()),)


def test_the_retry_info_delay_is_read_from_the_status_trailer() -> None:
    assert retry_info_delay(trailer(2.5)) == 2.5
    assert retry_info_delay(trailer(None)) is None
    assert retry_info_delay(()) is None


def test_resource_exhausted_is_retried_only_with_retry_info_and_after_its_delay() -> None:
    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    assert retry_delay(POLICY, code, trailer(1.25), retry=0) == 1.25
    assert retry_delay(POLICY, code, trailer(None), retry=0) is None


def test_unavailable_waits_its_retry_info_or_a_bounded_backoff() -> None:
    code = grpc.StatusCode.UNAVAILABLE
    assert retry_delay(POLICY, code, trailer(0.75), retry=1) == 0.75
    for retry in (0, 1):
        delay = retry_delay(POLICY, code, (), retry)
        assert delay is not None and 0 <= delay <= min(4.0, 0.5 * 2**retry)


def test_no_retry_past_the_attempts_or_the_longest_delay_or_for_other_codes() -> None:
    assert retry_delay(POLICY, grpc.StatusCode.UNAVAILABLE, trailer(1), retry=2) is None
    assert retry_delay(POLICY, grpc.StatusCode.RESOURCE_EXHAUSTED, trailer(60), retry=0) is None
    for code in (
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.INTERNAL,
    ):
        assert retry_delay(POLICY, code, trailer(1), retry=0) is None


def test_a_send_without_request_id_gets_one_and_a_given_one_is_kept() -> None:
    request = message_pb2.SendMessageRequest(
        mobile="+8613800138000", text="hi", use_type=common_pb2.USE_TYPE_NOTIFICATION
    )
    filled = with_request_id(request)
    assert len(filled.request_id) == 32 and request.request_id == ""
    assert filled.mobile == request.mobile
    assert with_request_id(filled).request_id == filled.request_id
    # A request with no such field is passed as it is.
    other = template_pb2.GetTemplateRequest(id=1)
    assert with_request_id(other) is other
