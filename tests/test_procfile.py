"""The Procfile lists the processes docs/DEPLOY.md describes, in a form honcho runs.

tests/e2e/test_multinode.py runs it with honcho; these only read it.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from honcho.environ import parse_procfile

ROOT = Path(__file__).resolve().parent.parent


def processes() -> dict[str, str]:
    return parse_procfile((ROOT / "Procfile").read_text()).processes


def test_it_runs_web_through_gunicorn_dedicated_worker_nodes_and_one_beat():
    assert list(processes()) == ["web", "realtime", "batch", "beat"]
    assert processes()["web"] == "gunicorn -c aamdest/gunicorn.conf.py"
    assert processes()["beat"].startswith("celery -A aamdest beat --schedule ")


def test_its_worker_nodes_split_the_queues_as_deploy_md_says():
    assert processes()["realtime"].startswith("celery -A aamdest worker -Q realtime --hostname ")
    assert processes()["batch"].startswith("celery -A aamdest worker -Q batch,maintenance --hostname ")


def test_its_one_worker_alternative_consumes_every_queue():
    lines = (ROOT / "Procfile").read_text().splitlines()
    [worker] = [line.split(":", 1)[1].strip() for line in lines if line.startswith("# worker:")]

    assert worker.startswith("celery -A aamdest worker ") and "-Q" not in worker


def expand(command: str, **env: str) -> str:
    """The command as honcho's shell runs it, with `env` (and nothing else) set."""
    done = subprocess.run(["sh", "-c", f"echo {command}"], env=env, capture_output=True, text=True,
                          check=True)
    return done.stdout.strip()


def test_node_names_and_the_schedule_file_come_from_the_environment_with_defaults():
    assert expand(processes()["realtime"]).endswith("--hostname realtime@%h")
    assert expand(processes()["batch"]).endswith("--hostname batch@%h")
    realtime_2 = expand(processes()["realtime"], AAMDEST_NODE_NAME="realtime-2")
    assert realtime_2.endswith("--hostname realtime-2@%h")
    assert expand(processes()["beat"]).endswith("--schedule /tmp/aamdest-beat-schedule")
    elsewhere = expand(processes()["beat"], AAMDEST_BEAT_SCHEDULE="/var/lib/beat")
    assert elsewhere.endswith("--schedule /var/lib/beat")
