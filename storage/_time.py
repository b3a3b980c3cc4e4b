"""How timestamps are stored: ISO-8601 UTC text with microseconds (sortable as text)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

#: Where the repositories get "now" from (tests pass a fixed clock).
Clock = Callable[[], datetime]


def utcnow() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(UTC)


def to_db(value: datetime) -> str:
    """An aware datetime as stored text; naive datetimes are refused (their zone is a guess)."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("naive datetime: pass a timezone-aware one")
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def from_db(value: str) -> datetime:
    """Stored text back to an aware UTC datetime."""
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        # Rows written by hand (sqlite3 shell) may lack the offset; everything here is UTC.
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def opt_from_db(value: str | None) -> datetime | None:
    return None if value is None else from_db(value)
