"""`{% load health %}{% pool_health pool.name %}`: the health panel of a pool page."""
from django import template

from monitoring import services

register = template.Library()


@register.inclusion_tag("monitoring/_pool_health.html")
def pool_health(pool_name, events=10):
    return services.pool_health(str(pool_name), events=events)


@register.filter
def ago(seconds):
    """12.3 -> "12 s ago", 150 -> "2 min ago": how old a check result is."""
    if seconds is None:
        return "never"
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds} s ago"
    if seconds < 7200:
        return f"{seconds // 60} min ago"
    if seconds < 2 * 86400:
        return f"{seconds // 3600} h ago"
    return f"{seconds // 86400} days ago"


@register.filter
def state_class(state):
    """The console's pill colours: up is ok, drain a warning, down and disabled are off."""
    return {"up": "ok", "drain": "warn", "down": "off", "disabled": "off"}.get(state, "")
