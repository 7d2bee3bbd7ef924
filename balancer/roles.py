"""Who may do what. Roles are the Django groups admin / operator / viewer; superusers are admins.

admin: change the configuration, apply, roll back. operator: enable / drain /
disable servers. viewer (and any user without a group): read.
"""
from django.contrib.auth.mixins import UserPassesTestMixin

ADMIN, OPERATOR, VIEWER = "admin", "operator", "viewer"
ROLES = (ADMIN, OPERATOR, VIEWER)


def role_of(user) -> str | None:
    if not user.is_authenticated:
        return None
    if user.is_superuser:
        return ADMIN
    cached = getattr(user, "_viewlb_role", None)
    if cached is None:
        groups = set(user.groups.values_list("name", flat=True))
        cached = next((role for role in ROLES if role in groups), VIEWER)
        user._viewlb_role = cached
    return cached


def can_change_config(user) -> bool:
    return role_of(user) == ADMIN


def can_operate(user) -> bool:
    return role_of(user) in (ADMIN, OPERATOR)


class AdminRequiredMixin(UserPassesTestMixin):
    raise_exception = True  # logged-in users without the role get 403, not a login loop
    permission_denied_message = "Only administrators can change the configuration."

    def test_func(self):
        return can_change_config(self.request.user)


class OperatorRequiredMixin(UserPassesTestMixin):
    raise_exception = True
    permission_denied_message = "Only operators and administrators can change server states."

    def test_func(self):
        return can_operate(self.request.user)
