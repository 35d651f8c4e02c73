"""Peak memory of a process and its descendants, read from /proc (Linux)."""

from __future__ import annotations

from pathlib import Path


def peak_rss_kib(pid: int) -> int:
    """VmHWM of `pid` plus that of its descendants, in KiB (0 for a process already gone)."""
    total = _vm_hwm_kib(pid)
    for child in _children_of(pid):
        total += peak_rss_kib(child)
    return total


def _vm_hwm_kib(pid: int) -> int:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    return next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")), 0)


def _children_of(pid: int) -> list[int]:
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children += [int(child) for child in (task / "children").read_text().split()]
        except OSError:
            continue
    return children
