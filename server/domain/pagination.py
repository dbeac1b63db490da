"""Page sizes and opaque page tokens for list calls (AIP-158).

A page token is the URL-safe base64 (no padding) of compact JSON
``{"v": 1, "s": <digest of scope>, "p": [<position>...]}``:

- ``scope`` names the list and its parent (``"batch:<task_id>"``,
  ``"templates:<account_id>"``), so a token cannot be replayed on another list;
- ``position`` is the keyset cursor, e.g. ``(created_at_micros, id)``: the last
  row of the page just returned.

Tokens are not secret and not signed: a caller can forge one for a scope it
knows. That is harmless because the position is only a cursor inside the list
the caller may already read; what matters is that any token, forged or garbled,
decodes to well-typed values or is refused with ``InvalidArgument``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Sequence
from typing import Final

from server.domain.errors import InvalidArgument

DEFAULT_PAGE_SIZE: Final = 20
MAX_PAGE_SIZE: Final = 100

TOKEN_VERSION: Final = 1
# Longer tokens are neither made nor read; real ones are well under 200 characters.
MAX_TOKEN_CHARS: Final = 1024
# Integers in a position fit a PostgreSQL bigint.
_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1

_TOKEN_ALPHABET = re.compile(r"[A-Za-z0-9_-]*")
_INVALID_TOKEN = "The page token is invalid or belongs to another request."


def page_size(requested: int, field: str = "page_size") -> int:
    """Return the page size to use: 0 means 20, more than 100 means 100.

    A negative size raises ``InvalidArgument`` (reason ``INVALID_PAGE_SIZE``).
    """
    if requested < 0:
        raise InvalidArgument.field(
            field, "The page size cannot be negative.", reason="INVALID_PAGE_SIZE"
        )
    if requested == 0:
        return DEFAULT_PAGE_SIZE
    return min(requested, MAX_PAGE_SIZE)


def encode_page_token(scope: str, position: Sequence[str | int]) -> str:
    """Return the opaque token for continuing the list ``scope`` after ``position``.

    Each element of ``position`` is a ``str`` or an ``int`` within the signed 64-bit
    range, and the whole token fits ``MAX_TOKEN_CHARS`` (ids and timestamps do);
    anything else is a programming error (``TypeError`` or ``ValueError``).
    """
    for value in position:
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise TypeError(f"a page position holds str or int values, not {type(value)!r}")
        if isinstance(value, int) and not _INT64_MIN <= value <= _INT64_MAX:
            raise ValueError(f"a page position integer must fit in 64 bits, got {value}")
    payload = {"v": TOKEN_VERSION, "s": _digest(scope), "p": list(position)}
    data = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    token = base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")
    if len(token) > MAX_TOKEN_CHARS:
        raise ValueError(f"a page position must encode in {MAX_TOKEN_CHARS} characters")
    return token


def decode_page_token(
    token: str,
    scope: str,
    field: str = "page_token",
    *,
    shape: Sequence[type[int] | type[str]] | None = None,
) -> tuple[str | int, ...]:
    """Return the position stored in ``token`` by ``encode_page_token(scope, ...)``.

    The empty token (the first page) gives the empty position ``()``. With
    ``shape``, e.g. ``(int, str)``, the position must have exactly that many
    elements of those types, so the caller can unpack it safely.

    A token that does not decode, has another version, was made for another
    scope or does not fit ``shape`` raises ``InvalidArgument`` on ``field``
    (reason ``INVALID_PAGE_TOKEN``); no other exception escapes.
    """
    if token == "":
        return ()
    position = _read_position(token, scope)
    if position is None or (shape is not None and not _fits(position, shape)):
        raise InvalidArgument.field(field, _INVALID_TOKEN, reason="INVALID_PAGE_TOKEN")
    return position


def _read_position(token: str, scope: str) -> tuple[str | int, ...] | None:
    if len(token) > MAX_TOKEN_CHARS or _TOKEN_ALPHABET.fullmatch(token) is None:
        return None
    try:
        data = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        payload = json.loads(data.decode("utf-8"))
    except (binascii.Error, ValueError, RecursionError):
        return None
    if not isinstance(payload, dict) or set(payload) != {"v", "s", "p"}:
        return None
    version, digest, position = payload["v"], payload["s"], payload["p"]
    if type(version) is not int or version != TOKEN_VERSION or digest != _digest(scope):
        return None
    if not isinstance(position, list) or not all(_is_position_value(v) for v in position):
        return None
    return tuple(position)


def _is_position_value(value: object) -> bool:
    """A bigint, or text PostgreSQL can store (valid Unicode, no NUL)."""
    if isinstance(value, str):
        return "\x00" not in value and _is_valid_unicode(value)
    return type(value) is int and _INT64_MIN <= value <= _INT64_MAX


def _is_valid_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _fits(position: tuple[str | int, ...], shape: Sequence[type[int] | type[str]]) -> bool:
    return len(position) == len(shape) and all(
        type(value) is kind for value, kind in zip(position, shape, strict=True)
    )


def _digest(scope: str) -> str:
    """A short digest of the scope: enough to tell lists apart, without naming them."""
    return hashlib.blake2s(scope.encode("utf-8", "surrogatepass"), digest_size=9).hexdigest()
