"""Log in, log out and failed log-ins go to the audit trail."""
from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.dispatch import receiver

from .audit import record
from .choices import AuditAction


def _client(request):
    return request.META.get("REMOTE_ADDR", "") if request is not None else ""


@receiver(user_logged_in)
def logged_in(sender, request, user, **kwargs):
    record(user, AuditAction.LOGIN, user.get_username(), client=_client(request))


@receiver(user_logged_out)
def logged_out(sender, request, user, **kwargs):
    if user is not None:
        record(user, AuditAction.LOGOUT, user.get_username(), client=_client(request))


@receiver(user_login_failed)
def login_failed(sender, credentials, request=None, **kwargs):
    # `credentials` has the password already masked; keep only the name that was tried.
    name = str(credentials.get("username", ""))[:150]
    record(None, AuditAction.LOGIN_FAILED, name, username=name, client=_client(request))
