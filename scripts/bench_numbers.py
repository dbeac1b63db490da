"""Batch number validation: ``normalize_mobile`` in a loop against ``validate_numbers``.

Generates numbers deterministically (``--seed``) from the metadata's example mobile
numbers of 25 countries, weighted roughly by traffic, their last digits replaced at
random. Two workloads: all distinct valid-looking numbers, and a dirty mix (10%
repeats, 5% malformed, 5% random digits after a real calling code). Checks that both
ways give identical verdicts, then prints a table. Runtime is bounded by ``--count``
(the loop costs ~30-45 µs per number: ~5 s per workload at 100,000).

    .venv/bin/python scripts/bench_numbers.py               # 100,000 numbers
    .venv/bin/python scripts/bench_numbers.py --count 10000 --seed 3

Exits 1 if the two ways disagree on any number.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Callable, Sequence

import phonenumbers

from server.domain.errors import InvalidArgument
from server.domain.number_judge import DUPLICATE_REASON, NumberVerdicts, validate_numbers
from server.domain.phones import normalize_mobile

# (region, weight): a rough share of SMS traffic, so +1/+7/+44 regions sharing a
# calling code and the national-prefix oddities of AR, BR and MX are all present.
COUNTRIES: tuple[tuple[str, int], ...] = (
    *(("IN", 14), ("CN", 12), ("US", 10), ("ID", 6), ("BR", 6), ("NG", 5)),
    *(("RU", 4), ("PK", 4), ("MX", 4), ("GB", 4), ("DE", 3), ("FR", 3), ("JP", 3)),
    *(("PH", 3), ("VN", 3), ("EG", 2), ("TR", 2), ("IT", 2), ("AR", 2), ("CA", 2)),
    *(("KZ", 1), ("ZA", 1), ("KE", 1), ("AU", 1), ("ES", 1)),
)
CALLING_CODES = sorted(phonenumbers.COUNTRY_CODE_TO_REGION_CODE)


def valid_looking(count: int, rng: random.Random) -> list[str]:
    """``count`` distinct numbers: an example mobile number with its tail replaced."""
    bases: list[tuple[str, str]] = []
    weights: list[int] = []
    for region, weight in COUNTRIES:
        example = phonenumbers.example_number_for_type(region, phonenumbers.PhoneNumberType.MOBILE)
        assert example is not None, region
        national = phonenumbers.national_significant_number(example)
        bases.append((str(example.country_code), national))
        weights.append(weight)
    numbers: dict[str, None] = {}
    while len(numbers) < count:
        code, national = rng.choices(bases, weights)[0]
        keep = len(national) - min(6, len(national) - 4)
        tail = "".join(rng.choices("0123456789", k=len(national) - keep))
        numbers[f"+{code}{national[:keep]}{tail}"] = None
    return list(numbers)


def dirty(count: int, rng: random.Random) -> list[str]:
    """80% valid-looking, 10% repeats, 5% malformed, 5% random digits, shuffled."""
    base = valid_looking(count * 8 // 10, rng)
    repeats = rng.choices(base, k=count // 10)
    malformed = [f"{raw[:4]} {raw[4:]}" for raw in rng.choices(base, k=count // 20)]
    random_digits = [
        f"+{rng.choice(CALLING_CODES)}{rng.randrange(10**9):09d}"
        for _ in range(count - len(base) - len(repeats) - len(malformed))
    ]
    numbers = base + repeats + malformed + random_digits
    rng.shuffle(numbers)
    return numbers


def one_by_one(numbers: Sequence[str]) -> NumberVerdicts:
    """The baseline: normalize_mobile on each number, first occurrence wins."""
    accepted: list[tuple[str, str]] = []
    rejected: list[tuple[str, str]] = []
    seen: set[str] = set()
    for raw in numbers:
        try:
            e164 = normalize_mobile(raw, "numbers")
        except InvalidArgument as exc:
            rejected.append((raw, exc.violations[0].description))
            continue
        if e164 in seen:
            rejected.append((raw, DUPLICATE_REASON))
        else:
            seen.add(e164)
            accepted.append((raw, e164))
    return NumberVerdicts(accepted=accepted, rejected=rejected)


def timed(
    validate: Callable[[Sequence[str]], NumberVerdicts], numbers: Sequence[str]
) -> tuple[float, NumberVerdicts]:
    started = time.perf_counter()
    verdicts = validate(numbers)
    return time.perf_counter() - started, verdicts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--count", type=int, default=100_000, help="numbers per workload")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    if not 1 <= args.count <= 1_000_000:
        parser.error("--count must be between 1 and 1,000,000")

    rng = random.Random(args.seed)
    workloads = {
        "valid-looking": valid_looking(args.count, rng),
        "dirty mix": dirty(args.count, rng),
    }
    # Load every region's metadata up front: neither side should pay for the imports.
    for code, regions in phonenumbers.COUNTRY_CODE_TO_REGION_CODE.items():
        for region in regions:
            phonenumbers.PhoneMetadata.metadata_for_region_or_calling_code(code, region)

    header = (
        f"{'workload':<14} {'numbers':>8} {'accepted':>8} {'rejected':>8} "
        f"{'loop s':>7} {'batch 1st s':>11} {'batch s':>8} {'µs/number':>9} {'speed-up':>8}"
    )
    print(f"seed {args.seed}; batch 1st = first call (compiles its patterns), batch = best of 3")
    print(header)
    print("-" * len(header))
    same = True
    for name, numbers in workloads.items():
        loop_seconds, expected = timed(one_by_one, numbers)
        first_seconds, verdicts = timed(validate_numbers, numbers)
        best = min(timed(validate_numbers, numbers)[0] for _ in range(3))
        same = same and verdicts == expected
        print(
            f"{name:<14} {len(numbers):>8,} {len(verdicts.accepted):>8,} "
            f"{len(verdicts.rejected):>8,} {loop_seconds:>7.2f} {first_seconds:>11.3f} "
            f"{best:>8.3f} {best / len(numbers) * 1e6:>9.2f} {loop_seconds / best:>7.1f}x"
        )
    print(f"identical verdicts: {'yes' if same else 'NO'}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
