"""Marketing quiet hours: windows by country, in the recipient's local time."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.domain.errors import InvalidArgument
from server.domain.quiet_hours import QuietHours, Window

SHANGHAI = "+8613800138000"  # Asia/Shanghai, CN
LOS_ANGELES = "+14155550123"  # America/Los_Angeles, US
RUSSIAN_MOBILE = "+79161234567"  # could be in any of Russia's zones
NIGHT = QuietHours.parse(["21:00-08:00"])


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def test_a_message_outside_the_window_is_not_held() -> None:
    due = utc(2026, 11, 22, 4, 0)  # 12:00 in Shanghai
    assert NIGHT.release(SHANGHAI, due) == due


def test_late_evening_waits_for_the_next_morning() -> None:
    due = utc(2026, 11, 22, 14, 30)  # 22:30 in Shanghai
    assert NIGHT.release(SHANGHAI, due) == utc(2026, 11, 23, 0, 0)  # 08:00 there


def test_small_hours_wait_for_the_same_morning() -> None:
    due = utc(2026, 11, 22, 19, 0)  # 03:00 on the 23rd in Shanghai
    assert NIGHT.release(SHANGHAI, due) == utc(2026, 11, 23, 0, 0)


def test_a_country_window_overrides_the_default() -> None:
    hours = QuietHours.parse(["21:00-08:00", "us=22:00-07:30"])
    due = utc(2026, 11, 22, 6, 0)  # 22:00 in Los Angeles (PST, UTC-8)
    assert hours.release(LOS_ANGELES, due) == utc(2026, 11, 22, 15, 30)
    assert hours.release(LOS_ANGELES, utc(2026, 11, 22, 5, 30)) == utc(2026, 11, 22, 5, 30)


def test_countries_without_a_window_are_not_held() -> None:
    only_us = QuietHours.parse(["US=21:00-08:00"])
    due = utc(2026, 11, 22, 14, 30)  # night in Shanghai
    assert only_us.release(SHANGHAI, due) == due


def test_the_window_follows_daylight_saving_time() -> None:
    # Los Angeles moves to PDT (UTC-7) at 02:00 on 8 March 2026.
    due = utc(2026, 3, 8, 6, 0)  # 22:00 PST on the 7th
    assert NIGHT.release(LOS_ANGELES, due) == utc(2026, 3, 8, 15, 0)  # 08:00 PDT


def test_a_number_in_several_zones_waits_until_it_is_day_in_all() -> None:
    # Russia spans UTC+2 to UTC+12: 08:00-21:00 everywhere only from 06:00 to 09:00 UTC.
    due = utc(2026, 11, 22, 9, 30)  # 21:30 in Kamchatka
    released = NIGHT.release(RUSSIAN_MOBILE, due)
    assert released == utc(2026, 11, 23, 6, 0)
    for zone in ("Europe/Kaliningrad", "Europe/Moscow", "Asia/Kamchatka"):
        local = released.astimezone(ZoneInfo(zone)).time()
        assert time(8) <= local < time(21), zone


def test_a_number_with_no_known_zone_is_not_held() -> None:
    due = utc(2026, 11, 22, 23, 0)
    assert NIGHT.release("+447700900123", due) == due  # a drama number: no zone


@pytest.mark.parametrize(
    "spec",
    ["21:00", "25:00-08:00", "21:00-08:00-09:00", "9pm-8am", "08:00-08:00", "USA=21:00-08:00"],
)
def test_bad_windows_are_refused_naming_the_field(spec: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        QuietHours.parse([spec])
    assert [v.field for v in caught.value.violations] == ["quiet_hours"]


def test_one_window_per_country() -> None:
    with pytest.raises(InvalidArgument):
        QuietHours.parse(["US=21:00-08:00", "us=22:00-07:00"])


def test_stored_form_round_trips() -> None:
    hours = QuietHours.parse(["21:00-08:00", "CN=22:00:30-07:00"])
    assert hours.to_json() == {"*": ["21:00", "08:00"], "CN": ["22:00:30", "07:00"]}
    assert QuietHours.from_json(hours.to_json()) == hours


clocks = st.times().map(lambda t: t.replace(microsecond=0))


@given(
    start=clocks,
    end=clocks,
    due=st.datetimes(min_value=datetime(2024, 1, 1), max_value=datetime(2030, 12, 31)),
    number=st.sampled_from([SHANGHAI, LOS_ANGELES, "+61282345678", "+4930123456"]),
)
def test_release_is_never_early_never_in_the_window_and_within_a_day(
    start: time, end: time, due: datetime, number: str
) -> None:
    if start == end:
        return
    window = Window(start, end)
    hours = QuietHours({"*": window})
    due = due.replace(tzinfo=UTC)
    released = hours.release(number, due)
    zone = {
        SHANGHAI: "Asia/Shanghai",
        LOS_ANGELES: "America/Los_Angeles",
        "+61282345678": "Australia/Sydney",
        "+4930123456": "Europe/Berlin",
    }[number]
    local = released.astimezone(ZoneInfo(zone))
    assert due <= released < due + timedelta(days=1, hours=1)
    # A clock time that does not exist (a DST gap) is where the window ends that day.
    assert not window.contains(local.time().replace(tzinfo=None)) or local.time() == end
    if released > due:
        just_before = (released - timedelta(seconds=1)).astimezone(ZoneInfo(zone))
        assert window.contains(just_before.time().replace(tzinfo=None))
