"""The errors the domain raises. api/errors.py maps each class to one gRPC status.

Every error carries a stable ``reason`` (UPPER_SNAKE_CASE, sent to callers in
``google.rpc.ErrorInfo``) and a message that is safe to show to the caller.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FieldViolation:
    """One bad field of a request, as google.rpc.BadRequest names it."""

    field: str
    description: str


class DomainError(Exception):
    """Base of every error that is the caller's business (never INTERNAL)."""

    reason: str = "ERROR"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason


class InvalidArgument(DomainError):
    """The request is malformed; ``violations`` names each bad field."""

    reason = "INVALID_ARGUMENT"

    def __init__(
        self, violations: list[FieldViolation] | FieldViolation, *, reason: str | None = None
    ) -> None:
        if isinstance(violations, FieldViolation):
            violations = [violations]
        self.violations = violations
        message = "; ".join(f"{v.field}: {v.description}" for v in violations)
        super().__init__(message or "invalid request", reason=reason)

    @classmethod
    def field(cls, field: str, description: str, *, reason: str | None = None) -> InvalidArgument:
        return cls([FieldViolation(field, description)], reason=reason)


class NotFound(DomainError):
    """The resource does not exist, or belongs to another account."""

    reason = "NOT_FOUND"


class AlreadyExists(DomainError):
    """A resource with the same unique name exists."""

    reason = "ALREADY_EXISTS"


class FailedPrecondition(DomainError):
    """The request is valid but the resource is not in a state that allows it."""

    reason = "FAILED_PRECONDITION"


class PermissionDenied(DomainError):
    """The caller is known but may not do this."""

    reason = "PERMISSION_DENIED"


class Unauthenticated(DomainError):
    """Missing or wrong credentials."""

    reason = "UNAUTHENTICATED"


class ResourceExhausted(DomainError):
    """A limit was reached; ``retry_after`` seconds is the real wait."""

    reason = "RESOURCE_EXHAUSTED"

    def __init__(
        self,
        message: str,
        *,
        retry_after: float,
        reason: str | None = None,
        quota_subject: str = "",
        quota_description: str = "",
    ) -> None:
        super().__init__(message, reason=reason)
        self.retry_after = retry_after
        # The quota that was hit (google.rpc.QuotaFailure): whose, and what it allows.
        self.quota_subject = quota_subject
        self.quota_description = quota_description or message


class Unavailable(DomainError):
    """A dependency (the database) cannot be reached; the caller may retry."""

    reason = "UNAVAILABLE"
