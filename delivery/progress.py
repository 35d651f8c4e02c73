"""When a thread of this process last got on with its work: the worker's heartbeat reads it.

A worker whose every thread is busy for a long while (a flush draining a large
backlog, attempts against slow partners) runs no heartbeat no-op, but its threads
still move on: each notes it here (a task ending, an attempt round recorded, a
slice of a retry wait passed), and the heartbeat counts that as alive
(`delivery.observability.worker_heartbeat`). A pool whose threads are all stuck notes nothing.
"""

from __future__ import annotations

import time

_last_progress = time.monotonic()


def note_progress() -> None:
    """A thread of this process has just got on with its work."""
    global _last_progress
    _last_progress = time.monotonic()  # one assignment: atomic, no lock needed


def last_progress() -> float:
    """`time.monotonic()` at the latest `note_progress`."""
    return _last_progress
