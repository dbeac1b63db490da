"""Smart encoding keeps texts with typographic look-alikes in GSM-7."""

from __future__ import annotations

from server.domain.segments import count_segments, encoding_of
from server.domain.smart_encoding import REPLACEMENTS, smart_encode


def test_a_curly_quote_no_longer_makes_a_one_part_text_two() -> None:
    text = "Your order ships today. We\u2019ll text you when it arrives. " + "x" * 40
    assert count_segments(text) == 2  # UCS-2: 70 a part
    sent = smart_encode(text)
    assert sent == text.replace("\u2019", "'")
    assert encoding_of(sent) == "GSM-7"
    assert count_segments(sent) == 1


def test_quotes_dashes_spaces_and_ellipsis_are_replaced() -> None:
    text = "\u201cHi\u201d \u2013 it\u2019s 5\u00a0pm\u2014see you\u2026"
    assert smart_encode(text) == '"Hi" - it\'s 5 pm-see you...'


def test_a_text_that_stays_ucs2_is_sent_as_written() -> None:
    text = "\u201cHi\u201d \U0001f600"  # the emoji has no GSM-7 form
    assert smart_encode(text) == text


def test_gsm7_text_is_unchanged() -> None:
    text = "Plain text with [brackets] and \u20ac"
    assert smart_encode(text) == text


def test_every_replacement_is_gsm7() -> None:
    for char, replacement in REPLACEMENTS.items():
        assert encoding_of(char) == "UCS-2", hex(ord(char))
        assert encoding_of(replacement) == "GSM-7", hex(ord(char))
