"""Nodes of a multi-node layout on one machine: each a `honcho start` of Procfile process types.

A `Node` is one honcho, started in its own session with its output in a log
file; honcho starts each Procfile process in a session of its own too, and
prints its pid ("web.1 started (pid=123)"), so that a test can signal one
node's processes as an orchestrator would (SIGTERM, SIGKILL) and kill every
process group it started when it ends, pass or fail.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HONCHO = str(Path(sys.executable).with_name("honcho"))
STARTED = re.compile(r"system\s+\| (\S+) started \(pid=(\d+)\)")


@dataclass
class Node:
    """One honcho and the Procfile processes it runs."""

    name: str
    process: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def pids(self) -> list[int]:
        """The Procfile processes' pids (each leads its own process group)."""
        return [int(match[2]) for match in STARTED.finditer(self.log())]

    def wait_for_log(self, text: str, *, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if text in self.log():
                return
            if self.process.poll() is not None:
                raise AssertionError(f"node {self.name} exited:\n{self.log()[-4000:]}")
            time.sleep(0.2)
        raise AssertionError(f"node {self.name} did not log {text!r} in {timeout_s} s:\n{self.log()[-4000:]}")

    def signal(self, signum: int) -> None:
        """Send `signum` to the node's processes (not to honcho: it exits once they have)."""
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signum)

    def wait_exit(self, *, timeout_s: float) -> bool:
        """Whether honcho (so every process of the node) exited within `timeout_s`."""
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return False
        return True

    def kill(self) -> None:
        """SIGKILL the node's processes; then honcho, after it had a moment to stop any not yet logged."""
        self.signal(signal.SIGKILL)
        if self.process.poll() is None:
            self.process.terminate()  # honcho passes it on to its processes
            if not self.wait_exit(timeout_s=10):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)


@dataclass
class Fleet:
    """Every node of one test, started from the project's Procfile with one environment."""

    env: dict[str, str]
    directory: Path
    nodes: list[Node] = field(default_factory=list)

    def start(self, name: str, *process_types: str, **overrides: str) -> Node:
        """`honcho start <process_types>` with `overrides` added to the environment."""
        env_file = self.directory / "empty.env"  # not the project's .env, if a developer has one
        env_file.touch()
        log_path = self.directory / f"{name}.{len(self.nodes)}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [HONCHO, "-f", str(ROOT / "Procfile"), "-e", str(env_file), "start", "--no-colour",
                 *process_types],
                cwd=ROOT, env={**self.env, **overrides}, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        node = Node(name=name, process=process, log_path=log_path)
        self.nodes.append(node)
        return node

    def kill_all(self) -> None:
        for node in self.nodes:
            node.kill()
