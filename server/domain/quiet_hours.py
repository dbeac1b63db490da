"""Marketing quiet hours: no campaign text at night, in the recipient's own time.

An account may set a window per recipient country (ISO code, ``*`` for every other
country), in local time, e.g. ``21:00-08:00``. A marketing message that would be due
inside the window waits until it closes. The local time is the number's: its time
zones come from phonenumbers' prefix data. A number that may be in several zones (a
mobile in a country that spans zones) waits until the window is closed in all of
them; if that never happens within a day, its first zone decides. A number with no
known zone is not held.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from phonenumbers import timezone as phone_timezones

from server.domain.errors import InvalidArgument

ANY_COUNTRY = "*"
_CLOCK = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)(?::([0-5]\d))?$")
_REGION = re.compile(r"^[A-Z]{2}$")
# phonenumbers' time-zone data is keyed by at most this many leading digits, so
# numbers that share them share their zones (and their country).
_ZONE_PREFIX_CHARS = 1 + 9
_ZONE_CACHE_LIMIT = 100_000


@dataclass(frozen=True)
class Window:
    """Local quiet time from ``start`` up to ``end``; crosses midnight if end < start."""

    start: time
    end: time

    @classmethod
    def parse(cls, text: str, field_name: str = "quiet_hours") -> Window:
        parts = text.strip().split("-")
        clocks = [_clock(p.strip()) for p in parts] if len(parts) == 2 else []
        if len(clocks) != 2 or None in clocks:
            raise InvalidArgument.field(field_name, f"{text!r} is not a window like 21:00-08:00")
        start, end = clocks
        assert start is not None and end is not None
        if start == end:
            raise InvalidArgument.field(field_name, "a window must not start where it ends")
        return cls(start, end)

    def __str__(self) -> str:
        return f"{_format(self.start)}-{_format(self.end)}"

    def contains(self, moment: time) -> bool:
        if self.start < self.end:
            return self.start <= moment < self.end
        return moment >= self.start or moment < self.end

    def closes_after(self, local: datetime) -> datetime | None:
        """When the window that ``local`` falls in closes (None: not in a window)."""
        clock = local.time().replace(tzinfo=None)
        if not self.contains(clock):
            return None
        day = local.date()
        if self.start > self.end and clock >= self.start:
            day += timedelta(days=1)
        return datetime.combine(day, self.end, tzinfo=local.tzinfo)


@dataclass(frozen=True)
class QuietHours:
    """An account's windows by recipient country (``*``: every other country)."""

    windows: Mapping[str, Window] = field(default_factory=dict)

    @classmethod
    def parse(cls, specs: list[str], field_name: str = "quiet_hours") -> QuietHours:
        """From ``21:00-08:00`` (every country) and ``US=22:00-07:00`` entries."""
        windows: dict[str, Window] = {}
        for spec in specs:
            region, _, text = spec.rpartition("=")
            region = region.strip().upper() or ANY_COUNTRY
            if region != ANY_COUNTRY and not _REGION.match(region):
                raise InvalidArgument.field(field_name, f"{region!r} is not an ISO country code")
            if region in windows:
                raise InvalidArgument.field(field_name, f"{region} has two windows")
            windows[region] = Window.parse(text, field_name)
        return cls(windows)

    @classmethod
    def from_json(cls, stored: Mapping[str, list[str]]) -> QuietHours:
        return cls(
            {region: Window(_parse_clock(a), _parse_clock(b)) for region, (a, b) in stored.items()}
        )

    def to_json(self) -> dict[str, list[str]]:
        return {r: [_format(w.start), _format(w.end)] for r, w in self.windows.items()}

    def window_for(self, region: str | None) -> Window | None:
        if region is not None and region in self.windows:
            return self.windows[region]
        return self.windows.get(ANY_COUNTRY)

    def release(self, e164: str, due: datetime) -> datetime:
        """The first moment at or after ``due`` outside the number's quiet window."""
        if not self.windows:
            return due
        region, zones = _zones(e164)
        window = self.window_for(region)
        if window is None or not zones:
            return due
        moment = due
        for _ in range(2 * len(zones) + 2):
            closes = [c for z in zones if (c := window.closes_after(moment.astimezone(z)))]
            if not closes:
                return moment
            moment = max(closes).astimezone(UTC)
            if moment - due > timedelta(days=1):
                break
        first = window.closes_after(due.astimezone(zones[0]))
        return due if first is None else first.astimezone(UTC)


def _clock(text: str) -> time | None:
    match = _CLOCK.match(text)
    if match is None:
        return None
    hours, minutes, seconds = match.groups()
    return time(int(hours), int(minutes), int(seconds or 0))


def _parse_clock(text: str) -> time:
    parsed = _clock(text)
    if parsed is None:
        raise ValueError(f"stored quiet hours hold a bad clock time: {text!r}")
    return parsed


def _format(moment: time) -> str:
    return moment.strftime("%H:%M:%S" if moment.second else "%H:%M")


_zone_cache: dict[str, tuple[str | None, tuple[ZoneInfo, ...]]] = {}


def _zones(e164: str) -> tuple[str | None, tuple[ZoneInfo, ...]]:
    """The number's country and the time zones it may be in (cached by prefix)."""
    key = e164[:_ZONE_PREFIX_CHARS]
    found = _zone_cache.get(key)
    if found is None:
        found = _lookup(e164)
        if len(_zone_cache) >= _ZONE_CACHE_LIMIT:
            _zone_cache.clear()
        _zone_cache[key] = found
    return found


def _lookup(e164: str) -> tuple[str | None, tuple[ZoneInfo, ...]]:
    try:
        number = phonenumbers.parse(e164)
    except phonenumbers.NumberParseException:
        return None, ()
    zones: list[ZoneInfo] = []
    for name in phone_timezones.time_zones_for_number(number):
        if name == phone_timezones.UNKNOWN_TIMEZONE:
            continue
        try:
            zones.append(ZoneInfo(name))
        except (ZoneInfoNotFoundError, ValueError):
            continue
    return phonenumbers.region_code_for_number(number), tuple(zones)
