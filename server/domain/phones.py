"""Mobile numbers: strict E.164 input, checked against libphonenumber's metadata."""

from __future__ import annotations

import re
from typing import Final

import phonenumbers

from server.domain.errors import InvalidArgument

MIN_DIGITS: Final = 8
MAX_DIGITS: Final = 15

# ASCII digits only: ``\d`` and ``str.isdigit`` also accept Arabic-Indic or
# full-width digits, which libphonenumber would silently convert.
_E164_SHAPE = re.compile(r"\+[0-9]+")

# Region codes that are not ISO 3166 countries: "001" is libphonenumber's code for
# non-geographic numbering plans, "ZZ" its code for "unknown".
_NON_REGIONS = frozenset({"001", "ZZ"})

_E164_HINT = (
    "The mobile number must be in E.164 format: a + followed by the country code "
    "and the number, digits only, for example +8613800138000."
)


def _invalid(field: str, description: str) -> InvalidArgument:
    return InvalidArgument.field(field, description, reason="INVALID_MOBILE")


def normalize_mobile(raw: str, field: str = "mobile") -> str:
    """Return ``raw`` in E.164 form if it is a valid phone number, else raise.

    Only E.164 is accepted: ``+`` then 8 to 15 ASCII digits, the first not 0, with
    no spaces, dashes or other characters. The number must then be valid for its
    country according to libphonenumber. Raises ``InvalidArgument`` on ``field``
    with reason ``INVALID_MOBILE``.
    """
    if raw == "":
        raise _invalid(field, "A mobile number is required.")
    if _E164_SHAPE.fullmatch(raw) is None:
        raise _invalid(field, _E164_HINT)
    digits = raw[1:]
    if not MIN_DIGITS <= len(digits) <= MAX_DIGITS:
        raise _invalid(
            field,
            f"The mobile number must have {MIN_DIGITS} to {MAX_DIGITS} digits after the +; "
            f"it has {len(digits)}.",
        )
    if digits[0] == "0":
        raise _invalid(field, "The country code of the mobile number cannot start with 0.")
    try:
        number = phonenumbers.parse(raw, None)
    except phonenumbers.NumberParseException:
        raise _invalid(field, _E164_HINT) from None
    if not phonenumbers.is_valid_number(number):
        raise _invalid(field, "The mobile number is not a valid phone number for its country.")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def region_of(e164: str) -> str | None:
    """Return the ISO 3166 region code of a number (``"CN"``), or ``None``.

    ``None`` means the number does not parse, or belongs to no single country
    (non-geographic numbers such as +800 freephone).
    """
    try:
        number = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        return None
    region = phonenumbers.region_code_for_number(number)
    if region is None or region in _NON_REGIONS:
        return None
    return region


# Characters people write numbers with, dropped before reading one in any spelling.
_SEPARATORS = re.compile(r"[\s\-.()/\u00a0\u2010-\u2015]")
_REGION_CODE = re.compile(r"[A-Z]{2}")


def normalize_any_spelling(raw: str, field: str, default_region: str | None) -> str:
    """``raw`` in E.164 form, from any common spelling: E.164 with spaces, dashes, dots
    or brackets (``+86 138-0013-8000``), the ``00`` international prefix, or a national
    number (``138 0013 8000``) read in ``default_region`` (none: refused). Raises
    ``InvalidArgument`` on ``field`` (reason ``INVALID_MOBILE``) as ``normalize_mobile``."""
    compact = _SEPARATORS.sub("", raw)
    if compact.startswith("00"):
        compact = "+" + compact[2:]
    if compact.startswith("+") or compact == "":
        return normalize_mobile(compact, field)
    if not compact.isascii() or not compact.isdigit():
        raise _invalid(field, _E164_HINT)
    if default_region is None:
        raise _invalid(
            field,
            "A national number needs a region (SMSGW_DEFAULT_REGION is not set): "
            "give it in E.164 format, for example +8613800138000.",
        )
    try:
        number = phonenumbers.parse(compact, default_region)
    except phonenumbers.NumberParseException:
        raise _invalid(field, _E164_HINT) from None
    if not phonenumbers.is_valid_number(number):
        raise _invalid(field, f"The number is not a valid phone number in region {default_region}.")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def check_region_code(value: str) -> str | None:
    """``value`` upper-cased if it is a two-letter region code libphonenumber knows."""
    region = value.strip().upper()
    if _REGION_CODE.fullmatch(region) and region in phonenumbers.SUPPORTED_REGIONS:
        return region
    return None
