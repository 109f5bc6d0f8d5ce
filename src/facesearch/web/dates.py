"""Dates as people read them. Stored times are ISO 8601 in UTC; a page shows them as
"28 Nov 2026, 14:05 UTC" inside <time datetime=...>, and app.js rewrites each one into the
reader's own time zone (the text stays true where scripts do not run)."""

from __future__ import annotations

from datetime import datetime, timezone

from markupsafe import Markup, escape


def readable(value: str | None, with_time: bool = True) -> str:
    """The plain text of an ISO time: "28 Nov 2026, 14:05 UTC", or the date alone."""
    if not value:
        return ""
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return value
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    moment = moment.astimezone(timezone.utc)
    day = f"{moment.day} {moment:%b %Y}"
    return f"{day}, {moment:%H:%M} UTC" if with_time else day


def when(value: str | None, with_time: bool = True) -> Markup:
    """A <time> element for a template: {{ case.opened_at|when }}, {{ x|when(False) }}."""
    if not value:
        return Markup("")
    kind = "datetime" if with_time else "date"
    return Markup('<time datetime="{}" data-show="{}">{}</time>').format(
        escape(value), kind, readable(value, with_time))
