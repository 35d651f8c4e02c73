"""aamdest settings: every value comes from the environment (CONTRACT §6).

Each helper of aamdest.environment reads one variable and fails loudly, naming the
variable, when its value cannot be used, so that a bad setting stops the program at start.
"""

from __future__ import annotations

import os
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from aamdest.environment import (
    REDIS_SCHEMES,
    env_bool,
    env_broker_url,
    env_choice,
    env_database,
    env_fernet_keys,
    env_int,
    env_list,
    env_proxy_header,
    env_rate,
    env_redis_url,
)

BASE_DIR = Path(__file__).resolve().parent.parent

DEBUG = env_bool("DJANGO_DEBUG", False)
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "DJANGO_SECRET_KEY is not set: production must set it (DJANGO_DEBUG=1 allows a development key)."
        )
    SECRET_KEY = "aamdest-development-only-secret-key-do-not-use-in-production"
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "axes",
    "aamdest",
    "destinations",
    "delivery",
    "partner",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "aamdest.middleware.DatabaseUnavailableMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes asks: it answers a locked-out login with 429.
    "axes.middleware.AxesMiddleware",
]

# django-axes sees every login (admin and console) first and locks out after repeated failures.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]

ROOT_URLCONF = "aamdest.urls"

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

WSGI_APPLICATION = "aamdest.wsgi.application"

DATABASES = {"default": env_database("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}")}
# Behind a pooler in transaction mode (pgbouncer pool_mode=transaction) nothing of a session outlives
# its transaction, so no cursor may be held across transactions (docs/DEPLOY.md). Django's psycopg
# backend prepares no statements unless told to.
AAMDEST_DB_TRANSACTION_POOLING = env_bool("AAMDEST_DB_TRANSACTION_POOLING", False)
if AAMDEST_DB_TRANSACTION_POOLING and "postgresql" in DATABASES["default"]["ENGINE"]:
    DATABASES["default"]["DISABLE_SERVER_SIDE_CURSORS"] = True

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"] if (BASE_DIR / "static").is_dir() else []
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
# Serve files straight from the apps' static folders, so that the console is
# styled with DJANGO_DEBUG=0 even before `collectstatic` has run.
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG

LOGIN_URL = "/accounts/login/"

# --- Production (DJANGO_DEBUG off): HTTPS only, behind a TLS-terminating proxy if need be -----
_secure = not DEBUG
SESSION_COOKIE_SECURE = _secure
CSRF_COOKIE_SECURE = _secure
SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", _secure)
# Probes and scrapers inside the cluster may speak plain HTTP to these.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
SECURE_HSTS_SECONDS = env_int("DJANGO_SECURE_HSTS_SECONDS", 31_536_000 if _secure else 0,
                              minimum=0, maximum=63_072_000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", _secure)
SECURE_HSTS_PRELOAD = env_bool("DJANGO_SECURE_HSTS_PRELOAD", False)
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"


# Set it only behind a proxy that always sets (or strips) that header itself.
SECURE_PROXY_SSL_HEADER = env_proxy_header("DJANGO_SECURE_PROXY_SSL_HEADER")
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", [])

# --- Brute force: django-axes keeps failed logins in the database --------------------------
AXES_FAILURE_LIMIT = env_int("AAMDEST_LOGIN_FAILURE_LIMIT", 5, minimum=1, maximum=1000)
AXES_COOLOFF_TIME = env_int("AAMDEST_LOGIN_LOCKOUT_MINUTES", 15, minimum=1, maximum=10_080) / 60  # hours
# `account,source` (default): a username is locked whatever the address (a distributed attack), and an
# address whatever the username (spraying). Behind one shared proxy address, `account+source` locks
# only a username from an address, so that one attacker cannot lock everybody out.
_LOCKOUT_BY = env_choice("AAMDEST_LOGIN_LOCKOUT_BY", "account,source", ("account,source", "account+source"))
AXES_LOCKOUT_PARAMETERS = (
    [["username"], ["ip_address"]] if _LOCKOUT_BY == "account,source" else [["username", "ip_address"]]
)
AXES_RESET_ON_SUCCESS = True
LOGIN_REDIRECT_URL = "/dashboard/"

# --- REST API ------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["destinations.permissions.RolePermission"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "aamdest.exceptions.handle_api_exception",
    "UNAUTHENTICATED_USER": None,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "aamdest API",
    "DESCRIPTION": "Real-time outbound data transfers in Adobe Audience Manager's format.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    # Request bodies get their own components, so that they state what a request must hold
    # (minLength 1 for required text, no read-only fields) and the rules below can apply to them.
    "COMPONENT_SPLIT_REQUEST": True,
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "destinations.serializers.state_fields_required_together",
    ],
    # The schema and its page follow the API's rules: a token or an admin session, and a role.
    "SERVE_PERMISSIONS": ["destinations.permissions.RolePermission"],
    # Swagger UI's files come from the drf-spectacular-sidecar package, not a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# --- Celery ----------------------------------------------------------------
CELERY_BROKER_URL = env_broker_url("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0")
IS_REDIS_BROKER = CELERY_BROKER_URL.startswith(REDIS_SCHEMES)
# Locks, the token cache, per-destination concurrency slots and beat's leadership live in Redis:
# the broker's unless told otherwise. With RabbitMQ as the broker it must be named explicitly.
AAMDEST_REDIS_URL = env_redis_url("AAMDEST_REDIS_URL", broker_url=CELERY_BROKER_URL)
# The events endpoint's per-token throttle counts in Redis, so that every web process shares the count.
CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    "throttle": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": AAMDEST_REDIS_URL,
        "KEY_PREFIX": "aamdest:throttle",
        "OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 0.5},
    },
}
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = False
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_ALWAYS_EAGER = env_bool("AAMDEST_TASKS_EAGER", False)
CELERY_BEAT_SCHEDULE: dict = {}  # filled in aamdest/celery.py
# Only the beat holding a lease in Redis sends; a second beat stands by (aamdest/beat.py).
CELERY_BEAT_SCHEDULER = "aamdest.beat:LeaderScheduler"
AAMDEST_BEAT_LEASE_S = env_int("AAMDEST_BEAT_LEASE_S", 10, minimum=2, maximum=300)
# Celery's Django fix-up closes every database connection before and after each task, so each
# task opened a new PostgreSQL session; this turns that off (it closes after this many tasks) and
# aamdest/celery.py applies CONN_MAX_AGE and health checks around tasks instead, as Django does per request.
CELERY_DB_REUSE_MAX = 1_000_000

# --- aamdest -------------------------------------------------------------------
VERSION = "0.1.0"
AAMDEST_ALLOW_HTTP = env_bool("AAMDEST_ALLOW_HTTP", False)
AAMDEST_ALLOW_PRIVATE_NETWORKS = env_bool("AAMDEST_ALLOW_PRIVATE_NETWORKS", False)
AAMDEST_CA_BUNDLE = os.environ.get("AAMDEST_CA_BUNDLE", "").strip() or None
if AAMDEST_CA_BUNDLE and not Path(AAMDEST_CA_BUNDLE).is_file():
    raise ImproperlyConfigured(f"AAMDEST_CA_BUNDLE={AAMDEST_CA_BUNDLE!r} is not a readable file.")
AAMDEST_DELIVERY_LOG_DAYS = env_int("AAMDEST_DELIVERY_LOG_DAYS", 30, minimum=1, maximum=3650)
AAMDEST_LOG_FORMAT = env_choice("AAMDEST_LOG_FORMAT", "text", ("text", "json"))
# `POST /api/v1/events/` requests per token, e.g. "50/s" or "1000/min"; unset: no throttle.
AAMDEST_EVENTS_THROTTLE_RATE = env_rate("AAMDEST_EVENTS_THROTTLE_RATE")
# When set, GET /metrics needs `Authorization: Bearer <this token>`.
AAMDEST_METRICS_TOKEN = os.environ.get("AAMDEST_METRICS_TOKEN", "").strip() or None
# How many requests one destination may have in flight at once, over all workers.
AAMDEST_DESTINATION_CONCURRENCY = env_int("AAMDEST_DESTINATION_CONCURRENCY", 4, minimum=1, maximum=256)
from aamdest.alert_settings import *  # noqa: E402, F403 - alerts and e-mail (CONTRACT §7)

# --- Workers: a bare `celery -A aamdest worker` is right (CONTRACT §2 isolation, §6) ---------
# Sending is I/O-bound (a 3 s deadline, retry waits), so workers run threads. Each destination
# holds at most AAMDEST_DESTINATION_CONCURRENCY of them; twice that plus room for the other queues
# means a partner timing out on every request never starves the other destinations.
CELERY_WORKER_POOL = "threads"
CELERY_WORKER_CONCURRENCY = env_int(
    "AAMDEST_WORKER_THREADS", max(16, 2 * AAMDEST_DESTINATION_CONCURRENCY + 8), minimum=1, maximum=1024
)
if CELERY_WORKER_CONCURRENCY < 2 * AAMDEST_DESTINATION_CONCURRENCY:
    raise ImproperlyConfigured(
        f"AAMDEST_WORKER_THREADS={CELERY_WORKER_CONCURRENCY} is below twice AAMDEST_DESTINATION_CONCURRENCY "
        f"({AAMDEST_DESTINATION_CONCURRENCY}): one partner timing out could hold every thread."
    )
# How often a worker proves it can still work, in Redis (`manage.py worker_probe` reads it).
AAMDEST_WORKER_HEARTBEAT_S = env_int("AAMDEST_WORKER_HEARTBEAT_S", 5, minimum=1, maximum=60)
# Three queues (CONTRACT §6); a worker without -Q consumes all three.
CELERY_TASK_DEFAULT_QUEUE = "realtime"
_TASKS_BY_QUEUE = {
    "realtime": ("flush_destination", "send_delivery_task", "tick", "probe_circuit"),
    "batch": ("start_due_batches", "send_batch_now", "send_due_batch", "send_stored_batch"),
    "maintenance": ("sweep", "erase_devices", "prune_deliveries", "apply_segment_ttl_change",
                    "run_alerts", "check_backlogs", "resync_destination"),
}
CELERY_TASK_ROUTES = {
    f"delivery.tasks.{task}": {"queue": queue} for queue, tasks in _TASKS_BY_QUEUE.items() for task in tasks
}

AAMDEST_ENCRYPTION_KEYS = env_fernet_keys("AAMDEST_ENCRYPTION_KEYS", debug=DEBUG, secret_key=SECRET_KEY)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "text": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "json": {"()": "aamdest.logging.JsonFormatter"},
    },
    # Every handler masks Authorization, Bearer/Basic credentials and signatures (aamdest.redaction).
    "filters": {"redact_secrets": {"()": "aamdest.redaction.RedactSecrets"}},
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": AAMDEST_LOG_FORMAT,
            "filters": ["redact_secrets"],
        }
    },
    "root": {"handlers": ["console"], "level": os.environ.get("AAMDEST_LOG_LEVEL", "INFO").upper()},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}
