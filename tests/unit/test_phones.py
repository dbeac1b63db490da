from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.domain.errors import InvalidArgument
from server.domain.phones import normalize_mobile, region_of


def with_digits_from(zero: int, digits: str) -> str:
    """``digits`` written with the ten digits that start at code point ``zero``."""
    return "".join(chr(zero + int(digit)) for digit in digits)


# +8613800138000 written with digits that str.isdigit() accepts but E.164 does not.
ARABIC_INDIC_DIGITS = "+" + with_digits_from(0x0660, "8613800138000")
FULL_WIDTH_DIGITS = "+" + with_digits_from(0xFF10, "8613800138000")


@pytest.mark.parametrize(
    ("raw", "region"),
    [
        ("+8613800138000", "CN"),
        ("+14155550123", "US"),
        ("+447400123456", "GB"),
        ("+491701234567", "DE"),
    ],
)
def test_valid_numbers_are_returned_in_e164_with_their_region(raw: str, region: str) -> None:
    assert normalize_mobile(raw) == raw
    assert region_of(raw) == region


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "8613800138000",  # no +
        "+86 138 0013 8000",
        "+86-138-0013-8000",
        " +8613800138000",
        "+8613800138000\n",
        "+86138001380ab",
        "++8613800138000",
        "+",
        ARABIC_INDIC_DIGITS,
        FULL_WIDTH_DIGITS,
        "+1234567",  # 7 digits
        "+8613800138000123",  # 16 digits
        "+08613800138000",  # country code starting with 0
        "+12345678",  # well formed, but no such number
        "+447700900123",  # Ofcom's range for drama, not a real mobile number
    ],
)
def test_anything_but_a_valid_e164_number_is_refused(raw: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        normalize_mobile(raw, field="numbers[3]")
    assert caught.value.reason == "INVALID_MOBILE"
    [violation] = caught.value.violations
    assert violation.field == "numbers[3]"
    assert violation.description.endswith(".")


def test_the_reason_tells_the_caller_what_is_wrong() -> None:
    with pytest.raises(InvalidArgument, match=r"E\.164"):
        normalize_mobile("+86 138 0013 8000")
    with pytest.raises(InvalidArgument, match="8 to 15 digits"):
        normalize_mobile("+1234567")
    with pytest.raises(InvalidArgument, match="not a valid phone number"):
        normalize_mobile("+12345678")


def test_region_of_is_none_for_non_geographic_and_unparsable_numbers() -> None:
    assert region_of("+80012345678") is None  # international freephone
    assert region_of("not a number") is None


@given(st.text(alphabet=st.sampled_from("+0123456789 -()a\u0661\uff11"), max_size=20))
def test_normalize_mobile_returns_a_fixed_point_or_refuses(raw: str) -> None:
    try:
        normalized = normalize_mobile(raw)
    except InvalidArgument:
        return
    assert normalize_mobile(normalized) == normalized
    assert normalized.startswith("+")
    assert normalized[1:].isascii()
    assert normalized[1:].isdigit()
