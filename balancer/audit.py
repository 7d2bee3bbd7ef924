"""The audit trail: who did what, when, to which object, with field changes old -> new."""
from .models import AuditEntry


def field_changes(before: dict, after: dict) -> dict:
    """{field: [old, new]} for the fields that differ."""
    return {name: [before.get(name), value] for name, value in after.items() if before.get(name) != value}


def record(user, action, obj, changes=None, **details) -> AuditEntry:
    """Store one audit entry. `obj` is a model instance or a plain description."""
    if changes:
        details["changes"] = changes
    if hasattr(obj, "_meta"):
        object_type = obj._meta.verbose_name
        object_repr = getattr(obj, "server_id", None) or str(obj)
    else:
        object_type, object_repr = "", str(obj or "")
    authenticated = user is not None and user.is_authenticated
    return AuditEntry.objects.create(
        user=user if authenticated else None,
        username=user.get_username() if authenticated else details.pop("username", ""),
        action=action,
        object_type=object_type,
        object_repr=object_repr[:200],
        details=details,
    )
