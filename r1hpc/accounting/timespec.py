"""Parse the --since/--until values into absolute times.

The tool resolves Slurm-style times itself and hands sacct the resolved absolute
time, so that the jobs sacct selects and the window the usage is clipped to are the
same window. sacct prints local times without a zone; everything here is naive
local time to match.
"""

from __future__ import annotations

import re
from datetime import date, datetime, time, timedelta

_UNITS = {
    "": 1,
    "s": 1,
    "sec": 1,
    "secs": 1,
    "second": 1,
    "seconds": 1,
    "m": 60,
    "min": 60,
    "mins": 60,
    "minute": 60,
    "minutes": 60,
    "h": 3600,
    "hour": 3600,
    "hours": 3600,
    "d": 86400,
    "day": 86400,
    "days": 86400,
    "w": 604800,
    "week": 604800,
    "weeks": 604800,
}
_RELATIVE = re.compile(r"^(now|today|midnight)\s*(?:([+-])\s*(\d+)\s*([a-z]*))?$")

ACCEPTED = (
    "YYYY-MM-DD, YYYY-MM-DDTHH:MM[:SS], now, today, midnight, "
    "or now-N<unit> / today-N<unit> with unit seconds|minutes|hours|days|weeks"
)


class TimeSpecError(ValueError):
    """A --since/--until value that is not one of the accepted forms."""


def parse_time(value: str, now: datetime, what: str = "time") -> datetime:
    """Resolve ``value`` (see ACCEPTED) relative to ``now`` (naive local time)."""
    text = value.strip().lower()
    m = _RELATIVE.match(text)
    if m:
        anchor, sign, amount, unit = m.groups()
        base = now if anchor == "now" else datetime.combine(now.date(), time())
        if sign is None:
            return base
        if unit not in _UNITS:
            raise TimeSpecError(f"{what} {value!r}: unknown unit {unit!r}; expected {ACCEPTED}")
        delta = timedelta(seconds=int(amount) * _UNITS[unit])
        return base + delta if sign == "+" else base - delta
    try:
        if "t" in text or " " in text:
            parsed = datetime.fromisoformat(value.strip().replace(" ", "T"))
        else:
            parsed = datetime.combine(date.fromisoformat(text), time())
    except ValueError:
        raise TimeSpecError(f"{what} {value!r} is not a time; expected {ACCEPTED}") from None
    if parsed.tzinfo is not None:
        # sacct works in naive local time; an offset would silently shift the window.
        raise TimeSpecError(f"{what} {value!r}: give local time without a UTC offset")
    return parsed


def slurm_format(t: datetime) -> str:
    """The form sacct -S/-E accepts: YYYY-MM-DDTHH:MM:SS."""
    return t.strftime("%Y-%m-%dT%H:%M:%S")
