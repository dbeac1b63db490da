"""The SMS-pumping guard's decisions, without a database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.domain.errors import PermissionDenied, ResourceExhausted
from server.domain.otp_guard import (
    ALLOWED,
    COUNTRY_NOT_ALLOWED,
    COUNTRY_SCOPE,
    COUNTRY_VELOCITY,
    PREFIX_SCOPE,
    PREFIX_VELOCITY,
    GuardDecision,
    GuardSettings,
    VelocityCheck,
    VelocityResult,
    check_allowlist,
    guard_checks,
    judge,
    prefix_of,
    raise_if_blocked,
)

CN = "+8613800138000"
US = "+14155550123"
FREEPHONE = "+80012345678"  # +800: valid, but of no country

NOW = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)

e164_numbers = st.from_regex(r"\+[1-9][0-9]{7,14}", fullmatch=True)


def result(scope: str, count: int, limit: int, wait: float = 60.0) -> VelocityResult:
    return VelocityResult(
        scope=scope,
        key="7:x",
        count=count,
        limit=limit,
        window_end=NOW + timedelta(seconds=wait),
        counted_at=NOW,
    )


# prefix_of


def test_prefix_is_the_number_without_its_last_four_digits() -> None:
    assert prefix_of(CN) == "+861380013"
    assert prefix_of(US) == "+1415555"


@given(e164_numbers, st.text("0123456789", min_size=4, max_size=4))
def test_numbers_that_differ_only_in_the_last_four_digits_share_a_prefix(
    number: str, last_four: str
) -> None:
    neighbour = number[:-4] + last_four
    assert prefix_of(number) == prefix_of(neighbour)
    assert prefix_of(number) + number[-4:] == number


@pytest.mark.parametrize("bad", ["", "+", "+1234", "8613800138000", "+86 1380013800"])
def test_prefix_of_rejects_what_is_not_a_normalized_number(bad: str) -> None:
    with pytest.raises(ValueError):
        prefix_of(bad)


# guard_checks


def test_checks_count_per_account_prefix_and_per_account_country() -> None:
    settings = GuardSettings(prefix_limit=3, prefix_window_seconds=60, country_limit=100)
    assert guard_checks(7, CN, settings) == [
        VelocityCheck(PREFIX_SCOPE, "7:+861380013", 60, 3),
        VelocityCheck(COUNTRY_SCOPE, "7:CN", 3600, 100),
    ]


def test_numbers_of_no_country_are_counted_together_under_zz() -> None:
    checks = guard_checks(7, FREEPHONE, GuardSettings())
    assert [c.key for c in checks if c.scope == COUNTRY_SCOPE] == ["7:ZZ"]


def test_a_limit_of_zero_turns_its_check_off() -> None:
    assert [c.scope for c in guard_checks(7, CN, GuardSettings(prefix_limit=0))] == [COUNTRY_SCOPE]
    assert [c.scope for c in guard_checks(7, CN, GuardSettings(country_limit=0))] == [PREFIX_SCOPE]
    assert guard_checks(7, CN, GuardSettings(prefix_limit=0, country_limit=0)) == []


def test_monitor_only_counts_the_same_checks() -> None:
    assert guard_checks(7, CN, GuardSettings(monitor_only=True)) == guard_checks(
        7, CN, GuardSettings()
    )


@pytest.mark.parametrize(
    "kwargs",
    [
        {"prefix_limit": -1},
        {"country_limit": -1},
        {"prefix_window_seconds": 0},
        {"country_window_seconds": -5},
        {"prefix_window_seconds": float("nan")},
        {"country_window_seconds": float("inf")},
    ],
)
def test_bad_settings_fail_fast(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        GuardSettings(**kwargs)  # type: ignore[arg-type]


# check_allowlist


def test_no_allowlist_allows_every_number() -> None:
    assert check_allowlist(CN, None, monitor_only=False) == ALLOWED
    assert check_allowlist(FREEPHONE, None, monitor_only=False) == ALLOWED


def test_allowlist_allows_its_countries_and_refuses_the_others() -> None:
    allowed = frozenset({"US", "GB"})
    assert check_allowlist(US, allowed, monitor_only=False) == ALLOWED
    decision = check_allowlist(CN, allowed, monitor_only=False)
    assert not decision.allowed
    assert decision.reason == COUNTRY_NOT_ALLOWED
    assert "CN" in decision.message


def test_an_empty_allowlist_allows_nothing() -> None:
    assert not check_allowlist(US, frozenset(), monitor_only=False).allowed


def test_numbers_of_no_country_pass_an_allowlist_only_when_it_lists_zz() -> None:
    refused = check_allowlist(FREEPHONE, frozenset({"US"}), monitor_only=False)
    assert refused.reason == COUNTRY_NOT_ALLOWED
    assert "no country" in refused.message
    assert check_allowlist(FREEPHONE, frozenset({"US", "ZZ"}), monitor_only=False) == ALLOWED


def test_monitor_only_allowlist_lets_the_number_through_and_reports_it() -> None:
    decision = check_allowlist(CN, frozenset({"US"}), monitor_only=True)
    assert decision.allowed
    assert decision.monitored == (COUNTRY_NOT_ALLOWED,)
    assert check_allowlist(US, frozenset({"US"}), monitor_only=True).monitored == ()


# VelocityResult and judge


def test_result_is_exceeded_only_past_its_limit() -> None:
    assert not result(PREFIX_SCOPE, 3, 3).exceeded
    assert result(PREFIX_SCOPE, 4, 3).exceeded


def test_retry_after_is_whole_seconds_to_the_window_end_and_at_least_one() -> None:
    r = result(PREFIX_SCOPE, 4, 3, wait=12.3)
    assert r.retry_after() == 13.0
    assert r.retry_after(NOW + timedelta(seconds=10)) == 3.0
    assert r.retry_after(NOW + timedelta(seconds=12.3)) == 1.0
    assert r.retry_after(NOW + timedelta(hours=1)) == 1.0


def test_counts_within_their_limits_are_allowed() -> None:
    results = [result(PREFIX_SCOPE, 10, 10), result(COUNTRY_SCOPE, 1, 1000)]
    assert judge(results, monitor_only=False) == ALLOWED
    assert judge([], monitor_only=False) == ALLOWED


@pytest.mark.parametrize(
    ("scope", "reason"), [(PREFIX_SCOPE, PREFIX_VELOCITY), (COUNTRY_SCOPE, COUNTRY_VELOCITY)]
)
def test_a_count_over_its_limit_refuses_with_its_reason_and_wait(scope: str, reason: str) -> None:
    decision = judge([result(scope, 11, 10, wait=42)], monitor_only=False)
    assert decision == GuardDecision(allowed=False, reason=reason, retry_after=42.0)
    assert "42 seconds" in decision.message


def test_when_both_are_exceeded_the_longer_wait_decides() -> None:
    prefix = result(PREFIX_SCOPE, 11, 10, wait=30)
    country = result(COUNTRY_SCOPE, 1001, 1000, wait=900)
    decision = judge([prefix, country], monitor_only=False)
    assert (decision.reason, decision.retry_after) == (COUNTRY_VELOCITY, 900.0)
    tie = judge([result(PREFIX_SCOPE, 11, 10), result(COUNTRY_SCOPE, 2, 1)], monitor_only=False)
    assert tie.reason == PREFIX_VELOCITY


def test_monitor_only_allows_and_lists_every_exceeded_limit() -> None:
    results = [result(PREFIX_SCOPE, 50, 10), result(COUNTRY_SCOPE, 2000, 1000)]
    decision = judge(results, monitor_only=True)
    assert decision.allowed
    assert decision.reason == ""
    assert decision.monitored == (PREFIX_VELOCITY, COUNTRY_VELOCITY)


def test_an_unknown_scope_is_a_wiring_error() -> None:
    with pytest.raises(ValueError, match="otp_elsewhere"):
        judge([result("otp_elsewhere", 2, 1)], monitor_only=False)


@given(
    counts=st.lists(st.integers(1, 50), min_size=1, max_size=4),
    limit=st.integers(1, 50),
    monitor_only=st.booleans(),
)
def test_a_request_is_refused_exactly_when_a_count_exceeds_its_limit(
    counts: list[int], limit: int, monitor_only: bool
) -> None:
    scopes = [PREFIX_SCOPE, COUNTRY_SCOPE]
    results = [result(scopes[i % 2], count, limit) for i, count in enumerate(counts)]
    decision = judge(results, monitor_only=monitor_only)
    over = any(c > limit for c in counts)
    assert decision.allowed == (monitor_only or not over)
    assert bool(decision.monitored) == (monitor_only and over)
    if not decision.allowed:
        assert decision.retry_after >= 1


# raise_if_blocked


def test_allowed_decisions_raise_nothing() -> None:
    raise_if_blocked(ALLOWED)
    raise_if_blocked(judge([result(PREFIX_SCOPE, 99, 1)], monitor_only=True))


def test_a_country_refusal_is_permission_denied() -> None:
    with pytest.raises(PermissionDenied) as caught:
        raise_if_blocked(check_allowlist(CN, frozenset({"US"}), monitor_only=False))
    assert caught.value.reason == COUNTRY_NOT_ALLOWED
    assert CN not in caught.value.message
    assert prefix_of(CN) not in caught.value.message


@pytest.mark.parametrize(
    ("scope", "reason"), [(PREFIX_SCOPE, PREFIX_VELOCITY), (COUNTRY_SCOPE, COUNTRY_VELOCITY)]
)
def test_a_velocity_refusal_is_resource_exhausted_with_the_wait(scope: str, reason: str) -> None:
    settings = GuardSettings()
    check = next(c for c in guard_checks(7, CN, settings) if c.scope == scope)
    over = VelocityResult(
        check.scope, check.key, check.limit + 1, check.limit, NOW + timedelta(seconds=5), NOW
    )
    with pytest.raises(ResourceExhausted) as caught:
        raise_if_blocked(judge([over], monitor_only=False))
    assert caught.value.reason == reason
    assert caught.value.retry_after == 5.0
    assert CN not in caught.value.message
    assert prefix_of(CN) not in caught.value.message
