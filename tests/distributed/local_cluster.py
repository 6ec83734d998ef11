"""A Ray cluster of several nodes on this one machine, started with ``ray start`` as on a real cluster.

Each node gets its own temporary folder and its own ports (GCS, node manager, object manager, dashboard agent,
runtime-env agent, metrics), all on the loopback address, so the cluster shares nothing with any other Ray on the
machine. Every process of the cluster either names the cluster's folder on its command line (``gcs_server``,
``raylet``, the dashboard, the agents, the log monitor) or descends from one that does (the worker processes and
a job's driver): :meth:`LocalRayCluster.processes` finds them that way, and :meth:`LocalRayCluster.stop` ends
exactly those, by process id. ``ray stop`` is never used: it stops every Ray on the machine.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

OBJECT_STORE_BYTES = 200 * 1024**2
"""Per node; Ray's default (30% of memory) is far more than a test's few tensors need."""

SLOW_MACHINE_TIMEOUTS = {
    "RAY_agent_register_timeout_ms": "180000",
    "RAY_raylet_start_wait_time_s": "180",
    "RAY_worker_register_timeout_seconds": "600",
}
"""A raylet gives its Python agents (dashboard agent, runtime-env agent) a few seconds to start and aborts the node
otherwise, and kills a worker process that has not registered within 60 s; on a loaded 2-core machine their
imports alone can take longer. Raylets read these from their environment."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class LocalRayCluster:
    """``nodes`` Ray nodes on 127.0.0.1, each offering ``cpus_per_node`` logical CPUs and ``gpus_per_node`` logical
    GPUs (training slots of verl's CPU platform). Use as a context manager, or call :meth:`start` / :meth:`stop`."""

    nodes: int = 2
    cpus_per_node: int = 8
    gpus_per_node: int = 1
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    ray: str = "ray"
    root: Path = field(init=False)
    gcs_port: int = field(init=False, default=0)
    dashboard_port: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        # Ray's socket paths must stay under 108 bytes: a short folder directly under /tmp.
        self.root = Path(tempfile.mkdtemp(prefix="rayc", dir="/tmp"))
        # Ray 2.60 turns token authentication on for a head node when ~/.ray/auth_token exists (any earlier local
        # ray.init writes one) but not for a joining node, which is then refused. A loopback-only cluster needs
        # none: say so explicitly, for the nodes and for every client given this environment.
        self.env = {**self.env, "RAY_AUTH_MODE": "disabled", **SLOW_MACHINE_TIMEOUTS}

    @property
    def address(self) -> str:
        """The GCS address (``ray start --address`` / ``RAY_ADDRESS``)."""
        return f"127.0.0.1:{self.gcs_port}"

    @property
    def dashboard_url(self) -> str:
        """Where ``ray job submit --address`` reaches the cluster."""
        return f"http://127.0.0.1:{self.dashboard_port}"

    def start(self, attempts: int = 3, timeout: float = 300) -> LocalRayCluster:
        """Start the nodes. ``ray start`` gives a raylet a fixed 30 s to register, which a loaded machine can miss;
        a failed start is cleaned up and tried again, ``attempts`` times in all."""
        for attempt in range(1, attempts + 1):
            try:
                return self._start(timeout)
            except RuntimeError:
                if attempt == attempts:
                    raise
        raise AssertionError("unreachable")

    def _start(self, timeout: float) -> LocalRayCluster:
        self.gcs_port, self.dashboard_port = free_port(), free_port()
        head = [
            "--head",
            f"--port={self.gcs_port}",
            "--include-dashboard=true",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={self.dashboard_port}",
            f"--ray-client-server-port={free_port()}",
        ]
        for index in range(self.nodes):
            role = head if index == 0 else [f"--address={self.address}"]
            command = [self.ray, "start", *role, *self._node_options(index)]
            result = subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=timeout)
            if result.returncode != 0:
                survivors = self.stop()  # removes the folder; `ray start --temp-dir` makes it again
                if survivors:
                    raise AssertionError(f"a failed `ray start` left processes that could not be ended: {survivors}")
                raise RuntimeError(f"`{' '.join(command)}` failed ({result.returncode}):\n{result.stderr[-3000:]}")
        return self

    def _node_options(self, index: int) -> list[str]:
        return [
            "--node-ip-address=127.0.0.1",
            f"--temp-dir={self.root / f'node{index}'}",
            f"--num-cpus={self.cpus_per_node}",
            f"--num-gpus={self.gpus_per_node}",
            f"--object-store-memory={OBJECT_STORE_BYTES}",
            f"--node-manager-port={free_port()}",
            f"--object-manager-port={free_port()}",
            f"--dashboard-agent-listen-port={free_port()}",
            f"--dashboard-agent-grpc-port={free_port()}",
            f"--runtime-env-agent-port={free_port()}",
            f"--metrics-export-port={free_port()}",
            "--disable-usage-stats",
        ]

    def processes(self) -> list[psutil.Process]:
        """Every live process of this cluster: those naming its folder, and all their descendants."""
        return processes_under(self.root)

    def stop(self, grace: float = 20) -> list[psutil.Process]:
        """End the cluster's processes (SIGTERM, then SIGKILL after ``grace`` seconds); returns any still alive."""
        processes = self.processes()
        survivors = end_processes(processes, grace)
        survivors += [p for p in self.processes() if p not in processes]
        if not survivors:
            shutil.rmtree(self.root, ignore_errors=True)
        return survivors

    def __enter__(self) -> LocalRayCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def processes_under(folder: Path) -> list[psutil.Process]:
    """Live processes whose command line names ``folder`` (a Ray temp dir: every Ray daemon names its session
    folder), with all their descendants (Ray's workers, which rename themselves)."""
    marker = str(folder)
    me = psutil.Process()
    ours = {me.pid, *(parent.pid for parent in me.parents())}  # a shell whose command names the folder is no node
    found: dict[int, psutil.Process] = {}
    for process in psutil.process_iter(["cmdline"]):
        try:
            if process.pid not in ours and any(marker in part for part in process.info["cmdline"] or ()):
                found[process.pid] = process
                found.update({child.pid: child for child in process.children(recursive=True)})
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return [process for process in found.values() if _alive(process)]


def end_processes(processes: list[psutil.Process], grace: float = 20) -> list[psutil.Process]:
    """SIGTERM, then SIGKILL after ``grace`` seconds; returns those still alive."""
    for process in processes:
        _signal(process, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(_alive(p) for p in processes):
        time.sleep(0.5)
    for process in processes:
        _signal(process, signal.SIGKILL)
    deadline = time.monotonic() + 60  # a killed process can take a while to be reaped on a loaded machine
    while time.monotonic() < deadline and any(_alive(p) for p in processes):
        time.sleep(0.5)
    return [p for p in processes if _alive(p)]


def wait_until_gone(folder: Path, timeout: float = 60) -> list[psutil.Process]:
    """Wait for every process of the Ray instance under ``folder`` to exit by itself. Returns those that had not
    after ``timeout`` seconds (ended here, so that a failing test leaves nothing behind either)."""
    deadline = time.monotonic() + timeout
    while (left := processes_under(folder)) and time.monotonic() < deadline:
        time.sleep(1)
    if left:
        end_processes(left)
    return left


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _signal(process: psutil.Process, number: int) -> None:
    try:
        process.send_signal(number)
    except psutil.NoSuchProcess:
        pass
