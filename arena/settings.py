"""Settings, read from the environment.

With no environment set you get the *embedded default*: SQLite, the in-memory channel layer and
generation run inside the web process through the same task code. Setting ``DATABASE_URL`` and
``REDIS_URL`` selects the *production topology*: PostgreSQL, Celery on Redis, channels-redis.
Outside the embedded default DEBUG is off and SECRET_KEY is required.
"""
from __future__ import annotations

from pathlib import Path

import dj_database_url

from arena.env import env_bool, env_float, env_int, env_list, env_required, env_str

BASE_DIR = Path(__file__).resolve().parent.parent

DATABASE_URL = env_str("DATABASE_URL")
REDIS_URL = env_str("REDIS_URL")
EMBEDDED = not DATABASE_URL and not REDIS_URL

if EMBEDDED:
    SECRET_KEY = env_str("SECRET_KEY") or "embedded-demo-only-not-secret"
    DEBUG = env_bool("DEBUG", True)
else:
    SECRET_KEY = env_required("SECRET_KEY")
    DEBUG = env_bool("DEBUG", False)

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "arena",
    "leaderboard",
    "workers",
]

MIDDLEWARE = [
    "arena.middleware.RequestMetricsMiddleware",  # first: counts every answer, refusals included
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "arena.urls"
ASGI_APPLICATION = "arena.asgi.application"
WSGI_APPLICATION = "arena.wsgi.application"

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

if DATABASE_URL:
    DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=env_int("DB_CONN_MAX_AGE", 0))}
    # A connection pool per process (psycopg_pool), on by default: consumers, views and worker
    # threads take a connection for each unit of work and hand it back, instead of opening a new
    # one every time (5 ms each on loopback, plus a backend process forked by PostgreSQL).
    # Size it for the threads of one process that use the database at the same moment; a
    # streaming worker holds one only while it reads or writes. DB_POOL_MAX_SIZE=0 turns it off
    # (e.g. behind PgBouncer), and DB_CONN_MAX_AGE > 0 (persistent connections) wins over it:
    # Django refuses both at once. A checked-out connection is first checked with an empty query,
    # so one broken by a database restart is replaced instead of failing a request. With the
    # database down, a caller gets an OperationalError after DB_POOL_TIMEOUT_SECONDS.
    DB_POOL_MAX_SIZE = env_int("DB_POOL_MAX_SIZE", 20)
    if DB_POOL_MAX_SIZE > 0 and not DATABASES["default"]["CONN_MAX_AGE"]:
        DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
        DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
            "min_size": min(2, DB_POOL_MAX_SIZE), "max_size": DB_POOL_MAX_SIZE,
            "timeout": env_float("DB_POOL_TIMEOUT_SECONDS", 3.0),
        }
else:
    (BASE_DIR / "var").mkdir(exist_ok=True)
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": env_str("SQLITE_PATH") or str(BASE_DIR / "var" / "arena.sqlite3"),
            "OPTIONS": {"timeout": 20},
        }
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
# Threads per web process for the consumers' database calls (arena.asyncdb); 1 = Channels' single thread.
DB_ASYNC_THREADS = env_int("DB_ASYNC_THREADS", 8)

if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "arena.channel_layer.ArenaRedisChannelLayer",
            "CONFIG": {
                # The layer waits on Redis with a 5 s blocking pop: the socket timeout must outlast it,
                # or an idle WebSocket's consumer dies with a read timeout.
                # The health check pings a connection idle that long before using it again, so a
                # restarted Redis costs no WebSocket its group_add.
                "hosts": [{"address": REDIS_URL, "socket_timeout": env_float("CHANNEL_LAYER_SOCKET_TIMEOUT", 30.0),
                           "health_check_interval": 5}],
                # Per process, not per socket: every WebSocket of one web process shares one queue.
                "capacity": env_int("CHANNEL_LAYER_CAPACITY", 5000),
            },
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

# Celery: a Redis broker in the production topology; in the embedded default tasks run in a
# thread pool inside the web process (see workers.dispatch), through the same task code.
CELERY_BROKER_URL = REDIS_URL or "memory://"
CELERY_TASK_IGNORE_RESULT = True
# The worker logs through LOGGING below (JSON lines with battle ids), not Celery's own format.
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Rating work (a refresh: seconds to minutes of numpy at arena size) goes to its own queue, so that
# a worker streaming answers never runs it (docker/compose.yml gives it a worker service of its
# own); everything else goes to Celery's default queue.
RATINGS_QUEUE = env_str("RATINGS_QUEUE") or "ratings"
CELERY_TASK_DEFAULT_QUEUE = "celery"
CELERY_TASK_ROUTES = {name: {"queue": RATINGS_QUEUE} for name in ("leaderboard.refresh", "leaderboard.refresh_style")}
CELERY_BEAT_SCHEDULE_HEALTH_SECONDS = env_float("HEALTH_CHECK_INTERVAL_SECONDS", 30.0)
CELERY_BEAT_SCHEDULE = {
    "backend-health": {"task": "arena.check_backend_health", "schedule": CELERY_BEAT_SCHEDULE_HEALTH_SECONDS},
    # Votes also schedule a debounced refresh; the periodic one catches anything that was missed.
    "leaderboard-refresh": {"task": "leaderboard.refresh",
                            "schedule": env_float("LEADERBOARD_REFRESH_INTERVAL_SECONDS", 900.0)},
    # Fails generations a dead worker or a lost task left queued/streaming past their deadline.
    "generation-deadlines": {"task": "arena.expire_generations",
                             "schedule": env_float("GENERATION_SWEEP_INTERVAL_SECONDS", 15.0)},
}
GENERATION_IN_PROCESS = EMBEDDED or env_bool("GENERATION_IN_PROCESS", False)
GENERATION_IN_PROCESS_THREADS = env_int("GENERATION_IN_PROCESS_THREADS", 16)

# Backend health: a server is marked down after this many failed checks in a row.
HEALTH_FAILURES_BEFORE_DOWN = env_int("HEALTH_FAILURES_BEFORE_DOWN", 2)
OLLAMA_HOST = env_str("OLLAMA_HOST") or "http://127.0.0.1:11434"

# Metrics (arena.metrics): /metrics is for staff users or this bearer token; no token, no token access.
METRICS_TOKEN = env_str("METRICS_TOKEN") or ""
WORKER_METRICS_PORT = env_int("WORKER_METRICS_PORT", 0)  # 0: a Celery worker serves no metrics endpoint
WORKER_METRICS_ADDR = env_str("WORKER_METRICS_ADDR") or "0.0.0.0"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = env_str("STATIC_ROOT") or str(BASE_DIR / "staticfiles")
# The ASGI app serves static files itself in the embedded default (no proxy in front).
SERVE_STATIC = env_bool("SERVE_STATIC", EMBEDDED)

SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", not EMBEDDED)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", not EMBEDDED)
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
                   "json": {"()": "arena.logs.JsonFormatter"}},
    # JSON lines (with the battle id of each record) outside the embedded default, for log shippers.
    "handlers": {"console": {"class": "logging.StreamHandler",
                             "formatter": env_str("LOG_FORMAT") or ("plain" if EMBEDDED else "json")}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL") or "INFO"},
    "loggers": {"httpx": {"level": "WARNING"}, "httpcore": {"level": "WARNING"}},
}

# Battles
ARENA_MAX_PROMPT_CHARS = env_int("ARENA_MAX_PROMPT_CHARS", 8000)
ARENA_MAX_TURNS = env_int("ARENA_MAX_TURNS", 8)
ARENA_DAILY_VOTE_CAP = env_int("ARENA_DAILY_VOTE_CAP", 500)
ARENA_PROMPTS_PER_MINUTE = env_int("ARENA_PROMPTS_PER_MINUTE", 20)
GENERATION_MAX_ATTEMPTS = env_int("GENERATION_MAX_ATTEMPTS", 2)

# Leaderboard (see leaderboard.selectors.LeaderboardSettings for what each one changes)
LEADERBOARD_BOOTSTRAP_ROUNDS = env_int("LEADERBOARD_BOOTSTRAP_ROUNDS", 1000)
LEADERBOARD_STYLE_BOOTSTRAP_ROUNDS = env_int("LEADERBOARD_STYLE_BOOTSTRAP_ROUNDS", 100)
LEADERBOARD_MIN_VOTES = env_int("LEADERBOARD_MIN_VOTES", 50)
LEADERBOARD_MIN_CATEGORY_VOTES = env_int("LEADERBOARD_MIN_CATEGORY_VOTES", 20)
LEADERBOARD_RATER_DAILY_CAP = env_int("LEADERBOARD_RATER_DAILY_CAP", 200)
LEADERBOARD_DEDUPLICATE_PROMPTS = env_bool("LEADERBOARD_DEDUPLICATE_PROMPTS", False)
LEADERBOARD_LONG_PROMPT_CHARS = env_int("LEADERBOARD_LONG_PROMPT_CHARS", 1000)
LEADERBOARD_STYLE_CONTROL = env_bool("LEADERBOARD_STYLE_CONTROL", True)
LEADERBOARD_TIES = env_str("LEADERBOARD_TIES") or "half"
LEADERBOARD_BOTHBAD = env_str("LEADERBOARD_BOTHBAD") or "tie"
LEADERBOARD_ELO_K = env_float("LEADERBOARD_ELO_K", 4.0)
LEADERBOARD_REFRESH_DEBOUNCE_SECONDS = env_float("LEADERBOARD_REFRESH_DEBOUNCE_SECONDS", 30.0)
# Processes that rate a refresh's categories in parallel (1: in the refresh's own process).
LEADERBOARD_RATING_PROCESSES = env_int("LEADERBOARD_RATING_PROCESSES", 1)
# Votes reach online Elo in one drain per window: the first vote of a window enqueues it.
LEADERBOARD_ELO_DRAIN_SECONDS = env_float("LEADERBOARD_ELO_DRAIN_SECONDS", 0.25)
