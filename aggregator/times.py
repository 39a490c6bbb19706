"""Times as people write and read them: ``--since`` values in, ages and waits out.

Shared by the command line and the web reader, so that ``agg list --since 24h``
and the reader's "since" filter accept the same values and both say ``2 h ago``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from aggregator.config import parse_duration
from aggregator.store import from_db_time, utc_now


def parse_since(value: str | None) -> datetime | None:
    """``24h`` (a duration back from now) or an ISO date/time; ValueError says what is wrong."""
    if not value:
        return None
    try:
        seconds = parse_duration(value)
    except ValueError:
        pass
    else:
        try:
            return utc_now() - timedelta(seconds=seconds)
        except OverflowError:
            raise ValueError(f"{value!r} reaches back before the year 1") from None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{value!r} is neither a duration (24h, 7d) nor a date (2026-11-28)") from None
    try:
        moment = moment if moment.tzinfo else moment.astimezone()
        moment.astimezone(UTC)  # the database stores UTC: a time at the edge of year 1 or 9999 may not convert
    except (ValueError, OverflowError):
        raise ValueError(f"{value!r} is out of the range of dates agg can store") from None
    return moment


def _whole_units(seconds: int) -> str | None:
    """``3 d``, ``2 h`` or ``5 min``: the largest unit that fits; None under a minute."""
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit}"
    return None


def time_ago(value: str | None, now: datetime | None = None) -> str:
    """``2 h ago``-style age of a stored time."""
    moment = from_db_time(value)
    if moment is None:
        return "?"
    seconds = max(0, int(((now or utc_now()) - moment).total_seconds()))
    age = _whole_units(seconds)
    return f"{age} ago" if age else "just now"


def time_until(value: str | None, now: datetime | None = None) -> str:
    """``in 12 min``-style wait until a stored time (``due`` once it has come)."""
    moment = from_db_time(value)
    if moment is None:
        return "-"
    seconds = int((moment - (now or utc_now())).total_seconds())
    if seconds <= 0:
        return "due"
    return f"in {_whole_units(seconds) or f'{seconds} s'}"
