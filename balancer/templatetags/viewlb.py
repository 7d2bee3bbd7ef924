"""Template helpers for the console: role checks, the pending-changes badge, object field tables."""
from django import template
from django.utils.html import format_html
from django.utils.safestring import mark_safe

from .. import roles, services

register = template.Library()


@register.simple_tag
def role_of(user):
    return roles.role_of(user) or ""


@register.filter
def can_change_config(user):
    return roles.can_change_config(user)


@register.filter
def can_operate(user):
    return roles.can_operate(user)


@register.simple_tag
def pending_count():
    """How many objects the draft changes; shown as a badge on "Apply"."""
    return len(services.pending_changes())


@register.simple_tag(takes_context=True)
def active(context, *prefixes):
    """'active' when the current page's URL name starts with one of `prefixes` (navigation)."""
    match = getattr(context.get("request"), "resolver_match", None)
    name = match.url_name if match else ""
    return "active" if name and name.startswith(prefixes) else ""


@register.simple_tag
def fields_of(obj, *names, exclude=""):
    """[(label, shown value)] for a detail page; all editable fields when no names are given.

    `exclude` is a comma-separated list of fields a page shows in a section of its own.
    """
    rows = []
    skip = {"pool", *filter(None, exclude.split(","))}
    for field in obj._meta.concrete_fields:
        if field.primary_key or (names and field.name not in names) or field.name in skip:
            continue
        if field.choices:
            value = getattr(obj, f"get_{field.name}_display")()
        elif field.is_relation:
            value = getattr(obj, field.name) or "—"
        elif isinstance(field.value_from_object(obj), bool):
            value = "yes" if field.value_from_object(obj) else "no"
        else:
            value = field.value_from_object(obj)
            value = "—" if value in ("", None) else value
        rows.append((field.verbose_name, value, field.help_text))
    return rows


@register.simple_tag
def expiry_badge(cert):
    """The certificate's expiry as a pill: expired, expiring within 30 days, or valid."""
    state = cert.expiry_state
    if state == "expired":
        return format_html('<span class="pill off">expired</span>')
    if state == "soon":
        return format_html('<span class="pill warn">expires in {} days</span>', cert.days_left)
    return mark_safe('<span class="pill ok">valid</span>')


@register.filter
def verbose_name(obj):
    return obj._meta.verbose_name


@register.filter
def diff_class(line):
    if line.startswith(("+++", "---")):
        return "diff-head"
    return {"+": "diff-add", "-": "diff-del", "@": "diff-hunk"}.get(line[:1], "")
