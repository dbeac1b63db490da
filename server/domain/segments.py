"""How many SMS parts a text needs (3GPP TS 23.038 alphabets, TS 23.040 concatenation).

A text is sent in GSM-7 when every character is in the GSM 03.38 default alphabet
or its extension table, otherwise in UCS-2 (UTF-16 on the wire).

- GSM-7: one part holds 160 septets; a longer text is split into parts of 153
  septets (the rest of each part is the concatenation header). Extension-table
  characters cost two septets (an escape and the character) and the pair is never
  split across parts.
- UCS-2: one part holds 70 UTF-16 code units; a longer text is split into parts of
  67. Characters outside the Basic Multilingual Plane (most emoji) cost two units
  (a surrogate pair), which is never split across parts.
"""

from __future__ import annotations

from typing import Final, Literal

Encoding = Literal["GSM-7", "UCS-2"]

GSM7_SINGLE_PART: Final = 160
GSM7_MULTI_PART: Final = 153
UCS2_SINGLE_PART: Final = 70
UCS2_MULTI_PART: Final = 67

# The GSM 03.38 default alphabet, in table order (0x1B, the escape, is left out).
GSM7_BASIC: Final = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅå"
    "Δ_ΦΓΛΩΠΨΣΘΞÆæßÉ"
    " !\"#¤%&'()*+,-./"
    "0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmnopqrstuvwxyzäöñüà"
)

# The extension table: each costs an escape septet plus its own.
GSM7_EXTENSION: Final = frozenset("\f^{}\\[~]|€")
_GSM7_ALL: Final = GSM7_BASIC | GSM7_EXTENSION


def encoding_of(text: str) -> Encoding:
    """Return ``"GSM-7"`` if every character of ``text`` has a GSM-7 code, else ``"UCS-2"``."""
    return "GSM-7" if _GSM7_ALL.issuperset(text) else "UCS-2"


def count_segments(text: str) -> int:
    """Return the number of SMS parts needed to send ``text``.

    The empty string needs 0 parts (callers reject empty messages before this).
    """
    if text == "":
        return 0
    # Where every character costs one septet or one unit, a single C-level pass
    # decides (a batch counts the parts of 100,000 texts).
    if GSM7_BASIC.issuperset(text):
        return _even(len(text), GSM7_SINGLE_PART, GSM7_MULTI_PART)
    if _GSM7_ALL.issuperset(text):
        septets = [2 if char in GSM7_EXTENSION else 1 for char in text]
        return _pack(septets, GSM7_SINGLE_PART, GSM7_MULTI_PART)
    if len(text.encode("utf-16-le", "surrogatepass")) == 2 * len(text):
        return _even(len(text), UCS2_SINGLE_PART, UCS2_MULTI_PART)
    units = [2 if ord(char) > 0xFFFF else 1 for char in text]
    return _pack(units, UCS2_SINGLE_PART, UCS2_MULTI_PART)


def _even(length: int, single: int, multi: int) -> int:
    """Parts for ``length`` characters that all cost the same one unit."""
    return 1 if length <= single else -(-length // multi)


def _pack(costs: list[int], single: int, multi: int) -> int:
    """Count parts for characters of the given costs, never splitting a character."""
    if sum(costs) <= single:
        return 1
    parts = 1
    used = 0
    for cost in costs:
        if used + cost > multi:
            parts += 1
            used = 0
        used += cost
    return parts
