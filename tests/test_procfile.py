"""The Procfile lists the processes docs/DEPLOY.md describes, in a form honcho runs."""

from __future__ import annotations

from pathlib import Path

from honcho.environ import parse_procfile

ROOT = Path(__file__).resolve().parent.parent


def test_it_runs_web_through_gunicorn_a_worker_and_one_beat():
    processes = parse_procfile((ROOT / "Procfile").read_text()).processes

    assert set(processes) == {"web", "worker", "beat"}
    assert processes["web"] == "gunicorn -c aamdest/gunicorn.conf.py"
    assert processes["worker"].startswith("celery -A aamdest worker")
    assert processes["beat"].startswith("celery -A aamdest beat")


def test_its_example_nodes_split_the_queues_as_deploy_md_says():
    lines = (ROOT / "Procfile").read_text().splitlines()
    examples = {line.split(":")[0].lstrip("# "): line.split(":", 1)[1].strip() for line in lines
                if line.startswith(("# realtime:", "# batch:"))}

    assert "-Q realtime " in examples["realtime"]
    assert "-Q batch,maintenance " in examples["batch"]
