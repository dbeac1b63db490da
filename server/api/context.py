"""Per-call context set by the interceptor: the caller and the request id."""

from __future__ import annotations

from contextvars import ContextVar

from server.domain.errors import Unauthenticated
from server.domain.messaging import Caller

request_id_var: ContextVar[str] = ContextVar("request_id", default="-")
_caller_var: ContextVar[Caller | None] = ContextVar("caller", default=None)


def set_caller(caller: Caller) -> None:
    _caller_var.set(caller)


def caller_or_none() -> Caller | None:
    """The caller of the call being handled, if any (for log lines)."""
    return _caller_var.get()


def current_caller() -> Caller:
    caller = _caller_var.get()
    if caller is None:  # only if a servicer is registered without the interceptor
        raise Unauthenticated("missing credentials", reason="MISSING_CREDENTIALS")
    return caller
