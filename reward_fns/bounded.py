"""Hard time limits that work in any thread and inside Ray workers: persistent child processes, killed on timeout.

``signal.alarm`` only fires in the main thread (verl calls reward functions from thread pools and Ray actors) and
cannot interrupt a long C-level computation such as a huge integer power, so a limit that must hold is enforced
from outside: the work runs in a child Python process that is SIGKILLed when its deadline passes and replaced on
the next call. Children are plain ``subprocess`` processes (no ``multiprocessing``, so no fork of a threaded parent
and no "daemonic processes are not allowed to have children"), each in its own process group so that a kill takes
down whatever the task started, talk over pipes with length-prefixed pickles, exit when the parent goes away (end of
file on their stdin when idle, a watchdog thread noticing the re-parenting when busy), and are killed at
interpreter exit.

A task is named ``"module:function"``; the child imports the module and calls the function with the given
arguments. Only the parent process (trusted code) sends tasks.
"""

from __future__ import annotations

import atexit
import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

_HEADER = struct.Struct(">Q")
STARTUP_TIMEOUT_S = 120.0
_PACKAGE_PARENT = str(Path(__file__).resolve().parent.parent)


class WorkerTimeout(TimeoutError):
    """The task did not finish within its time limit; its worker was killed."""


class WorkerFailed(RuntimeError):
    """The worker process died or could not start (not a timeout)."""


class TaskError(RuntimeError):
    """The task raised inside the worker; the message carries the worker-side exception."""


class Worker:
    """One persistent child process. Not thread-safe by itself: ``WorkerPool`` hands it to one caller at a time."""

    def __init__(self, extra_paths: Sequence[str] = ()) -> None:
        self._extra_paths = tuple(extra_paths)
        self._process: subprocess.Popen[bytes] | None = None
        _LIVE_WORKERS.add(self)

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        if self.is_running():
            return
        self.close()
        env = dict(os.environ)
        paths = [*self._extra_paths, _PACKAGE_PARENT]
        if env.get("PYTHONPATH"):
            paths.append(env["PYTHONPATH"])
        env["PYTHONPATH"] = os.pathsep.join(paths)
        env.setdefault("OMP_NUM_THREADS", "1")
        try:
            # Its own process group, so that a kill also takes down anything the task started (verl's prime_math
            # forks a helper per comparison; a killed worker must not leave it running).
            self._process = subprocess.Popen(
                [sys.executable, "-m", "reward_fns._worker"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env=env,
                close_fds=True,
                start_new_session=True,
            )
        except OSError as error:
            raise WorkerFailed(f"could not start a grading worker: {error}") from error
        try:
            ready = self._receive(time.monotonic() + STARTUP_TIMEOUT_S)
        except (WorkerTimeout, WorkerFailed) as error:
            self.close()
            raise WorkerFailed(f"grading worker did not start: {error}") from error
        if ready != ("ready", os.getpid()):
            self.close()
            raise WorkerFailed(f"grading worker sent {ready!r} instead of its ready message")

    def call(self, task: str, args: tuple[Any, ...], timeout_s: float) -> Any:
        """Run ``task(*args)`` in the child; raises ``WorkerTimeout`` (child killed) after ``timeout_s``."""
        self.start()
        assert self._process is not None and self._process.stdin is not None
        payload = pickle.dumps((task, args), protocol=pickle.HIGHEST_PROTOCOL)
        try:
            self._process.stdin.write(_HEADER.pack(len(payload)) + payload)
            self._process.stdin.flush()
        except (BrokenPipeError, OSError) as error:
            self.close()
            raise WorkerFailed(f"grading worker is gone: {error}") from error
        try:
            status, value = self._receive(time.monotonic() + timeout_s)
        except (WorkerTimeout, WorkerFailed):
            self.close()
            raise
        if status == "error":
            raise TaskError(value)
        return value

    def _receive(self, deadline: float) -> Any:
        assert self._process is not None and self._process.stdout is not None
        fd = self._process.stdout.fileno()
        header = _read_exact(fd, _HEADER.size, deadline)
        (length,) = _HEADER.unpack(header)
        return pickle.loads(_read_exact(fd, length, deadline))

    def close(self) -> None:
        """Kill the child (if any) and reap it, so that no process is left behind."""
        process, self._process = self._process, None
        if process is None:
            return
        try:
            os.killpg(process.pid, signal.SIGKILL)  # the worker and everything it started
        except (ProcessLookupError, PermissionError):
            pass
        if process.poll() is None:
            process.kill()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL is not ignorable
            pass
        for stream in (process.stdin, process.stdout):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass


def _read_exact(fd: int, count: int, deadline: float) -> bytes:
    chunks = []
    poller = select.poll()  # poll, not select: Ray workers can have file descriptors above FD_SETSIZE
    poller.register(fd, select.POLLIN | select.POLLHUP | select.POLLERR)
    while count > 0:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not poller.poll(remaining * 1000):
            raise WorkerTimeout("grading task timed out")
        chunk = os.read(fd, min(count, 1 << 20))
        if not chunk:
            raise WorkerFailed("grading worker exited")
        chunks.append(chunk)
        count -= len(chunk)
    return b"".join(chunks)


class WorkerPool:
    """Up to ``max_workers`` persistent workers shared by any number of threads."""

    def __init__(self, max_workers: int, extra_paths: Sequence[str] = ()) -> None:
        if not isinstance(max_workers, int) or max_workers < 1:
            raise ValueError(f"max_workers={max_workers!r} is invalid: expected an int >= 1")
        self.max_workers = max_workers
        self._extra_paths = tuple(extra_paths)
        self._idle: list[Worker] = []
        self._all: list[Worker] = []
        self._condition = threading.Condition()
        self._closed = False

    def _acquire(self) -> Worker:
        with self._condition:
            while not self._idle and len(self._all) >= self.max_workers:
                self._condition.wait()
            if self._closed:
                raise WorkerFailed("worker pool is closed")
            if self._idle:
                return self._idle.pop()
            worker = Worker(self._extra_paths)
            self._all.append(worker)
            return worker

    def _release(self, worker: Worker) -> None:
        with self._condition:
            if self._closed:
                worker.close()
            else:
                self._idle.append(worker)
            self._condition.notify()

    def call(self, task: str, args: tuple[Any, ...], timeout_s: float) -> Any:
        worker = self._acquire()
        try:
            return worker.call(task, args, timeout_s)
        finally:
            self._release(worker)

    def map(self, task: str, arg_tuples: Iterable[tuple[Any, ...]], timeout_s: float) -> Iterator[Any]:
        """``call`` for each argument tuple on all workers in parallel; yields, in order, each result or the
        exception (``WorkerTimeout``, ``WorkerFailed``, ``TaskError``) that its call raised."""
        items = list(arg_tuples)
        results: list[Any] = [None] * len(items)
        next_index = 0
        lock = threading.Lock()

        def drain() -> None:
            nonlocal next_index
            while True:
                with lock:
                    if next_index >= len(items):
                        return
                    index = next_index
                    next_index += 1
                try:
                    results[index] = self.call(task, items[index], timeout_s)
                except (WorkerTimeout, WorkerFailed, TaskError) as error:
                    results[index] = error

        threads = [threading.Thread(target=drain, daemon=True) for _ in range(min(self.max_workers, len(items)))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return iter(results)

    def warm_up(self) -> None:
        """Start all workers now (each takes about a second to import sympy)."""
        workers = [self._acquire() for _ in range(self.max_workers)]
        try:
            threads = [threading.Thread(target=worker.start) for worker in workers]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        finally:
            for worker in workers:
                self._release(worker)

    def worker_pids(self) -> list[int]:
        with self._condition:
            return [pid for worker in self._all if (pid := worker.pid) is not None and worker.is_running()]

    def close(self) -> None:
        with self._condition:
            self._closed = True
            workers, self._all, self._idle = self._all, [], []
            self._condition.notify_all()
        for worker in workers:
            worker.close()


_LIVE_WORKERS: weakref.WeakSet[Worker] = weakref.WeakSet()
_shared_pools: dict[tuple[int, tuple[str, ...]], WorkerPool] = {}
_shared_lock = threading.Lock()


def shared_pool(max_workers: int, extra_paths: Sequence[str] = ()) -> WorkerPool:
    """The process-wide pool of this size (created on first use, closed at exit)."""
    key = (max_workers, tuple(extra_paths))
    with _shared_lock:
        pool = _shared_pools.get(key)
        if pool is None:
            pool = _shared_pools[key] = WorkerPool(max_workers, extra_paths)
        return pool


def close_all() -> None:
    """Kill every worker this process started (also registered to run at interpreter exit)."""
    with _shared_lock:
        pools = list(_shared_pools.values())
        _shared_pools.clear()
    for pool in pools:
        pool.close()
    for worker in list(_LIVE_WORKERS):
        worker.close()


def _forget_after_fork() -> None:
    # A forked child must not talk to (or kill) its parent's workers: it starts its own when it needs them. The
    # lock may have been held by another parent thread at the moment of the fork, so it is replaced too.
    global _shared_lock
    _shared_lock = threading.Lock()
    _shared_pools.clear()
    _LIVE_WORKERS.clear()


atexit.register(close_all)
os.register_at_fork(after_in_child=_forget_after_fork)
