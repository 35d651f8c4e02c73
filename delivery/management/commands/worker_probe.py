"""`manage.py worker_probe [--hostname NAME] [--max-age S]`: is this worker alive? (CONTRACT §6)

For an orchestrator's liveness probe (a Kubernetes exec probe, a systemd watchdog timer).
A worker writes its heartbeat to Redis every `AAMDEST_WORKER_HEARTBEAT_S` while its pool
still runs work (`delivery.observability.worker_heartbeat`); this reads it. Exit status 0
and `healthy: …` when the heartbeat is at most `--max-age` seconds old, else 1 and one line
saying why: no heartbeat, Redis does not answer, or the heartbeat is old and the worker is
*hung* (its process still runs, or is stopped) or *dead* (its process is gone; told apart
only on the worker's own machine, else "not beating").
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import redis
from celery.utils.nodenames import default_nodename, host_format
from django.core.management.base import BaseCommand, CommandParser

from delivery.observability.worker_heartbeat import WorkerBeat, read_heartbeat

DEFAULT_MAX_AGE_S = 60.0


class Command(BaseCommand):
    help = "Exit 0 when the worker's heartbeat is recent, 1 (with the reason) when it is dead or hung."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--hostname", default=None,
                            help="The worker's node name, as given to `celery worker --hostname` "
                                 "(%%h is this machine's name; default: celery@<this machine>).")
        parser.add_argument("--max-age", type=float, default=DEFAULT_MAX_AGE_S, metavar="S",
                            help=f"The oldest heartbeat still healthy, in seconds [{DEFAULT_MAX_AGE_S:g}].")

    def handle(self, *args: Any, **options: Any) -> None:
        hostname = host_format(default_nodename(options["hostname"]))
        healthy, reason = probe(hostname=hostname, max_age_s=options["max_age"])
        self.stdout.write(f"{'healthy' if healthy else 'unhealthy'}: {reason}")
        if not healthy:
            raise SystemExit(1)


def probe(*, hostname: str, max_age_s: float) -> tuple[bool, str]:
    """(healthy, the reason in a few words) for the worker `hostname`."""
    try:
        beat = read_heartbeat(hostname)
    except redis.RedisError as error:
        return False, f"Redis does not answer ({error.__class__.__name__}); {hostname}'s heartbeat is unknown"
    if beat is None:
        return False, f"no heartbeat from {hostname} (not started, stopped, or silent for over an hour)"
    age = f"{beat.age_s:.1f} s ago"
    if beat.age_s <= max_age_s:
        return True, f"{hostname} (pid {beat.pid}) beat {age}"
    return False, f"{hostname} {_state(beat)}: its last heartbeat was {age} (over {max_age_s:g} s)"


def _state(beat: WorkerBeat) -> str:
    if beat.machine != socket.gethostname():
        return f"(pid {beat.pid} on {beat.machine}) is not beating"
    state = _process_state(beat.pid)
    if state is None:
        return f"is dead: pid {beat.pid} is gone"
    if state in ("T", "t"):
        return f"is hung: pid {beat.pid} is stopped"
    return f"is hung: pid {beat.pid} still runs"


def _process_state(pid: int) -> str | None:
    """The state letter of `pid` in /proc (R, S, D, T…), None when it is gone or a zombie."""
    if not Path("/proc/self/stat").exists():  # no /proc: alive or not, no more
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return "?"
        return "?"
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    state = stat.rsplit(")", 1)[1].split()[0]  # after "pid (command)"
    return None if state in ("Z", "X") else state
