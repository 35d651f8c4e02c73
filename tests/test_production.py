"""Production settings (CONTRACT §6): HTTPS-only cookies, HSTS, the proxy header, and `check --deploy`.

Each test starts Django in a subprocess with the production environment that the README documents,
read from the README itself, so that the documented environment is the tested one.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from cryptography.fernet import Fernet

ROOT = Path(__file__).resolve().parent.parent
FENCE = re.compile(r"<!-- production-env -->\s*```sh\n(?P<body>.*?)```", re.S)


def documented_environment() -> dict[str, str]:
    """The KEY=VALUE lines of the README's production environment block, placeholders filled in."""
    body = FENCE.search((ROOT / "README.md").read_text())["body"]
    pairs = dict(line.split("=", 1) for line in body.splitlines() if "=" in line and not line.startswith("#"))
    pairs = {key.removeprefix("export ").strip(): value.strip().strip("'\"") for key, value in pairs.items()}
    pairs["AAMDEST_ENCRYPTION_KEYS"] = Fernet.generate_key().decode()
    pairs["DJANGO_SECRET_KEY"] = "p" + os.urandom(40).hex()
    pairs["DATABASE_URL"] = os.environ["DATABASE_URL"]
    pairs["CELERY_BROKER_URL"] = os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0")
    return pairs


def run_django(*argv: str) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("AAMDEST_", "DJANGO_"))}
    env.update(documented_environment())
    return subprocess.run([sys.executable, *argv], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)


def test_the_documented_production_environment_passes_check_deploy():
    result = run_django("manage.py", "check", "--deploy", "--fail-level", "WARNING")

    assert result.returncode == 0, result.stderr
    assert "no issues" in result.stdout


PROBE = """
import os, django
os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'aamdest.settings')
django.setup()
from django.test import Client
plain = Client().get('/accounts/login/', HTTP_HOST='aamdest.example.com')
proxied = Client().get('/accounts/login/', HTTP_HOST='aamdest.example.com', HTTP_X_FORWARDED_PROTO='https')
print('plain', plain.status_code, plain.get('Location', ''))
print('hsts', proxied.get('Strict-Transport-Security', ''))
cookie = proxied.cookies['csrftoken']
print('csrf-secure', bool(cookie['secure']))
from django.conf import settings
print('session-secure', settings.SESSION_COOKIE_SECURE)
"""


def test_production_redirects_to_https_and_trusts_the_proxy_header_for_tls():
    result = run_django("-c", PROBE)

    assert result.returncode == 0, result.stderr
    lines = dict(line.split(" ", 1) for line in result.stdout.splitlines() if " " in line)
    assert lines["plain"] == "301 https://aamdest.example.com/accounts/login/"
    assert lines["hsts"] == "max-age=31536000; includeSubDomains; preload"
    assert lines["csrf-secure"] == "True"
    assert lines["session-secure"] == "True"
