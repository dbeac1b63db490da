"""Reading rich error details (google.rpc.Status) from an AioRpcError, as callers do."""

from __future__ import annotations

import grpc
from google.rpc import error_details_pb2, status_pb2


def details(err: grpc.aio.AioRpcError) -> status_pb2.Status:
    for key, value in err.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            status = status_pb2.Status()
            status.ParseFromString(value)
            return status
    raise AssertionError("no rich error details in the trailers")


def bad_fields(err: grpc.aio.AioRpcError) -> set[str]:
    fields: set[str] = set()
    for any_detail in details(err).details:
        if any_detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            request = error_details_pb2.BadRequest()
            any_detail.Unpack(request)
            fields.update(v.field for v in request.field_violations)
    return fields


def reason(err: grpc.aio.AioRpcError) -> str:
    for any_detail in details(err).details:
        if any_detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            any_detail.Unpack(info)
            return str(info.reason)
    raise AssertionError("no ErrorInfo in the details")
