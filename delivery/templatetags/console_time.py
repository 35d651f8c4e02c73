"""Human times for the console: `{{ moment|ago }}` reads "40 s ago", "3 h 5 min ago" or "in 4 months".

Django's `timesince` says "0 minutes" for anything under a minute, which is most of what a
real-time console shows; these filters keep seconds for the recent past.
"""

from __future__ import annotations

import datetime as dt

from django import template
from django.utils import timezone

register = template.Library()


def span(seconds: float) -> str:
    """A duration to the unit that matters: "40 s", "12 min", "3 h 5 min", "2 days", "4 months"."""
    seconds = int(abs(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min"
    if seconds < 86_400:
        hours, minutes = divmod(seconds // 60, 60)
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days = seconds // 86_400
    if days < 60:
        return f"{days} day{'s' if days > 1 else ''}"
    return f"{days // 30} months"


@register.filter
def age(moment: dt.datetime | None) -> str:
    """How long ago `moment` was ("" for None)."""
    return span((timezone.now() - moment).total_seconds()) if moment else ""


@register.filter
def ago(moment: dt.datetime | None) -> str:
    """`moment` relative to now: "12 min ago", or "in 3 days" when it is ahead."""
    if moment is None:
        return ""
    seconds = (timezone.now() - moment).total_seconds()
    return f"{span(seconds)} ago" if seconds >= 0 else f"in {span(seconds)}"
