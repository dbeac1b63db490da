"""Smart encoding: characters with a GSM-7 look-alike replaced so a text stays GSM-7.

One curly quote in a text turns the whole text UCS-2 (70 characters a part instead
of 160). The table follows Twilio's published list of characters its Messaging
Services replace ("List of characters replaced by Smart Encoding",
https://www.twilio.com/docs/messaging/services/smart-encoding-char-list), which
Sinch's Auto Encoding table repeats. As there, replacing is all or nothing: a text
that would still need UCS-2 afterwards (an emoji, Chinese) is sent as written.
"""

from __future__ import annotations

from typing import Final

from server.domain.segments import encoding_of

_DOUBLE_QUOTES = "\u00ab\u00bb\u201c\u201d\u02ba\u02ee\u201f\u275d\u275e\u301d\u301e\uff02"
_SINGLE_QUOTES = (
    "\u2018\u2019\u02bb\u02c8\u02bc\u02bd\u02b9\u201b\uff07\u00b4\u02ca\u0060\u02cb"
    "\u275b\u275c\u0313\u0314\ufe10\ufe11"
)
_SPACES = (
    "\u00a0\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
    "\u200b\u202f\u205f\u3000\ufeff"
)
_HYPHENS = "\u2010\u2011\u2012\u2013\u2014\u2015\u2043\ufe58\ufe63\uff0d\u2212"

# Character → its replacement (one or more GSM-7 characters).
REPLACEMENTS: Final[dict[str, str]] = {
    **dict.fromkeys(_DOUBLE_QUOTES, '"'),
    **dict.fromkeys(_SINGLE_QUOTES, "'"),
    **dict.fromkeys(_SPACES, " "),
    **dict.fromkeys(_HYPHENS, "-"),
    "\u00f7": "/",  # ÷
    "\u00bc": "1/4",
    "\u00bd": "1/2",
    "\u00be": "3/4",
    "\u29f8": "/",
    "\u0337": "/",
    "\u0338": "/",
    "\u2044": "/",
    "\u2215": "/",
    "\uff0f": "/",
    "\u29f9": "\\",
    "\u29f5": "\\",
    "\u20e5": "\\",
    "\ufe68": "\\",
    "\uff3c": "\\",
    "\u0332": "_",
    "\uff3f": "_",
    "\u20d2": "|",
    "\u20d3": "|",
    "\u2223": "|",
    "\uff5c": "|",
    "\u23b8": "|",
    "\u23b9": "|",
    "\u23d0": "|",
    "\u239c": "|",
    "\u239f": "|",
    "\u23bc": "-",
    "\u23bd": "-",
    "\u2500": "-",
    "\u2039": "<",
    "\u203a": ">",
    "\u201a": ",",
    "\u0326": ",",
    "\u02cf": ",",
    "\u0375": ",",
    "\u275f": ",",
    "\uff0c": ",",
    "\u2026": "...",
    "\u2025": "..",
    "\u2024": ".",
    "\u2027": ".",
    "\u203c": "!!",
    "\u2047": "??",
    "\u2048": "?!",
    "\u2049": "!?",
    "\u2028": " ",
    "\u2029": " ",
}

_TABLE: Final = str.maketrans(REPLACEMENTS)


def smart_encode(text: str) -> str:
    """``text`` with look-alikes replaced, when that makes it GSM-7; else ``text``."""
    if encoding_of(text) == "GSM-7":
        return text
    replaced = text.translate(_TABLE)
    return replaced if encoding_of(replaced) == "GSM-7" else text
