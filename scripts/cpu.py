"""CPU seconds used by processes, read from /proc (Linux): for the CPU-per-event budget of the benches."""

from __future__ import annotations

import os
from pathlib import Path

from memory import _children_of

_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds of `pid` and its descendants (0 for a process already gone)."""
    return _own_cpu_seconds(pid) + sum(cpu_seconds(child) for child in _children_of(pid))


def _own_cpu_seconds(pid: int) -> float:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2:].split()  # after "pid (name) ": state is field 3
    return (int(fields[11]) + int(fields[12])) / _TICKS_PER_S  # utime, stime (fields 14 and 15)


def total_cpu_seconds(pids: list[int]) -> float:
    return sum(cpu_seconds(pid) for pid in pids)
