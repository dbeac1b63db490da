from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.domain.segments import (
    GSM7_BASIC,
    GSM7_EXTENSION,
    count_segments,
    encoding_of,
)

GSM_CHARS = "".join(sorted(GSM7_BASIC | GSM7_EXTENSION))
UCS2_ONLY = "жç😀中`"


def septets(text: str) -> int:
    return sum(2 if char in GSM7_EXTENSION else 1 for char in text)


def utf16_units(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def test_the_gsm_alphabets_have_the_standard_sizes() -> None:
    assert len(GSM7_BASIC) == 127  # 128 codes less the escape
    assert len(GSM7_EXTENSION) == 10


@pytest.mark.parametrize(
    "text",
    [
        "Hello, world!",
        "Prix: 5€ [promo] {x} ~ ^ | \\",
        "@£$¥èéùìòÇØøÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ¤¡ÄÖÑÜ§¿äöñüà",
    ],
)
def test_text_in_the_gsm_alphabet_is_gsm7(text: str) -> None:
    assert encoding_of(text) == "GSM-7"


@pytest.mark.parametrize("char", list(UCS2_ONLY))
def test_one_character_outside_the_gsm_alphabet_makes_the_whole_text_ucs2(char: str) -> None:
    text = "a" * 100 + char
    assert encoding_of(text) == "UCS-2"
    assert count_segments(text) == 2  # 101 or 102 UTF-16 units, over 70


def test_empty_text_needs_no_segment() -> None:
    assert count_segments("") == 0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a", 1),
        ("a" * 160, 1),
        ("a" * 161, 2),
        ("a" * 153 * 2, 2),
        ("a" * (153 * 2 + 1), 3),
        ("a" * 158 + "€", 1),  # 160 septets
        ("a" * 159 + "€", 2),  # 161 septets
        # 306 septets, but the escape pair cannot be split across parts 1 and 2.
        ("a" * 152 + "€" + "a" * 152, 3),
        ("a" * 151 + "€" + "a" * 153, 2),
    ],
)
def test_gsm7_segments(text: str, expected: int) -> None:
    assert count_segments(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ж" * 70, 1),
        ("ж" * 71, 2),
        ("ж" * 67 * 2, 2),
        ("ж" * (67 * 2 + 1), 3),
        ("ж" * 68 + "😀", 1),  # 70 units
        ("ж" * 69 + "😀", 2),  # 71 units
        ("😀" * 35, 1),
        # 134 units, but the surrogate pair cannot be split across parts 1 and 2.
        ("ж" * 66 + "😀" + "ж" * 66, 3),
        ("ж" * 65 + "😀" + "ж" * 67, 2),
    ],
)
def test_ucs2_segments(text: str, expected: int) -> None:
    assert count_segments(text) == expected


gsm_texts = st.text(alphabet=st.sampled_from(GSM_CHARS), min_size=1, max_size=700)
ucs2_texts = st.text(min_size=1, max_size=300).map(lambda text: "ж" + text)


@given(gsm_texts, st.sampled_from(GSM_CHARS))
def test_gsm7_appending_never_lowers_the_count(text: str, char: str) -> None:
    assert count_segments(text + char) >= count_segments(text)


@given(ucs2_texts, st.characters())
def test_ucs2_appending_never_lowers_the_count(text: str, char: str) -> None:
    assert count_segments(text + char) >= count_segments(text)


@given(gsm_texts)
def test_gsm7_count_matches_the_septet_length(text: str) -> None:
    length, segments = septets(text), count_segments(text)
    assert (segments == 1) == (length <= 160)
    if segments > 1:
        # Every part but the last holds 152 or 153 septets.
        assert math.ceil(length / 153) <= segments <= math.ceil(length / 152)


@given(ucs2_texts)
def test_ucs2_count_matches_the_utf16_length(text: str) -> None:
    length, segments = utf16_units(text), count_segments(text)
    assert encoding_of(text) == "UCS-2"
    assert (segments == 1) == (length <= 70)
    if segments > 1:
        # Every part but the last holds 66 or 67 units.
        assert math.ceil(length / 67) <= segments <= math.ceil(length / 66)
