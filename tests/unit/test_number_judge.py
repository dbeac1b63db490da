from __future__ import annotations

import random
from collections.abc import Iterator, Sequence

import phonenumbers
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from phonenumbers import PhoneNumberType

import server.domain.number_judge as number_judge
from server.domain.errors import InvalidArgument
from server.domain.number_judge import DUPLICATE_REASON, NumberVerdicts, validate_numbers
from server.domain.phones import normalize_mobile

# Regions whose rules are unusual (shared calling codes, national prefixes that parse
# strips or rewrites, Italian leading zeros) or whose numbers are common.
NAMED_REGIONS = [
    *("US", "CA", "BS", "JM", "PR", "GB", "GG", "IM", "JE", "CN", "IN", "RU", "KZ"),
    *("FR", "DE", "JP", "BR", "NG", "IT", "VA", "SM", "AR", "MX", "AU", "CX", "NF"),
    *("GA", "MG", "FI", "AX", "NO", "SJ", "MA", "EH", "RE", "YT", "GP", "BL", "CW"),
]
ALL_REGIONS = sorted(phonenumbers.SUPPORTED_REGIONS)
ALL_CALLING_CODES = sorted(phonenumbers.COUNTRY_CODE_TO_REGION_CODE)
NUMBER_TYPES = [
    PhoneNumberType.MOBILE,
    PhoneNumberType.FIXED_LINE,
    PhoneNumberType.TOLL_FREE,
    PhoneNumberType.PREMIUM_RATE,
    PhoneNumberType.SHARED_COST,
    PhoneNumberType.VOIP,
    PhoneNumberType.PERSONAL_NUMBER,
    PhoneNumberType.PAGER,
    PhoneNumberType.UAN,
    PhoneNumberType.VOICEMAIL,
]
ARABIC_INDIC_ZERO = 0x0660
FULL_WIDTH_ZERO = 0xFF10


def reference(numbers: Sequence[str]) -> NumberVerdicts:
    """The definition: normalize_mobile on each number, first occurrence wins."""
    accepted: list[tuple[str, str]] = []
    rejected: list[tuple[str, str]] = []
    seen: set[str] = set()
    for raw in numbers:
        try:
            e164 = normalize_mobile(raw, "numbers")
        except InvalidArgument as exc:
            [violation] = exc.violations
            rejected.append((raw, violation.description))
            continue
        if e164 in seen:
            rejected.append((raw, DUPLICATE_REASON))
        else:
            seen.add(e164)
            accepted.append((raw, e164))
    return NumberVerdicts(accepted=accepted, rejected=rejected)


def example_numbers() -> Iterator[tuple[str, str]]:
    """(calling code, national number) of every example number in the metadata."""
    for region in ALL_REGIONS:
        for number_type in NUMBER_TYPES:
            example = phonenumbers.example_number_for_type(region, number_type)
            if example is not None:
                national = phonenumbers.national_significant_number(example)
                yield str(example.country_code), national
    for code in phonenumbers.COUNTRY_CODES_FOR_NON_GEO_REGIONS:
        example = phonenumbers.example_number_for_non_geo_entity(code)
        if example is not None:
            yield str(code), phonenumbers.national_significant_number(example)


EXAMPLES = sorted(set(example_numbers()))


def variants(code: str, national: str) -> Iterator[str]:
    """The number, and numbers one small edit away from it."""
    yield f"+{code}{national}"
    for digit in "0369":
        yield f"+{code}{national[:-1]}{digit}"
    for digit in "0189":  # the national prefixes parse may strip
        yield f"+{code}{digit}{national}"
    yield f"+{code}{national}5"
    yield f"+{code}{national[:-1]}"
    yield f"+{code}{national[1:]}"


@st.composite
def example_like(draw: st.DrawFn) -> str:
    """A number built on a metadata example, its tail digits replaced, maybe cut."""
    code, national = draw(st.sampled_from(EXAMPLES))
    keep = draw(st.integers(min_value=0, max_value=len(national)))
    tail = draw(st.text(alphabet="0123456789", min_size=0, max_size=len(national) - keep + 2))
    prefix = draw(st.sampled_from(["", "", "", "0", "1", "8", "9", "15", "90"]))
    return f"+{code}{prefix}{national[:keep]}{tail}"


@st.composite
def named_region_mobile(draw: st.DrawFn) -> str:
    region = draw(st.sampled_from(NAMED_REGIONS))
    number_type = draw(st.sampled_from([PhoneNumberType.MOBILE, PhoneNumberType.FIXED_LINE]))
    example = phonenumbers.example_number_for_type(region, number_type)
    if example is None:
        return "+"
    national = phonenumbers.national_significant_number(example)
    keep = draw(st.integers(min_value=max(0, len(national) - 7), max_value=len(national)))
    tail = draw(st.text(alphabet="0123456789", min_size=len(national) - keep, max_size=10))
    return f"+{example.country_code}{national[:keep]}{tail[: len(national) - keep + 1]}"


@st.composite
def calling_code_and_digits(draw: st.DrawFn) -> str:
    code = draw(st.sampled_from([1, 7, 33, 44, 49, 55, 81, 86, 91, 234, *ALL_CALLING_CODES]))
    digits = draw(st.text(alphabet="0123456789", min_size=0, max_size=16))
    return f"+{code}{digits}"


@st.composite
def with_foreign_digit(draw: st.DrawFn) -> str:
    """A plausible number with one digit written in Arabic-Indic or full-width form."""
    raw = draw(named_region_mobile())
    if len(raw) < 2:
        return raw
    at = draw(st.integers(min_value=1, max_value=len(raw) - 1))
    if not raw[at].isdigit():
        return raw
    zero = draw(st.sampled_from([ARABIC_INDIC_ZERO, FULL_WIDTH_ZERO]))
    return raw[:at] + chr(zero + int(raw[at])) + raw[at + 1 :]


numbers_strategy = st.one_of(
    named_region_mobile(),
    example_like(),
    calling_code_and_digits(),
    with_foreign_digit(),
    st.text(alphabet="+0123456789 -().x\u0663\uff13\n", max_size=20),
    st.text(max_size=20),
)


@settings(max_examples=300, deadline=None)
@given(numbers_strategy)
def test_each_number_gets_the_verdict_of_normalize_mobile(raw: str) -> None:
    assert validate_numbers([raw]) == reference([raw])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(numbers_strategy, max_size=12), st.randoms(use_true_random=False))
def test_lists_with_repeats_get_the_verdicts_of_normalize_mobile(
    numbers: list[str], rng: random.Random
) -> None:
    with_repeats = numbers + rng.sample(numbers, k=len(numbers) // 2)
    rng.shuffle(with_repeats)
    assert validate_numbers(with_repeats) == reference(with_repeats)


def test_every_metadata_example_and_its_neighbours_get_the_same_verdict() -> None:
    numbers = [raw for code, national in EXAMPLES for raw in variants(code, national)]
    assert len(numbers) > 5_000
    assert validate_numbers(numbers) == reference(numbers)


def test_random_digits_after_every_calling_code_get_the_same_verdict() -> None:
    rng = random.Random(20240601)
    numbers = [
        f"+{code}{rng.randrange(10**length):0{length}d}"
        for code in ALL_CALLING_CODES
        for length in range(4, 14)
        for _ in range(2)
    ]
    assert validate_numbers(numbers) == reference(numbers)


@pytest.mark.parametrize(
    "raw",
    [
        "+390612345678",  # Italy: the national number starts with 0
        "+3906698",  # Vatican, via Italy's leading zero, too short
        "+379066981234",
        "+5491123456789",  # Argentina: the mobile 9
        "+541115123456",  # Argentina: 15 after the area code, rewritten by parse
        "+5215512345678",  # Mexico: the old mobile 1
        "+5501123456789",  # Brazil: national prefix 0
        "+559011987654321",  # Brazil: carrier code
        "+4407400123456",  # United Kingdom: national prefix kept
        "+447400123456",
        "+447781123456",  # Guernsey
        "+447797123456",  # Jersey
        "+447624123456",  # Isle of Man
        "+789123456789",  # Russia: national prefix 8 kept
        "+77012345678",  # Kazakhstan shares +7
        "+79123456789",
        "+12423570000",  # Bahamas shares +1
        "+12025550123",
        "+11234567890",  # +1 then the national prefix 1
        "+16135550123",  # Canada
        "+8100012345678",  # Japan: 000 prefix
        "+8613800138000",
        "+917012345678",
        "+33612345678",
        "+491701234567",
        "+5511987654321",
        "+818012345678",
        "+2348031234567",
        "+37866661212",  # San Marino
        "+378123456",
        "+6723123456",  # Norfolk Island
        "+67212345",
        "+61891621234",  # Christmas Island shares +61
        "+26120123456",  # Madagascar
        "+2410110000000",
        "+80012345678",  # international freephone, no region
        "+88213901234",
        "+999123456789",  # no such calling code
        "+12345678",
        "+0123456789",
        "",
        "+",
        "+86 138 0013 8000",
        "+8613800138000\n",
    ],
)
def test_tricky_numbers_get_the_same_verdict(raw: str) -> None:
    assert validate_numbers([raw]) == reference([raw])


def test_a_repeated_number_is_rejected_as_a_duplicate_and_the_first_is_kept() -> None:
    verdicts = validate_numbers(["+8613800138000", "+14155550123", "+8613800138000"])
    assert verdicts.accepted == [
        ("+8613800138000", "+8613800138000"),
        ("+14155550123", "+14155550123"),
    ]
    assert verdicts.rejected == [("+8613800138000", DUPLICATE_REASON)]


def test_numbers_written_differently_are_duplicates_when_their_e164_forms_match() -> None:
    # Parse strips the UK national prefix: both are +447400123456.
    verdicts = validate_numbers(["+447400123456", "+4407400123456"])
    assert verdicts.accepted == [("+447400123456", "+447400123456")]
    assert verdicts.rejected == [("+4407400123456", DUPLICATE_REASON)]


def test_an_invalid_repeat_keeps_its_own_reason() -> None:
    verdicts = validate_numbers(["+12345678", "+12345678"])
    assert verdicts.accepted == []
    assert [reason for _, reason in verdicts.rejected] == [
        "The mobile number is not a valid phone number for its country."
    ] * 2


def test_input_order_is_kept() -> None:
    numbers = ["+491701234567", "bad", "+33612345678", "+8613800138000", "+1", "+917012345678"]
    verdicts = validate_numbers(numbers)
    assert [raw for raw, _ in verdicts.accepted] == [
        "+491701234567",
        "+33612345678",
        "+8613800138000",
        "+917012345678",
    ]
    assert [raw for raw, _ in verdicts.rejected] == ["bad", "+1"]


def test_an_empty_list_gives_empty_verdicts() -> None:
    assert validate_numbers([]) == NumberVerdicts(accepted=[], rejected=[])


def test_every_rejected_number_has_a_sentence_as_its_reason() -> None:
    numbers = ["", "+", "abc", "+0123456789", "+1234567", "+1234567890123456", "+12345678"]
    verdicts = validate_numbers([*numbers, "+33612345678", "+33612345678"])
    assert [raw for raw, _ in verdicts.rejected] == [*numbers, "+33612345678"]
    for _, reason in verdicts.rejected:
        assert reason
        assert reason == DUPLICATE_REASON or reason.endswith(".")
    assert len({reason for _, reason in verdicts.rejected}) == 7


def mixed_thousand() -> list[str]:
    """600 distinct valid numbers, 200 repeats of them, 100 malformed, 100 invalid."""
    rng = random.Random(7)
    valid = [f"+86138{n:08d}" for n in rng.sample(range(10**8), 150)]
    valid += [f"+9198{n:08d}" for n in rng.sample(range(10**8), 150)]
    valid += [f"+447400{n:06d}" for n in rng.sample(range(10**6), 150)]
    valid += [f"+4917{n:09d}" for n in rng.sample(range(10**9), 150)]
    repeats = rng.choices(valid, k=200)
    malformed = [f"+86 138{n:08d}" for n in range(50)] + [f"+1{n:05d}" for n in range(50)]
    invalid = [f"+1{n:03d}5550123" for n in range(100, 200)]  # area codes from 1
    numbers = valid + repeats + malformed + invalid
    rng.shuffle(numbers)
    return numbers


def test_a_mixed_list_of_a_thousand_gives_the_known_counts() -> None:
    numbers = mixed_thousand()
    verdicts = validate_numbers(numbers)
    assert len(verdicts.accepted) == 600
    assert len(verdicts.rejected) == 400
    reasons = [reason for _, reason in verdicts.rejected]
    assert reasons.count(DUPLICATE_REASON) == 200
    assert sum("not a valid phone number" in reason for reason in reasons) == 100
    assert verdicts == reference(numbers)


def count_slow_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Make validate_numbers record every number it hands to normalize_mobile."""
    slow_calls: list[str] = []

    def counting_normalize_mobile(raw: str, field: str = "mobile") -> str:
        slow_calls.append(raw)
        return normalize_mobile(raw, field)

    monkeypatch.setattr(number_judge, "normalize_mobile", counting_normalize_mobile)
    return slow_calls


def test_common_valid_numbers_do_not_need_the_slow_path(monkeypatch: pytest.MonkeyPatch) -> None:
    slow_calls = count_slow_calls(monkeypatch)
    numbers = [
        *("+12025550123", "+16135550123", "+447400123456", "+8613800138000"),
        *("+917012345678", "+79123456789", "+77012345678", "+33612345678"),
        *("+491701234567", "+818012345678", "+5511987654321", "+2348031234567"),
        *("+5491123456789", "+393123456789", "+12423570000"),
    ]
    verdicts = validate_numbers(numbers)
    assert len(verdicts.accepted) == len(numbers)
    assert slow_calls == []


def test_numbers_invalid_for_their_country_cost_one_slow_check_per_call(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    slow_calls = count_slow_calls(monkeypatch)
    numbers = ["+12345678", "+19995550123", "+4423456789", "+491234567890", "+55212345678"]
    verdicts = validate_numbers(numbers)
    assert verdicts == reference(numbers)
    assert {reason for _, reason in verdicts.rejected} == {
        "The mobile number is not a valid phone number for its country."
    }
    assert slow_calls == ["+12345678"]
