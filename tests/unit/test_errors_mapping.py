"""The one error table: each domain error becomes its status with AIP-193 details."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from server.api.errors import STATUS_BY_ERROR, internal_status, status_code_for, to_status
from server.domain import errors


def _details(status: grpc.Status) -> status_pb2.Status:
    ((key, value),) = status.trailing_metadata
    assert key == "grpc-status-details-bin"
    parsed = status_pb2.Status()
    parsed.ParseFromString(value)
    return parsed


def test_invalid_argument_carries_bad_request_naming_each_field() -> None:
    error = errors.InvalidArgument(
        [errors.FieldViolation("mobile", "bad"), errors.FieldViolation("text", "empty")]
    )
    status = to_status(error, "req-1")
    assert status.code == grpc.StatusCode.INVALID_ARGUMENT
    details = _details(status)
    request = error_details_pb2.BadRequest()
    info = error_details_pb2.ErrorInfo()
    assert details.details[0].Unpack(info)
    assert details.details[1].Unpack(request)
    assert info.reason == "INVALID_ARGUMENT" and info.metadata["request_id"] == "req-1"
    assert [v.field for v in request.field_violations] == ["mobile", "text"]


def test_resource_exhausted_carries_retry_info_with_the_real_wait() -> None:
    status = to_status(errors.ResourceExhausted("slow down", retry_after=42.5), "r")
    assert status.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    retry = error_details_pb2.RetryInfo()
    assert _details(status).details[1].Unpack(retry)
    assert retry.retry_delay.seconds == 42 and retry.retry_delay.nanos == 500_000_000


def test_resource_exhausted_names_the_quota_it_hit() -> None:
    error = errors.ResourceExhausted(
        "slow down",
        retry_after=1,
        reason="ACCOUNT_SEND_RATE",
        quota_subject="account:7",
        quota_description="at most 5 send calls a second",
    )
    failure = error_details_pb2.QuotaFailure()
    assert _details(to_status(error, "r")).details[2].Unpack(failure)
    assert [(v.subject, v.description) for v in failure.violations] == [
        ("account:7", "at most 5 send calls a second")
    ]


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (errors.NotFound("x"), grpc.StatusCode.NOT_FOUND),
        (errors.AlreadyExists("x"), grpc.StatusCode.ALREADY_EXISTS),
        (errors.FailedPrecondition("x"), grpc.StatusCode.FAILED_PRECONDITION),
        (errors.PermissionDenied("x"), grpc.StatusCode.PERMISSION_DENIED),
        (errors.Unauthenticated("x"), grpc.StatusCode.UNAUTHENTICATED),
        (errors.Unavailable("x"), grpc.StatusCode.UNAVAILABLE),
    ],
)
def test_every_domain_error_has_its_status(
    error: errors.DomainError, code: grpc.StatusCode
) -> None:
    assert status_code_for(error) == code
    assert to_status(error, "r").details == error.message


def test_every_domain_error_class_is_in_the_table() -> None:
    subclasses = set(errors.DomainError.__subclasses__())
    assert subclasses == set(STATUS_BY_ERROR)


def test_internal_status_reveals_only_the_request_id() -> None:
    status = internal_status("abc123")
    assert status.code == grpc.StatusCode.INTERNAL
    assert status.details == "internal error; request id abc123"
