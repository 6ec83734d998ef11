"""The bounded-execution helper: hard timeouts from any thread, worker replacement, no leaked processes."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from reward_fns import bounded
from tests.reward_fns.helpers import child_pids, is_alive, wait_until

SLEEP = "tests.reward_fns.helpers:sleep_then_echo"
# A timed-out call returns at its deadline plus the time to kill the worker: milliseconds on a quiet machine, more
# when a loaded runner delays the kill. The bound allows this margin and stays far below what the tasks would
# take if the deadline were not enforced (a 60 s sleep; pow(3, 10**8), over a minute of CPU).
KILL_MARGIN_S = 5.0


@pytest.fixture(scope="module")
def pool():
    pool = bounded.WorkerPool(max_workers=2)
    yield pool
    pool.close()


def test_results_and_task_errors(pool):
    assert pool.call("math:gcd", (12, 18), timeout_s=30) == 6
    with pytest.raises(bounded.TaskError, match="ZeroDivisionError"):
        pool.call("operator:truediv", (1, 0), timeout_s=30)
    with pytest.raises(bounded.TaskError, match="pickle"):  # an unpicklable result is an error, not a dead worker
        pool.call("threading:Lock", (), timeout_s=30)
    assert pool.call("math:gcd", (7, 21), timeout_s=30) == 7  # the worker survives a task error


def test_timeout_kills_the_worker_and_the_next_call_gets_a_new_one(pool):
    pool.call(SLEEP, (0, None), timeout_s=30)  # make sure a worker is up
    before = set(pool.worker_pids())
    started = time.monotonic()
    with pytest.raises(bounded.WorkerTimeout):
        pool.call(SLEEP, (60, None), timeout_s=0.5)
    assert time.monotonic() - started < 0.5 + KILL_MARGIN_S
    killed = before - set(pool.worker_pids())
    assert killed and not any(is_alive(pid) for pid in killed)
    assert pool.call(SLEEP, (0, "alive"), timeout_s=30) == "alive"


def test_timeout_interrupts_c_level_work_that_signals_cannot(pool):
    # One huge integer power is a single C call: SIGALRM would wait for it; a kill does not.
    started = time.monotonic()
    with pytest.raises(bounded.WorkerTimeout):
        pool.call("builtins:pow", (3, 10**8), timeout_s=0.5)
    assert time.monotonic() - started < 0.5 + KILL_MARGIN_S


def test_calls_from_many_threads(pool):
    results: dict[int, int] = {}

    def work(index: int) -> None:
        results[index] = pool.call("math:gcd", (index * 6, 4), timeout_s=30)

    threads = [threading.Thread(target=work, args=(index,)) for index in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == {index: math.gcd(index * 6, 4) for index in range(12)}
    assert len(pool.worker_pids()) <= pool.max_workers


def test_timeout_from_a_non_main_thread(pool):
    outcome: list[BaseException] = []

    def work() -> None:
        try:
            pool.call(SLEEP, (60, None), timeout_s=0.3)
        except bounded.WorkerTimeout as error:
            outcome.append(error)

    thread = threading.Thread(target=work)
    thread.start()
    thread.join(timeout=10)
    assert not thread.is_alive() and len(outcome) == 1


def test_map_keeps_order_and_reports_each_timeout(pool):
    outcomes = list(pool.map(SLEEP, [(0, 1), (60, 2), (0, 3), (0, 4)], timeout_s=1.0))
    assert outcomes[0] == 1 and outcomes[2:] == [3, 4]
    assert isinstance(outcomes[1], bounded.WorkerTimeout)


def test_closing_leaves_no_process_behind():
    baseline = child_pids()
    pool = bounded.WorkerPool(max_workers=2)
    pool.warm_up()
    started = set(pool.worker_pids())
    assert len(started) == 2 and started <= child_pids()
    pool.close()
    assert wait_until(lambda: not (child_pids() - baseline))
    with pytest.raises(bounded.WorkerFailed):
        pool.call("math:gcd", (1, 1), timeout_s=5)


def assert_worker_exits_when_its_parent_is_killed(tmp_path, parent_body: str, settle_s: float = 0.0) -> None:
    """Run ``parent_body`` (which starts ``worker`` and prints its pid) in a parent process, SIGKILL the parent,
    and expect the worker to be gone soon after: no grader process outlives a killed Ray worker."""
    script = tmp_path / "parent.py"
    preamble = "import threading, time\nfrom reward_fns.bounded import Worker\nworker = Worker()\nworker.start()\n"
    script.write_text(preamble + "print(worker.pid, flush=True)\n" + textwrap.dedent(parent_body))
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        worker_pid = int(parent.stdout.readline())
        time.sleep(settle_s)
        assert is_alive(worker_pid)
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait()
    assert wait_until(lambda: not is_alive(worker_pid), timeout_s=15)


def test_an_idle_worker_exits_when_its_parent_dies(tmp_path):
    assert_worker_exits_when_its_parent_is_killed(tmp_path, "time.sleep(600)\n")


def test_a_timeout_also_kills_what_the_task_started(pool, tmp_path):
    pid_file = tmp_path / "grandchild.pid"
    with pytest.raises(bounded.WorkerTimeout):
        pool.call("tests.reward_fns.helpers:start_grandchild_then_sleep", (str(pid_file), 60), timeout_s=3)
    grandchild = int(pid_file.read_text())
    assert wait_until(lambda: not is_alive(grandchild))


def test_a_busy_worker_exits_when_its_parent_dies(tmp_path):
    body = """
        call = lambda: worker.call("time:sleep", (600,), timeout_s=900)
        threading.Thread(target=call, daemon=True).start()
        time.sleep(600)
        """
    # The pause lets the worker start its 600-second task before the parent dies.
    assert_worker_exits_when_its_parent_is_killed(tmp_path, body, settle_s=0.5)


def test_pool_size_is_validated():
    with pytest.raises(ValueError, match="max_workers=0"):
        bounded.WorkerPool(max_workers=0)


def test_a_forked_child_does_not_reuse_the_parents_workers():
    bounded.shared_pool(1).call("math:gcd", (2, 4), timeout_s=30)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: its view of the shared pools starts empty
        os.close(read_end)
        os.write(write_end, str(len(bounded._shared_pools)).encode())
        os._exit(0)
    os.close(write_end)
    reported = os.read(read_end, 16)
    os.waitpid(pid, 0)
    assert reported == b"0"
