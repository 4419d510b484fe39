"""Send windows: mail due in the customer's night waits for their morning (pure).

A window is a daily span of local time (and optionally some weekdays only) in the
customer's time zone: their `timezone` metadata in Stripe if it names one, else the zone
of their billing country, else the configured default.
"""

import re
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_CLOCK = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")

# The zone most of a country's people live in: for countries spanning several, the
# most populous one (a customer elsewhere can set `timezone` metadata in Stripe).
COUNTRY_ZONES = {
    "AE": "Asia/Dubai",
    "AR": "America/Argentina/Buenos_Aires",
    "AT": "Europe/Vienna",
    "AU": "Australia/Sydney",
    "BE": "Europe/Brussels",
    "BG": "Europe/Sofia",
    "BR": "America/Sao_Paulo",
    "CA": "America/Toronto",
    "CH": "Europe/Zurich",
    "CL": "America/Santiago",
    "CN": "Asia/Shanghai",
    "CO": "America/Bogota",
    "CY": "Asia/Nicosia",
    "CZ": "Europe/Prague",
    "DE": "Europe/Berlin",
    "DK": "Europe/Copenhagen",
    "EE": "Europe/Tallinn",
    "EG": "Africa/Cairo",
    "ES": "Europe/Madrid",
    "FI": "Europe/Helsinki",
    "FR": "Europe/Paris",
    "GB": "Europe/London",
    "GR": "Europe/Athens",
    "HK": "Asia/Hong_Kong",
    "HR": "Europe/Zagreb",
    "HU": "Europe/Budapest",
    "ID": "Asia/Jakarta",
    "IE": "Europe/Dublin",
    "IL": "Asia/Jerusalem",
    "IN": "Asia/Kolkata",
    "IS": "Atlantic/Reykjavik",
    "IT": "Europe/Rome",
    "JP": "Asia/Tokyo",
    "KE": "Africa/Nairobi",
    "KR": "Asia/Seoul",
    "LT": "Europe/Vilnius",
    "LU": "Europe/Luxembourg",
    "LV": "Europe/Riga",
    "MT": "Europe/Malta",
    "MX": "America/Mexico_City",
    "MY": "Asia/Kuala_Lumpur",
    "NG": "Africa/Lagos",
    "NL": "Europe/Amsterdam",
    "NO": "Europe/Oslo",
    "NZ": "Pacific/Auckland",
    "PE": "America/Lima",
    "PH": "Asia/Manila",
    "PK": "Asia/Karachi",
    "PL": "Europe/Warsaw",
    "PT": "Europe/Lisbon",
    "RO": "Europe/Bucharest",
    "SA": "Asia/Riyadh",
    "SE": "Europe/Stockholm",
    "SG": "Asia/Singapore",
    "SI": "Europe/Ljubljana",
    "SK": "Europe/Bratislava",
    "TH": "Asia/Bangkok",
    "TR": "Europe/Istanbul",
    "TW": "Asia/Taipei",
    "UA": "Europe/Kyiv",
    "US": "America/New_York",
    "VN": "Asia/Ho_Chi_Minh",
    "ZA": "Africa/Johannesburg",
}


@dataclass(frozen=True)
class SendWindow:
    """Local time of day from `start` up to `end` (minutes after midnight), on `days`
    (0 = Monday). `end` before `start` spans midnight (e.g. 22:00-02:00)."""

    start: int
    end: int
    days: list[int] = field(default_factory=lambda: list(range(7)))

    def describe(self) -> str:
        span = f"{_clock(self.start)}-{_clock(self.end)}"
        if len(self.days) == 7:
            return span
        return f"{span} {','.join(DAYS[d] for d in self.days)}"


def parse_clock(value: object) -> int:
    """`08:30` → minutes after midnight."""
    match = _CLOCK.match(str(value)) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f"bad time of day {value!r} (use HH:MM, e.g. 08:00)")
    return int(match.group(1)) * 60 + int(match.group(2))


def parse_window(value: object) -> SendWindow | None:
    """`08:00-20:00`, `{start: "08:00", end: "20:00", days: [mon, tue]}`, or `any` (None)."""
    if value == "any":
        return None
    if isinstance(value, str):
        start, sep, end = value.partition("-")
        if not sep:
            raise ValueError(f"bad send window {value!r} (use 08:00-20:00 or any)")
        window = SendWindow(parse_clock(start.strip()), parse_clock(end.strip()))
    elif isinstance(value, dict):
        unknown = set(value) - {"start", "end", "days"}
        if unknown:
            raise ValueError(f"unknown send window field {sorted(unknown)[0]!r}")
        days = value.get("days", list(DAYS))
        if not isinstance(days, list) or not days or any(d not in DAYS for d in days):
            raise ValueError(f"send window days must be a list of {', '.join(DAYS)}")
        window = SendWindow(
            parse_clock(value.get("start")),
            parse_clock(value.get("end")),
            sorted({DAYS.index(d) for d in days}),
        )
    else:
        raise ValueError(f"bad send window {value!r} (use 08:00-20:00, a mapping, or any)")
    if window.start == window.end:
        raise ValueError("a send window needs a start different from its end")
    return window


def zone_for(timezone: str | None, country: str | None, default: str) -> ZoneInfo:
    """The customer's zone: their own setting, else their country's, else the default."""
    for name in (timezone, COUNTRY_ZONES.get((country or "").upper()), default):
        if not name:
            continue
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            continue
    return ZoneInfo("UTC")


def next_send_time(due: datetime, window: SendWindow, zone: ZoneInfo) -> datetime:
    """`due` if it falls inside the window, else the next moment the window opens."""
    local = due.astimezone(zone)
    if _inside(local, window):
        return due
    # Try each opening over the next eight days; the first one after `due` wins.
    for offset in range(9):
        day = local.date() + timedelta(days=offset)
        opening = datetime.combine(day, time(window.start // 60, window.start % 60), zone)
        if opening > local and opening.weekday() in window.days:
            return opening.astimezone(due.tzinfo)
    return due


def _inside(local: datetime, window: SendWindow) -> bool:
    minute = local.hour * 60 + local.minute
    if window.start < window.end:
        return window.start <= minute < window.end and local.weekday() in window.days
    # Across midnight: the late part belongs to today's window, the early part to
    # yesterday's.
    if minute >= window.start:
        return local.weekday() in window.days
    return minute < window.end and (local.weekday() - 1) % 7 in window.days


def _clock(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"
