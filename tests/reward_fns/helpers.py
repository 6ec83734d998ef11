"""Shared helpers for the reward_fns tests: child-process accounting and a slow task for timeout tests."""

from __future__ import annotations

import os
import time
from pathlib import Path


def child_pids(pid: int | None = None) -> set[int]:
    """Live (non-zombie) direct children of ``pid`` (this process by default).

    Read from every process's own parent field in ``/proc/<child>/stat``, not from ``/proc/<pid>/task/*/children``:
    the kernel documents that list as reliable only for stopped children, and it missed a live worker whose
    spawning thread had just exited (its child was being re-parented to another thread of the process).
    """
    pid = os.getpid() if pid is None else pid
    children: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after its last ")".
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[1]) == pid:
            children.add(int(entry.name))
    return {child for child in children if is_alive(child)}


def is_alive(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    state = next(line for line in status.splitlines() if line.startswith("State:"))
    return "Z" not in state.split()[1]


def wait_until(predicate, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def sleep_then_echo(seconds: float, value):
    """A worker task that takes ``seconds`` (used to trigger timeouts)."""
    time.sleep(seconds)
    return value


def grade_slowly_on_request(data_source, solution_str, golds, options):
    """The batch grading task, except that a response containing SLEEP never finishes."""
    from reward_fns.scoring import grade_in_worker

    if "SLEEP" in solution_str:
        time.sleep(600)
    return grade_in_worker(data_source, solution_str, golds, options)


def start_grandchild_then_sleep(pid_file: str, seconds: float) -> None:
    """A worker task that starts a long-running process of its own, records its pid, then takes ``seconds``."""
    import subprocess

    child = subprocess.Popen(["sleep", "600"])
    Path(pid_file).write_text(str(child.pid))
    time.sleep(seconds)
