"""Validate the recipients of a batch: up to 100,000 numbers, each judged on its own.

Every number gets exactly the verdict, the same E.164 form and the same reason that
``phones.normalize_mobile`` gives it. ``normalize_mobile`` spends 30-140 µs per
number, almost all of it in ``phonenumbers.parse`` and in ``is_valid_number``
recompiling its metadata patterns; 100,000 of them would take seconds. So each
number first goes through a fast check that does the same work with patterns
compiled once per calling code, and answers only when it is sure:

* It judges only numbers in the shape ``normalize_mobile`` requires (``+``, 8 to 15
  ASCII digits, the first not 0) for which ``phonenumbers.parse`` provably returns
  the digits unchanged: the calling code is split off the way the library does it
  (shortest known prefix first), the national number does not start with 0 (no
  Italian leading zero), and the national-prefix pattern of the calling code's main
  region strips and rewrites nothing. The E.164 form is then the input itself.
* It then applies the library's validity rules to the library's own metadata: the
  region is chosen among the regions sharing the calling code as
  ``region_code_for_number`` does (leading digits, else a full type check, in the
  library's order), and the number is valid if it has a possible length and matches
  the pattern of the general description and of at least one number type.

Everything else (a malformed number, an unknown calling code, a possible national
prefix or leading zero, a calling code whose metadata looks unusual) goes to
``normalize_mobile`` itself. So does the first number of a call that the fast check
finds invalid: the sentence ``normalize_mobile`` gives it is the reason for every
other number found invalid the same way (the ``is_valid_number`` step).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

import phonenumbers
from phonenumbers import PhoneMetadata, PhoneNumberDesc

from server.domain.errors import InvalidArgument
from server.domain.phones import MAX_DIGITS, MIN_DIGITS, normalize_mobile

DUPLICATE_REASON: Final = "duplicate number"

# The shape normalize_mobile checks before parsing, in one expression.
_FAST_SHAPE: Final = re.compile(rf"\+[1-9][0-9]{{{MIN_DIGITS - 1},{MAX_DIGITS - 1}}}")

# Every calling code as written in a number ("44" -> 44). Calling codes are 1 to 3
# digits and never start with 0.
_CALLING_CODES: Final[Mapping[str, int]] = {
    str(code): code for code in phonenumbers.COUNTRY_CODE_TO_REGION_CODE
}

_NON_GEO_REGION: Final = "001"

# The regular-expression syntax the metadata patterns use: digits, classes, groups,
# alternation, quantifiers and \d. Patterns with anything else (look-arounds,
# back-references, flags) are not combined; their calling code takes the slow path.
_PLAIN_PATTERN: Final = re.compile(r"(?:[0-9\[\]\-(?:|){},]|\\d)*")


@dataclass(frozen=True)
class NumberVerdicts:
    """The numbers of a batch, sorted into accepted and rejected, in input order."""

    accepted: list[tuple[str, str]]  # (as given, E.164)
    rejected: list[tuple[str, str]]  # (as given, reason sentence)


def validate_numbers(numbers: Sequence[str]) -> NumberVerdicts:
    """Judge every number as ``normalize_mobile`` would, and reject repeats.

    A valid number whose E.164 form was already accepted earlier in ``numbers`` is
    rejected with ``DUPLICATE_REASON``: the first occurrence wins. Invalid numbers
    are rejected with the sentence ``normalize_mobile`` gives for them.
    """
    accepted: list[tuple[str, str]] = []
    rejected: list[tuple[str, str]] = []
    for raw, e164, reason in judge_numbers(numbers):
        if e164 is not None:
            accepted.append((raw, e164))
        else:
            rejected.append((raw, reason))
    return NumberVerdicts(accepted=accepted, rejected=rejected)


def judge_numbers(numbers: Iterable[str]) -> Iterator[tuple[str, str | None, str]]:
    """``validate_numbers`` one number at a time, in input order, holding only the
    E.164 forms seen so far: (as given, E.164 or None if rejected, reason or "")."""
    seen: set[str] = set()
    # normalize_mobile's sentence for a well-formed number its country does not have.
    invalid_reason: str | None = None
    for raw in numbers:
        valid = _fast_check(raw)
        if valid:
            e164 = raw
        elif valid is False and invalid_reason is not None:
            yield raw, None, invalid_reason
            continue
        else:
            try:
                e164 = normalize_mobile(raw, "numbers")
            except InvalidArgument as exc:
                reason = _reason(exc)
                if valid is False:
                    invalid_reason = reason
                yield raw, None, reason
                continue
        if e164 in seen:
            yield raw, None, DUPLICATE_REASON
        else:
            seen.add(e164)
            yield raw, e164, ""


def _reason(exc: InvalidArgument) -> str:
    return "; ".join(v.description for v in exc.violations) or exc.message


def _fast_check(raw: str) -> bool | None:
    """Whether ``normalize_mobile`` accepts ``raw`` and returns it unchanged.

    ``True``: it does. ``False``: it parses ``raw`` unchanged but ``is_valid_number``
    refuses it. ``None``: not sure; ask ``normalize_mobile``.
    """
    if _FAST_SHAPE.fullmatch(raw) is None:
        return None
    digits = raw[1:]
    # phonenumbers._extract_country_code: the shortest known prefix wins.
    for size in (1, 2, 3):
        code = _CALLING_CODES.get(digits[:size])
        if code is not None:
            break
    else:
        return None
    national = digits[size:]
    if national[0] == "0":
        return None
    rules = _rules_for(code)
    if rules is None or not rules.keeps(national):
        return None
    return rules.is_valid(national)


@dataclass(frozen=True, slots=True)
class _RegionRules:
    """One region's validity rules, compiled: a port of _number_type_helper."""

    leading_digits: re.Pattern[str] | None
    # National number length -> the source of one pattern that fully matches exactly
    # the numbers of that length matching the general description and at least one
    # number type. A length missing here cannot be valid. Patterns are long (1-2k
    # characters) and slow to compile, so each is compiled when first needed.
    sources: Mapping[int, str]
    compiled: dict[int, re.Pattern[str]] = field(default_factory=dict)

    def has_type(self, national: str) -> bool:
        """Whether the library would give ``national`` a type other than UNKNOWN."""
        pattern = self.compiled.get(len(national))
        if pattern is None:
            source = self.sources.get(len(national))
            if source is None:
                return False
            pattern = self.compiled.setdefault(len(national), re.compile(source))
        return pattern.fullmatch(national) is not None


@dataclass(frozen=True, slots=True)
class _CallingCodeRules:
    """What parse and is_valid_number do with the national number of one calling code."""

    national_prefix: re.Pattern[str] | None
    has_transform: bool
    regions: tuple[_RegionRules, ...]

    def keeps(self, national: str) -> bool:
        """Whether parse's national-prefix stripping surely leaves ``national`` as is."""
        if self.national_prefix is None:
            return True
        match = self.national_prefix.match(national)
        if match is None:
            return True
        # An empty match strips nothing, unless a transform rule rewrites it: the
        # library only transforms when the last group captured something.
        if match.end() != 0:
            return False
        return not self.has_transform or (match.re.groups > 0 and match.groups()[-1] is None)

    def is_valid(self, national: str) -> bool:
        """region_code_for_number, then is_valid_number_for_region that region."""
        if len(self.regions) == 1:
            return self.regions[0].has_type(national)
        for region in self.regions:
            if region.leading_digits is not None:
                if region.leading_digits.match(national) is not None:
                    return region.has_type(national)
            elif region.has_type(national):
                return True
        return False


@functools.cache
def _rules_for(code: int) -> _CallingCodeRules | None:
    """Compile the rules of one calling code; ``None`` sends its numbers the slow way."""
    region_codes = phonenumbers.COUNTRY_CODE_TO_REGION_CODE.get(code, ())
    if not region_codes:
        return None
    main = PhoneMetadata.metadata_for_region_or_calling_code(code, region_codes[0])
    if main is None:
        return None
    regions: list[_RegionRules] = []
    for region_code in region_codes:
        if len(region_codes) > 1 and region_code == _NON_GEO_REGION:
            return None
        metadata = PhoneMetadata.metadata_for_region_or_calling_code(code, region_code)
        if metadata is None:
            return None
        if region_code != _NON_GEO_REGION and (
            phonenumbers.country_code_for_valid_region(region_code) != code
        ):
            return None
        region = _compile_region(metadata)
        if region is None:
            return None
        regions.append(region)
    prefix = main.national_prefix_for_parsing
    return _CallingCodeRules(
        national_prefix=re.compile(prefix) if prefix else None,
        has_transform=bool(main.national_prefix_transform_rule),
        regions=tuple(regions),
    )


def _compile_region(metadata: PhoneMetadata) -> _RegionRules | None:
    leading_digits = _leading_digits(metadata)
    general = metadata.general_desc
    if general is None or not general.national_number_pattern:
        return _RegionRules(leading_digits=leading_digits, sources={})
    # The number types _number_type_helper tries after the general description; a
    # number is valid when it matches the general description and one of them. It
    # skips the mobile description when it says mobile and fixed-line are the same.
    descs = [
        metadata.premium_rate,
        metadata.toll_free,
        metadata.shared_cost,
        metadata.voip,
        metadata.personal_number,
        metadata.pager,
        metadata.uan,
        metadata.voicemail,
        metadata.fixed_line,
    ]
    if not metadata.same_mobile_and_fixed_line_pattern:
        descs.append(metadata.mobile)
    usable = [d for d in descs if d is not None and d.national_number_pattern]
    patterns = [general.national_number_pattern, *(d.national_number_pattern for d in usable)]
    if not all(_PLAIN_PATTERN.fullmatch(p or "") for p in patterns):
        return None
    # The general description must match the whole number (the look-ahead), then
    # any one of the number types allowing this length must match it too.
    must_match_general = rf"(?=(?:{general.national_number_pattern})\Z)"
    sources: dict[int, str] = {}
    for length in range(1, MAX_DIGITS + 1):
        if not _allows(general, length):
            continue
        alternatives = [f"(?:{d.national_number_pattern})" for d in usable if _allows(d, length)]
        if alternatives:
            sources[length] = f"{must_match_general}(?:{'|'.join(alternatives)})"
    return _RegionRules(leading_digits=leading_digits, sources=sources)


def _leading_digits(metadata: PhoneMetadata) -> re.Pattern[str] | None:
    # The library tests ``is not None``: an empty pattern matches every number.
    return None if metadata.leading_digits is None else re.compile(metadata.leading_digits)


def _allows(desc: PhoneNumberDesc, length: int) -> bool:
    """The length test of _is_number_matching_desc: no lengths listed means any."""
    return not desc.possible_length or length in desc.possible_length
