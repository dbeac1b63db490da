from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.domain.errors import InvalidArgument
from server.domain.pagination import (
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    decode_page_token,
    encode_page_token,
    page_size,
)

SCOPE = "batch:1001"
INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
# Text PostgreSQL can store: no NUL, no lone surrogate.
TEXT = st.text(
    alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=32
)


def rewrite(token: str, change: dict[str, Any]) -> str:
    """Decode a real token, change fields of its payload, and encode it again."""
    payload = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    payload.update(change)
    data = json.dumps(payload).encode()
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def assert_refused(token: str, scope: str = SCOPE, **kwargs: Any) -> None:
    with pytest.raises(InvalidArgument) as caught:
        decode_page_token(token, scope, **kwargs)
    assert caught.value.reason == "INVALID_PAGE_TOKEN"
    [violation] = caught.value.violations
    assert violation.field == kwargs.get("field", "page_token")
    assert violation.description == "The page token is invalid or belongs to another request."


# Page size


@pytest.mark.parametrize(
    ("requested", "used"),
    [(0, DEFAULT_PAGE_SIZE), (1, 1), (20, 20), (100, 100), (101, MAX_PAGE_SIZE), (10**9, 100)],
)
def test_page_size_defaults_and_caps(requested: int, used: int) -> None:
    assert page_size(requested) == used


def test_a_negative_page_size_is_refused() -> None:
    with pytest.raises(InvalidArgument) as caught:
        page_size(-1, field="page_size")
    assert caught.value.reason == "INVALID_PAGE_SIZE"
    assert [v.field for v in caught.value.violations] == ["page_size"]


# Page tokens


@given(st.text(), st.lists(st.one_of(INT64, TEXT), max_size=4))
def test_a_token_gives_back_its_position(scope: str, position: list[str | int]) -> None:
    token = encode_page_token(scope, position)
    assert decode_page_token(token, scope) == tuple(position)


def test_a_token_is_url_safe_and_unpadded() -> None:
    token = encode_page_token(SCOPE, [2**62, "msg_?&/+=é"])
    assert token.replace("-", "").replace("_", "").isalnum()
    assert token.isascii()


def test_a_position_too_long_for_a_token_is_a_programming_error() -> None:
    with pytest.raises(ValueError):
        encode_page_token(SCOPE, ["x" * 1000])
    with pytest.raises(TypeError):
        encode_page_token(SCOPE, [1.5])  # type: ignore[list-item]


def test_the_empty_token_is_the_first_page() -> None:
    assert decode_page_token("", SCOPE) == ()


def test_a_token_from_another_list_is_refused() -> None:
    token = encode_page_token("batch:1001", [1700000000000000, "m1"])
    assert_refused(token, scope="batch:1002")
    assert_refused(token, scope="templates:1001")


def test_the_shape_lets_callers_unpack_safely() -> None:
    token = encode_page_token(SCOPE, [1700000000000000, "m1"])
    created_at, message_id = decode_page_token(token, SCOPE, shape=(int, str))
    assert (created_at, message_id) == (1700000000000000, "m1")
    assert_refused(token, shape=(str, str))
    assert_refused(token, shape=(int,))
    assert_refused(token, shape=(int, str, int))


@pytest.mark.parametrize(
    "change",
    [
        {"v": 2},
        {"v": "1"},
        {"v": 1.0},
        {"s": "0" * 18},
        {"p": [True, "m1"]},
        {"p": [1.5, "m1"]},
        {"p": [2**63, "m1"]},
        {"p": [None, "m1"]},
        {"p": [[1], "m1"]},
        {"p": [1, "m\u0000"]},
        {"p": "1,m1"},
        {"extra": 1},
    ],
)
def test_a_tampered_token_is_refused(change: dict[str, Any]) -> None:
    token = encode_page_token(SCOPE, [1, "m1"])
    assert_refused(rewrite(token, change))


@pytest.mark.parametrize(
    "token",
    [
        "not a token",
        "abc=",
        "a",
        "e30",  # {}
        "W10",  # []
        "bnVsbA",  # null
        "////",
        "é",
        "x" * 5000,
        base64.urlsafe_b64encode(b"\xff\xfe").decode().rstrip("="),
    ],
)
def test_garbage_tokens_are_refused(token: str) -> None:
    assert_refused(token, field="request.page_token")


@given(st.text(max_size=300))
def test_no_text_crashes_the_decoder(token: str) -> None:
    try:
        position = decode_page_token(token, SCOPE)
    except InvalidArgument as error:
        assert error.reason == "INVALID_PAGE_TOKEN"
    else:
        assert all(isinstance(value, str | int) for value in position)


@given(st.binary(max_size=300))
def test_no_payload_crashes_the_decoder(data: bytes) -> None:
    token = base64.urlsafe_b64encode(data).rstrip(b"=").decode()
    try:
        decode_page_token(token, SCOPE)
    except InvalidArgument as error:
        assert error.reason == "INVALID_PAGE_TOKEN"
