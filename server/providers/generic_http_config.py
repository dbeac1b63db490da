"""The declarative HTTP provider's configuration (kind "http"), read from the routing
file's ``options`` alone, and the placeholders its templates may use.

    [providers.plivo]
    kind = "http"
    base_url = "https://api.plivo.com"
    credentials = { auth_id = "PLIVO_AUTH_ID", auth_token = "PLIVO_AUTH_TOKEN" }  # any names

    [providers.plivo.options]
    auth = { type = "basic", username = "{auth_id}", password = "{auth_token}" }

    [providers.plivo.options.send]
    method = "POST"                       # default POST
    path = "/v1/Account/{auth_id}/Message/"
    format = "json"                       # json | form
    body = { src = "15550001111", dst = "{to_digits}", text = "{text}", url = "{receipt_url}" }
    id = "message_uuid.0"                 # where the answer names the provider's id
    error = "error"                       # where a refusal names its code or reason

    [providers.plivo.options.status]      # polling (optional)
    path = "/v1/Account/{auth_id}/Message/{provider_id}/"
    field = "message_state"
    error = "error_code"
    statuses = { delivered = "delivered", undelivered = "undelivered", failed = "failed" }

    [providers.plivo.options.receipt]     # pushed receipts (optional)
    url = "https://sms.example.com/webhooks/http/plivo"
    token = "{hook_token}"                # a secret the pushes must carry back (?token=)
    id = "MessageUUID"
    field = "Status"
    error = "ErrorCode"

Placeholders are ``{name}``: a credential's name, or one of ours: ``to`` (E.164),
``to_digits`` (without +), ``text``, ``id`` (our message id), ``use_type``,
``receipt_url`` (send only: the receipt URL naming the message), ``provider_id``
(status only). Anything else is refused when the file is read.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from server.domain.models import MessageStatus

PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
MESSAGE_FIELDS = frozenset({"to", "to_digits", "text", "id", "use_type"})
STATUS_NAMES: dict[str, MessageStatus | None] = {
    "delivered": MessageStatus.DELIVERED,
    "undelivered": MessageStatus.UNDELIVERED,
    "failed": MessageStatus.FAILED,
    "rejected": MessageStatus.REJECTED,
    "pending": None,  # still on its way: not a receipt
}
ERROR_KINDS = ("retry", "rejected", "failed")


class HttpProviderConfigError(ValueError):
    """The options of a kind "http" provider are wrong; the message names the key."""


def fill(template: str, values: Mapping[str, str]) -> str:
    """Replaces each {name} with its value (names were checked when read)."""
    return PLACEHOLDER.sub(lambda match: values[match.group(1)], template)


@dataclass(frozen=True)
class Auth:
    type: str = "none"  # none | basic | header | query
    username: str = ""
    password: str = ""
    name: str = ""  # header or query parameter name
    value: str = ""


@dataclass(frozen=True)
class SendSpec:
    path: str
    method: str = "POST"
    format: str = "json"  # json | form
    body: Mapping[str, Any] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)
    id: str = ""  # JSON path of the provider's message id
    error: str = ""  # JSON path of a refusal's code
    accepted: tuple[int, ...] = ()  # HTTP statuses of acceptance (empty: any 2xx)
    # A body field that must hold this value for success (providers answering 200
    # with an error inside): (path, value).
    success: tuple[str, str] | None = None
    errors: Mapping[str, str] = field(default_factory=dict)  # code -> retry|rejected|failed


@dataclass(frozen=True)
class StatusSpec:
    path: str
    field: str
    statuses: Mapping[str, MessageStatus | None]
    method: str = "GET"
    error: str = ""
    ok_errors: frozenset[str] = frozenset()  # codes that mean "no error" ("000")


@dataclass(frozen=True)
class ReceiptSpec:
    url: str
    id: str
    field: str
    statuses: Mapping[str, MessageStatus | None]
    token: str = ""
    error: str = ""
    ok_errors: frozenset[str] = frozenset()


@dataclass(frozen=True)
class HttpProviderSpec:
    auth: Auth
    send: SendSpec
    status: StatusSpec | None
    receipt: ReceiptSpec | None


def _table(where: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise HttpProviderConfigError(f"{where} must be a table")
    return value


def _text(where: str, value: Any, *, required: bool = True) -> str:
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value):
        raise HttpProviderConfigError(f"{where} must be a non-empty string")
    return value


def _known(where: str, template: str, names: frozenset[str]) -> None:
    for name in PLACEHOLDER.findall(template):
        if name not in names:
            raise HttpProviderConfigError(
                f"{where}: unknown placeholder {{{name}}} (known: {', '.join(sorted(names))})"
            )


def _known_in(where: str, value: Any, names: frozenset[str]) -> None:
    if isinstance(value, str):
        _known(where, value, names)
    elif isinstance(value, dict):
        for key, item in value.items():
            _known_in(f"{where}.{key}", item, names)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _known_in(f"{where}[{index}]", item, names)


def _unknown_keys(where: str, table: Mapping[str, Any], allowed: set[str]) -> None:
    extra = set(table) - allowed
    if extra:
        raise HttpProviderConfigError(f"{where} has unknown keys: {', '.join(sorted(extra))}")


def _statuses(where: str, value: Any) -> dict[str, MessageStatus | None]:
    table = _table(where, value)
    if not table:
        raise HttpProviderConfigError(f"{where} must map at least one provider status")
    out: dict[str, MessageStatus | None] = {}
    for wire, ours in table.items():
        if ours not in STATUS_NAMES:
            raise HttpProviderConfigError(
                f"{where}.{wire} must be one of {', '.join(STATUS_NAMES)}"
            )
        out[str(wire)] = STATUS_NAMES[ours]
    return out


def _statuses_int(where: str, value: Any) -> tuple[int, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(
        isinstance(v, int) and not isinstance(v, bool) and 100 <= v <= 599 for v in value
    ):
        raise HttpProviderConfigError(f"{where} must be a list of HTTP statuses")
    return tuple(value)


def _codes(where: str, value: Any) -> frozenset[str]:
    if value is None:
        return frozenset()
    if not isinstance(value, list):
        raise HttpProviderConfigError(f"{where} must be a list of codes")
    return frozenset(str(v) for v in value)


def _auth(where: str, value: Any, names: frozenset[str]) -> Auth:
    if value is None:
        return Auth()
    table = _table(where, value)
    kind = table.get("type")
    if kind == "basic":
        _unknown_keys(where, table, {"type", "username", "password"})
        auth = Auth(
            "basic",
            username=_text(f"{where}.username", table.get("username")),
            password=_text(f"{where}.password", table.get("password")),
        )
    elif kind in ("header", "query"):
        _unknown_keys(where, table, {"type", "name", "value"})
        auth = Auth(
            kind,
            name=_text(f"{where}.name", table.get("name")),
            value=_text(f"{where}.value", table.get("value")),
        )
    elif kind == "none":
        auth = Auth()
    else:
        raise HttpProviderConfigError(f"{where}.type must be basic, header, query or none")
    for key in ("username", "password", "value"):
        _known(f"{where}.{key}", getattr(auth, key), names)
    return auth


def _send(where: str, value: Any, names: frozenset[str]) -> SendSpec:
    table = _table(where, value)
    _unknown_keys(
        where,
        table,
        {
            "method",
            "path",
            "format",
            "body",
            "headers",
            "id",
            "error",
            "accepted",
            "success",
            "errors",
        },
    )
    method = _text(f"{where}.method", table.get("method", "POST")).upper()
    if method not in ("POST", "PUT", "GET"):
        raise HttpProviderConfigError(f"{where}.method must be POST, PUT or GET")
    body_format = table.get("format", "json")
    if body_format not in ("json", "form"):
        raise HttpProviderConfigError(f"{where}.format must be json or form")
    body = _table(f"{where}.body", table.get("body", {}))
    if body_format == "form" and not all(isinstance(v, str | int | float) for v in body.values()):
        raise HttpProviderConfigError(f"{where}.body: a form holds only strings and numbers")
    headers = _table(f"{where}.headers", table.get("headers", {}))
    if not all(isinstance(v, str) for v in headers.values()):
        raise HttpProviderConfigError(f"{where}.headers must map names to strings")
    success = None
    if "success" in table:
        rule = _table(f"{where}.success", table["success"])
        _unknown_keys(f"{where}.success", rule, {"path", "equals"})
        success = (
            _text(f"{where}.success.path", rule.get("path")),
            str(rule.get("equals", "")),
        )
    errors = {str(k): v for k, v in _table(f"{where}.errors", table.get("errors", {})).items()}
    for code, kind in errors.items():
        if kind not in ERROR_KINDS:
            raise HttpProviderConfigError(f"{where}.errors.{code} must be one of {ERROR_KINDS}")
    spec = SendSpec(
        path=_text(f"{where}.path", table.get("path")),
        method=method,
        format=body_format,
        body=body,
        headers=headers,
        id=_text(f"{where}.id", table.get("id")),
        error=_text(f"{where}.error", table.get("error"), required=False),
        accepted=_statuses_int(f"{where}.accepted", table.get("accepted")),
        success=success,
        errors=errors,
    )
    allowed = names | MESSAGE_FIELDS | {"receipt_url"}
    _known(f"{where}.path", spec.path, allowed)
    _known_in(f"{where}.body", body, allowed)
    _known_in(f"{where}.headers", headers, allowed)
    return spec


def _status(where: str, value: Any, names: frozenset[str]) -> StatusSpec:
    table = _table(where, value)
    _unknown_keys(where, table, {"method", "path", "field", "error", "ok_errors", "statuses"})
    method = _text(f"{where}.method", table.get("method", "GET")).upper()
    if method not in ("GET", "POST"):
        raise HttpProviderConfigError(f"{where}.method must be GET or POST")
    spec = StatusSpec(
        path=_text(f"{where}.path", table.get("path")),
        field=_text(f"{where}.field", table.get("field")),
        statuses=_statuses(f"{where}.statuses", table.get("statuses")),
        method=method,
        error=_text(f"{where}.error", table.get("error"), required=False),
        ok_errors=_codes(f"{where}.ok_errors", table.get("ok_errors")),
    )
    if "{provider_id}" not in spec.path:
        raise HttpProviderConfigError(f"{where}.path must name {{provider_id}}")
    _known(f"{where}.path", spec.path, names | {"provider_id"})
    return spec


def _receipt(
    where: str, value: Any, names: frozenset[str], status: StatusSpec | None
) -> ReceiptSpec:
    table = _table(where, value)
    _unknown_keys(where, table, {"url", "token", "id", "field", "error", "ok_errors", "statuses"})
    url = _text(f"{where}.url", table.get("url"))
    if not url.startswith(("http://", "https://")):
        raise HttpProviderConfigError(f"{where}.url must be an http(s) URL")
    if "statuses" in table:
        statuses = _statuses(f"{where}.statuses", table["statuses"])
    elif status is not None:
        statuses = dict(status.statuses)
    else:
        raise HttpProviderConfigError(f"{where}.statuses is required (no status table to share)")
    spec = ReceiptSpec(
        url=url,
        id=_text(f"{where}.id", table.get("id")),
        field=_text(f"{where}.field", table.get("field")),
        statuses=statuses,
        # A push without it is refused: without a secret anyone could settle messages.
        token=_text(f"{where}.token", table.get("token")),
        error=_text(f"{where}.error", table.get("error"), required=False),
        ok_errors=_codes(f"{where}.ok_errors", table.get("ok_errors")),
    )
    _known(f"{where}.token", spec.token, names)
    _known(f"{where}.url", spec.url, frozenset())
    return spec


def parse_options(
    name: str, options: Mapping[str, Any], credential_names: frozenset[str]
) -> HttpProviderSpec:
    """The provider's behaviour from its options; raises HttpProviderConfigError."""
    where = f"providers.{name}.options"
    _unknown_keys(where, options, {"auth", "send", "status", "receipt"})
    if "send" not in options:
        raise HttpProviderConfigError(f"{where}.send is required")
    status = (
        _status(f"{where}.status", options["status"], credential_names)
        if "status" in options
        else None
    )
    receipt = (
        _receipt(f"{where}.receipt", options["receipt"], credential_names, status)
        if "receipt" in options
        else None
    )
    send = _send(f"{where}.send", options["send"], credential_names)
    if receipt is None and "{receipt_url}" in repr(send.body):
        raise HttpProviderConfigError(f"{where}.send uses {{receipt_url}} but no receipt table")
    return HttpProviderSpec(
        auth=_auth(f"{where}.auth", options.get("auth"), credential_names),
        send=send,
        status=status,
        receipt=receipt,
    )
