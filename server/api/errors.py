"""The one table that maps domain errors to gRPC status codes and rich details.

Details follow AIP-193: every error carries a ``google.rpc.ErrorInfo`` (reason,
domain, request id); INVALID_ARGUMENT adds ``BadRequest`` naming each field;
RESOURCE_EXHAUSTED adds ``RetryInfo`` and ``QuotaFailure``; UNAVAILABLE adds ``RetryInfo``.
"""

from __future__ import annotations

import math
from typing import cast

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from server.domain.errors import (
    AlreadyExists,
    DomainError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)

ERROR_DOMAIN = "smsgw"

STATUS_BY_ERROR: dict[type[DomainError], grpc.StatusCode] = {
    InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    NotFound: grpc.StatusCode.NOT_FOUND,
    AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Unavailable: grpc.StatusCode.UNAVAILABLE,
}


def status_code_for(error: DomainError) -> grpc.StatusCode:
    for cls in type(error).__mro__:
        if issubclass(cls, DomainError) and cls in STATUS_BY_ERROR:
            return STATUS_BY_ERROR[cls]
    return grpc.StatusCode.INTERNAL


def _pack(message: Message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def _retry_delay(seconds: float) -> duration_pb2.Duration:
    whole = math.floor(seconds)
    return duration_pb2.Duration(seconds=whole, nanos=int((seconds - whole) * 1e9))


def to_status(error: DomainError, request_id: str) -> grpc.Status:
    code = status_code_for(error)
    details = [
        _pack(
            error_details_pb2.ErrorInfo(
                reason=error.reason, domain=ERROR_DOMAIN, metadata={"request_id": request_id}
            )
        )
    ]
    if isinstance(error, InvalidArgument):
        details.append(
            _pack(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(
                            field=v.field, description=v.description
                        )
                        for v in error.violations
                    ]
                )
            )
        )
    if isinstance(error, ResourceExhausted):
        details.append(
            _pack(error_details_pb2.RetryInfo(retry_delay=_retry_delay(error.retry_after)))
        )
        details.append(
            _pack(
                error_details_pb2.QuotaFailure(
                    violations=[
                        error_details_pb2.QuotaFailure.Violation(
                            subject=error.quota_subject or error.reason.lower(),
                            description=error.quota_description,
                        )
                    ]
                )
            )
        )
    if isinstance(error, Unavailable):
        details.append(_pack(error_details_pb2.RetryInfo(retry_delay=_retry_delay(1.0))))
    return cast(
        grpc.Status,
        rpc_status.to_status(
            status_pb2.Status(code=code.value[0], message=error.message, details=details)
        ),
    )


def internal_status(request_id: str) -> grpc.Status:
    message = f"internal error; request id {request_id}"
    return cast(
        grpc.Status,
        rpc_status.to_status(
            status_pb2.Status(
                code=code_pb2.INTERNAL,
                message=message,
                details=[
                    _pack(
                        error_details_pb2.ErrorInfo(
                            reason="INTERNAL",
                            domain=ERROR_DOMAIN,
                            metadata={"request_id": request_id},
                        )
                    )
                ],
            )
        ),
    )
