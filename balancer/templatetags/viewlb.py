"""Template helpers for the console: role checks, the pending-changes badge, object field tables."""
from django import template

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
def fields_of(obj, *names):
    """[(label, shown value)] for a detail page; all editable fields when no names are given."""
    rows = []
    for field in obj._meta.concrete_fields:
        if field.primary_key or (names and field.name not in names) or field.name == "pool":
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


@register.filter
def verbose_name(obj):
    return obj._meta.verbose_name


@register.filter
def diff_class(line):
    if line.startswith(("+++", "---")):
        return "diff-head"
    return {"+": "diff-add", "-": "diff-del", "@": "diff-hunk"}.get(line[:1], "")
