"""Detection is partitioned by the UTC day sessions started on."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

from dagster import DailyPartitionsDefinition

# Sessions that started before this day are outside detection's partitions.
FIRST_DAY = "2025-01-01"

# end_offset=1: today's partition exists while the day is in progress (live detection).
daily = DailyPartitionsDefinition(start_date=FIRST_DAY, timezone="UTC", end_offset=1)


def day_start(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=timezone.utc)


def partition_day(key: str) -> date:
    return date.fromisoformat(key)


def clip_days(days: list[date], today: date) -> tuple[list[date], list[date]]:
    """(days that have a partition, days that don't: before FIRST_DAY or after tomorrow)."""
    first, last = date.fromisoformat(FIRST_DAY), today + timedelta(days=1)
    inside = [d for d in days if first <= d <= last]
    return inside, [d for d in days if d not in inside]
