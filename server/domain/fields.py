"""Rules every request field shares: ids, text PostgreSQL can store, bounded reports.

Every string a caller sends has a maximum length and every list a maximum count, so
that no request makes the server store, compare or echo an absurd amount of data;
the limits of each field are checked where that field is validated. This module
holds the rules several use cases share.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from server.domain.errors import FieldViolation

# Ids the server hands out are at most 34 characters ("v_" and 24 hex digits, 32 hex
# digits for messages); a longer one cannot exist.
MAX_ID_CHARS: Final = 64
# Problems reported by one call at most, so that the error fits in gRPC trailers.
MAX_REPORTED_PROBLEMS: Final = 20

NUL_DESCRIPTION: Final = "must not contain the NUL character (U+0000)"


def storable(text: str) -> bool:
    """Whether PostgreSQL can store ``text``: its text and jsonb types refuse NUL."""
    return "\x00" not in text


def check_text(value: str, field: str, max_chars: int, violations: list[FieldViolation]) -> None:
    """Adds a violation if ``value`` is longer than ``max_chars`` or holds a NUL."""
    if len(value) > max_chars:
        violations.append(FieldViolation(field, f"must be at most {max_chars} characters"))
    elif not storable(value):
        violations.append(FieldViolation(field, NUL_DESCRIPTION))


def check_id(value: str, field: str, violations: list[FieldViolation]) -> None:
    """Adds a violation unless ``value`` could be an id: 1 to 64 characters, no NUL."""
    if value == "":
        violations.append(FieldViolation(field, "an id is required"))
    else:
        check_text(value, field, MAX_ID_CHARS, violations)


def check_ids(ids: Sequence[str], field: str, violations: list[FieldViolation]) -> None:
    """``check_id`` for each element, named ``field[i]``; at most a few are reported."""
    found: list[FieldViolation] = []
    for index, value in enumerate(ids):
        check_id(value, f"{field}[{index}]", found)
    violations.extend(at_most_reported(found, field))


def at_most_reported(violations: list[FieldViolation], field: str) -> list[FieldViolation]:
    """Keeps the first problems and says how many more there are, on ``field``."""
    if len(violations) <= MAX_REPORTED_PROBLEMS:
        return violations
    kept = violations[: MAX_REPORTED_PROBLEMS - 1]
    more = len(violations) - len(kept)
    return [*kept, FieldViolation(field, f"There are {more} more problems not listed here.")]
