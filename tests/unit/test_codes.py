"""One-time codes: random digits, keyed hashes, sealing that only our key opens."""

from __future__ import annotations

from collections import Counter

import pytest

from server.domain.codes import CodeKeys, generate_code

KEY = b"k" * 32


def test_codes_are_digits_of_the_asked_length_and_not_predictable() -> None:
    codes = [generate_code(6) for _ in range(2000)]
    assert all(len(c) == 6 and c.isdigit() and c.isascii() for c in codes)
    assert len(set(codes)) > 1990
    digits = Counter("".join(codes))
    assert min(digits.values()) > 1000  # roughly uniform over 0-9 (1,200 expected each)


def test_digest_is_keyed_per_verification() -> None:
    keys = CodeKeys(KEY)
    stored = keys.digest("v_1", "123456")
    assert b"123456" not in stored and len(stored) == 32
    assert keys.digest("v_1", "123456") == stored
    assert keys.digest("v_1", "123457") != stored
    assert keys.digest("v_2", "123456") != stored  # bound to its verification
    assert CodeKeys(b"x" * 32).digest("v_1", "123456") != stored  # bound to the key


def test_sealed_codes_open_only_with_the_same_key() -> None:
    sealed = CodeKeys(KEY).seal("4711")
    assert b"4711" not in sealed
    assert CodeKeys(KEY).unseal(sealed) == "4711"
    assert CodeKeys(b"y" * 32).unseal(sealed) is None
    with pytest.raises(ValueError):
        CodeKeys(b"short")
