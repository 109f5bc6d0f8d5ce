"""Policy as people read it: lawful bases named with their article, periods in days and years,
for the pages, the record of processing and the CLI alike (the stored codes and numbers stay
as they are for machines: the API's JSON)."""

from __future__ import annotations

from collections.abc import Iterable

from facesearch.policy.rules import LAWFUL_BASES, lawful_basis_in_words

YEAR_DAYS = 365


def days_in_words(days: int) -> str:
    """A period in days as people say it: "1 day", "90 days", "1 year", "3 years"; a period
    that is not whole years, over one year, with its rough length: "700 days (about 1.9
    years)"."""
    if days > 0 and days % YEAR_DAYS == 0:
        years = days // YEAR_DAYS
        return f"{years} year{'s' if years != 1 else ''}"
    words = f"{days} day{'s' if days != 1 else ''}"
    if days > YEAR_DAYS:
        words += f" (about {days / YEAR_DAYS:.1f} years)"
    return words


def hours_in_words(hours: int) -> str:
    """ "1 hour", "8 hours"; whole days past a day: "2 days"."""
    if hours >= 24 and hours % 24 == 0:
        return days_in_words(hours // 24)
    return f"{hours} hour{'s' if hours != 1 else ''}"


def source_in_words(name: str, display_name: str = "") -> str:
    """The name people are shown for a source: its display name, its name where it has none."""
    return display_name or name


def source_names(sources: Iterable) -> dict[str, str]:  # store.metadata.Source
    """Each source's name -> source_in_words."""
    return {s.name: source_in_words(s.name, s.display_name) for s in sources}


def record_in_words(record: dict) -> dict:
    """The record of processing (Governance.record_of_processing) to be read by a person: each
    source as one line with its lawful basis in words and how long its images are kept, and
    each retention period in days or hours as a period."""
    readable = dict(record)
    readable["sources"] = [
        f"{source_in_words(s['name'], s.get('display_name', ''))}: {lawful_basis_in_words(s['lawful_basis'])}, jurisdiction "
        f"{s['jurisdiction']}, images kept {days_in_words(s['retention_days'])}"
        for s in record.get("sources", [])]
    retention = {}
    for key, value in record.get("retention", {}).items():
        if key.endswith("_days") and isinstance(value, int):
            retention[key.removesuffix("_days")] = days_in_words(value)
        elif key.endswith("_hours") and isinstance(value, int):
            retention[key.removesuffix("_hours")] = hours_in_words(value)
        else:
            retention[key] = value
    readable["retention"] = retention
    return readable


__all__ = ["LAWFUL_BASES", "days_in_words", "hours_in_words", "lawful_basis_in_words", "record_in_words",
           "source_in_words", "source_names"]
