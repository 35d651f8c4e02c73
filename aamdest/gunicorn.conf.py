"""gunicorn's configuration: `gunicorn -c aamdest/gunicorn.conf.py` serves `aamdest.wsgi` (CONTRACT §6).

Every value comes from the environment, read by the settings' helpers (aamdest.environment), so
that a bad one stops the start naming the variable. The defaults fit the machine: a process per
core (at least two), each with a few threads, since a request mostly waits on PostgreSQL.
docs/DEPLOY.md sizes them against the database's connections.
"""

import multiprocessing
import os
import sys
from pathlib import Path

# gunicorn reads this file before it changes directory: make the project importable from anywhere.
chdir = str(Path(__file__).resolve().parent.parent)
if chdir not in sys.path:
    sys.path.insert(0, chdir)

from aamdest.environment import env_choice, env_int  # noqa: E402

wsgi_app = "aamdest.wsgi:application"
# Comma-separated addresses (HOST:PORT or unix:PATH); else every interface on $PORT (which honcho
# and most platforms set), else 8000.
_port = env_int("PORT", 8000, minimum=1, maximum=65535)
_bind = os.environ.get("AAMDEST_WEB_BIND", "").strip() or f"0.0.0.0:{_port}"
bind = [address.strip() for address in _bind.split(",") if address.strip()]

workers = env_int("AAMDEST_WEB_WORKERS", max(2, multiprocessing.cpu_count()), minimum=1, maximum=256)
threads = env_int("AAMDEST_WEB_THREADS", 4, minimum=1, maximum=256)
worker_class = "gthread"

# A request taking longer than this is killed with its worker (the events endpoint takes at most
# a few seconds for its 10,000 events).
timeout = env_int("AAMDEST_WEB_TIMEOUT_S", 30, minimum=1, maximum=3600)
# On SIGTERM a worker stops accepting and finishes the requests it holds, for up to this long.
graceful_timeout = env_int("AAMDEST_WEB_GRACEFUL_TIMEOUT_S", 30, minimum=1, maximum=3600)
# Longer than nothing, shorter than a load balancer's idle timeout (60 s for most).
keepalive = 5
# Recycle workers now and then, spread out, so that a slow leak never grows.
max_requests = 10_000
max_requests_jitter = 1_000

# gunicorn 27's control socket sits at one path per user: several web nodes on a machine would
# fight over it, and nothing here uses it.
control_socket_disable = True

accesslog = "-"
errorlog = "-"
if env_choice("AAMDEST_LOG_FORMAT", "text", ("text", "json")) == "json":
    logger_class = "aamdest.access_log.JsonAccessLogger"
else:
    # The path without its query string: a client may put a secret there.
    access_log_format = '%(h)s "%(m)s %(U)s %(H)s" %(s)s %(B)s %(M)sms "%(a)s"'
