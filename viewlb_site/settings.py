"""Settings from the environment (12-factor), with defaults that run the demo.

VIEWLB_PRODUCTION=1 switches to the hardened mode (`manage.py check --deploy`
is clean there); it then refuses to start without DJANGO_SECRET_KEY.
"""
import base64
import hashlib
import os
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env(name, default=""):
    """A setting from NAME, or from the file named by NAME_FILE (Docker secrets)."""
    path = os.environ.get(name + "_FILE")
    if path:
        return Path(path).read_text().strip()
    return os.environ.get(name, default)


def envbool(name, default="0"):
    return env(name, default).lower() in ("1", "true", "yes", "on")


def envlist(name, default=""):
    return [item.strip() for item in env(name, default).split(",") if item.strip()]


PRODUCTION = envbool("VIEWLB_PRODUCTION")
DEBUG = envbool("DJANGO_DEBUG", "0" if PRODUCTION else "1")

SECRET_KEY = env("DJANGO_SECRET_KEY")
if not SECRET_KEY:
    if PRODUCTION:
        raise ImproperlyConfigured("DJANGO_SECRET_KEY must be set when VIEWLB_PRODUCTION=1")
    # Development and tests only: a key that lives as long as the process tree
    # that shares this environment. The demo script generates and exports one.
    SECRET_KEY = "insecure-dev-only-" + os.environ.setdefault("VIEWLB_DEV_KEY", os.urandom(24).hex())

# Fernet key that encrypts certificate private keys at rest and in snapshots (proxyworker/tlsconf.py);
# proxy workers read the same variable to decrypt them.
VIEWLB_CERT_KEY = env("VIEWLB_CERT_KEY")
if not VIEWLB_CERT_KEY:
    if PRODUCTION:
        raise ImproperlyConfigured("VIEWLB_CERT_KEY must be set when VIEWLB_PRODUCTION=1 (a Fernet key: "
                                   "python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())')")
    # Development and tests only: derived from the secret key, so it is as stable as that, and
    # exported so that proxy workers started from this process tree can decrypt the keys.
    VIEWLB_CERT_KEY = base64.urlsafe_b64encode(hashlib.sha256(b"viewlb-cert-key:" + SECRET_KEY.encode()).digest()).decode()
    os.environ.setdefault("VIEWLB_CERT_KEY", VIEWLB_CERT_KEY)

ALLOWED_HOSTS = envlist("DJANGO_ALLOWED_HOSTS", "" if PRODUCTION else "localhost,127.0.0.1,[::1],testserver")
CSRF_TRUSTED_ORIGINS = envlist("DJANGO_CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "daphne",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "balancer",
    "monitoring",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "viewlb_site.middleware.LoginRequiredMiddleware",
]

ROOT_URLCONF = "viewlb_site.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]
ASGI_APPLICATION = "viewlb_site.asgi.application"
WSGI_APPLICATION = None

DATABASES = {
    "default": dj_database_url.parse(
        env("DATABASE_URL", f"sqlite:///{BASE_DIR / 'var' / 'viewlb.sqlite3'}"),
        conn_max_age=0,
    )
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env("REDIS_URL", "redis://127.0.0.1:6379/0")
# Prefix of every Redis key and channel the appliance uses (tests isolate on it).
VIEWLB_REDIS_PREFIX = env("VIEWLB_REDIS_PREFIX", "viewlb")

CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {"hosts": [REDIS_URL], "prefix": VIEWLB_REDIS_PREFIX + ":asgi"},
    }
}

CELERY_BROKER_URL = env("CELERY_BROKER_URL", REDIS_URL)
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_DEFAULT_QUEUE = VIEWLB_REDIS_PREFIX + ":celery"
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 10}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = env("TZ", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = BASE_DIR / "var" / "static"
# WhiteNoise serves static files from daphne (appliances have no separate web
# server); in development it reads them straight from static/.
WHITENOISE_USE_FINDERS = DEBUG
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}

# Where the worker-independent pieces keep files (SQLite, generated keys).
VAR_DIR = BASE_DIR / "var"
VAR_DIR.mkdir(exist_ok=True)
STATIC_ROOT.mkdir(exist_ok=True)  # WhiteNoise warns on every request when it is missing

SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = False
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"

if PRODUCTION:
    SECURE_SSL_REDIRECT = envbool("DJANGO_SECURE_SSL_REDIRECT", "1")
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = int(env("DJANGO_HSTS_SECONDS", "31536000"))
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", "INFO")},
    # A beat tick every half second would bury the health transitions in
    # "task received / succeeded" lines.
    "loggers": {
        name: {"level": env("CELERY_TASK_LOG_LEVEL", "WARNING")}
        for name in ("celery.app.trace", "celery.worker.strategy", "celery.beat")
    },
}

# The overview warns of many users behind one address (NAT) on a source-IP virtual service
# when one client key holds this many live connections on it (monitoring/live/nat.py).
VIEWLB_NAT_CONNECTIONS = int(env("VIEWLB_NAT_CONNECTIONS", "20"))

# Health checks: one beat entry fans out the checks that are due (monitoring/schedule.py).
VIEWLB_HEALTH_TICK = float(env("VIEWLB_HEALTH_TICK", "0.5"))
# Checks are network-bound asyncio work: a threads pool, wide enough that chunks waiting on
# servers that hang until the timeout do not hold up the others (bench/health_scale.py).
CELERY_WORKER_POOL = env("CELERY_WORKER_POOL", "threads")
CELERY_WORKER_CONCURRENCY = int(env("CELERY_WORKER_CONCURRENCY", "8"))
CELERY_BEAT_SCHEDULE = {
    "health-dispatch": {
        "task": "monitoring.tasks.dispatch_due_checks",
        "schedule": VIEWLB_HEALTH_TICK,
        "options": {"expires": 2 * VIEWLB_HEALTH_TICK},
    },
}
