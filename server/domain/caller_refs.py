"""A caller's own reference and metadata for a send, and how long it may wait.

Both are stored with the message and echoed in its status answers and events, so a
caller can match them to its own records without keeping our ids.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Final

from server.domain.errors import FieldViolation
from server.domain.fields import NUL_DESCRIPTION, check_text, storable

MAX_REFERENCE_CHARS: Final = 128
MAX_METADATA_KEYS: Final = 10
MAX_METADATA_KEY_CHARS: Final = 40
MAX_METADATA_VALUE_CHARS: Final = 256
MIN_VALIDITY: Final = timedelta(minutes=1)
MAX_VALIDITY: Final = timedelta(hours=72)


def check_reference(
    reference: str, metadata: Mapping[str, str], violations: list[FieldViolation]
) -> None:
    check_text(reference, "reference", MAX_REFERENCE_CHARS, violations)
    if len(metadata) > MAX_METADATA_KEYS:
        violations.append(FieldViolation("metadata", f"at most {MAX_METADATA_KEYS} keys"))
        return
    # One violation per kind of problem, however many entries have it.
    problems: dict[str, None] = {}
    for key, value in metadata.items():
        if key == "":
            problems["keys must not be empty"] = None
        elif len(key) > MAX_METADATA_KEY_CHARS:
            problems[f"keys must be at most {MAX_METADATA_KEY_CHARS} characters"] = None
        if len(value) > MAX_METADATA_VALUE_CHARS:
            problems[f"values must be at most {MAX_METADATA_VALUE_CHARS} characters"] = None
        if not (storable(key) and storable(value)):
            problems[NUL_DESCRIPTION] = None
    violations.extend(FieldViolation("metadata", problem) for problem in problems)


def check_validity(validity: timedelta | None, violations: list[FieldViolation]) -> None:
    if validity is not None and not MIN_VALIDITY <= validity <= MAX_VALIDITY:
        violations.append(FieldViolation("validity", "must be from 1 minute to 72 hours"))
