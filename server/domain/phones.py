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
