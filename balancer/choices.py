"""Choice values of the console, spelled exactly like `proxyworker.config` literals.

Compiling a snapshot is then a mapping, not a translation; a test checks that
each class here has the same values as the matching schema literal.
"""
from django.db import models


class Protocol(models.TextChoices):
    TCP = "tcp", "TCP"
    UDP = "udp", "UDP"


class Mode(models.TextChoices):
    L4 = "l4", "Layer 4 (TCP/UDP pass-through)"
    L7 = "l7", "Layer 7 (HTTPS, TLS offload)"


class Scheduler(models.TextChoices):
    ROUND_ROBIN = "round_robin", "Round robin"
    WEIGHTED_ROUND_ROBIN = "weighted_round_robin", "Weighted round robin"
    LEAST_CONNECTIONS = "least_connections", "Least connections"
    FIRST_AVAILABLE = "first_available", "First available (active/backup)"


class PersistenceMethod(models.TextChoices):
    NONE = "none", "None"
    SOURCE_IP = "source_ip", "Source IP"
    COOKIE_LEARN = "cookie_learn", "Cookie learn (server's cookie, e.g. JSESSIONID)"
    COOKIE_INSERT = "cookie_insert", "Cookie insert (appliance's own cookie)"
    COOKIE_SOURCE_IP = "cookie_source_ip", "Cookie, source IP until a cookie is known"


class AdminState(models.TextChoices):
    ENABLED = "enabled", "Enabled"
    DRAIN = "drain", "Drain"
    DISABLED = "disabled", "Disabled"


class CheckType(models.TextChoices):
    TCP = "tcp", "TCP connect"
    HTTP = "http", "HTTP"
    HTTPS = "https", "HTTPS"


class HttpMethod(models.TextChoices):
    GET = "GET", "GET"
    HEAD = "HEAD", "HEAD"


class AuditAction(models.TextChoices):
    CREATE = "create", "Create"
    UPDATE = "update", "Update"
    DELETE = "delete", "Delete"
    APPLY = "apply", "Apply"
    ROLLBACK = "rollback", "Rollback"
    ENABLE = "enable", "Enable"
    DRAIN = "drain", "Drain"
    DISABLE = "disable", "Disable"
    KILL = "kill", "Kill session"
    MOVE = "move", "Move session"
    LOGIN = "login", "Log in"
    LOGOUT = "logout", "Log out"
    LOGIN_FAILED = "login_failed", "Failed log in"
