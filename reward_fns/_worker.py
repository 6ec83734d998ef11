"""Entry point of a grading worker process (``python -m reward_fns._worker``); see ``reward_fns.bounded``.

Protocol on stdin/stdout: frames of an 8-byte big-endian length and a pickle. The worker sends
``("ready", parent_pid)`` once, then answers each ``(task, args)`` with ``("ok", result)`` or
``("error", "ExceptionType: message")``. It exits at end of input, and whenever its parent is gone.
"""

from __future__ import annotations

import importlib
import os
import pickle
import signal
import struct
import sys
import threading
import time
from typing import Any, BinaryIO

_HEADER = struct.Struct(">Q")


def _read_frame(stream: BinaryIO) -> Any | None:
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return None
    (length,) = _HEADER.unpack(header)
    payload = stream.read(length)
    if len(payload) < length:
        return None
    return pickle.loads(payload)


def _encode(message: Any) -> bytes:
    return pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)


def _write_frame(stream: BinaryIO, payload: bytes) -> None:
    stream.write(_HEADER.pack(len(payload)) + payload)
    stream.flush()


def _resolve(task: str, cache: dict[str, Any]) -> Any:
    function = cache.get(task)
    if function is None:
        module_name, _, attribute = task.partition(":")
        function = getattr(importlib.import_module(module_name), attribute)
        cache[task] = function
    return function


def _exit_when_orphaned(parent_pid: int, interval_s: float = 0.5) -> None:
    """Busy workers never see end of input; when the parent dies they are re-parented, and this notices."""
    while True:
        time.sleep(interval_s)
        if os.getppid() != parent_pid:
            os._exit(0)


def main() -> int:
    # Ctrl-C belongs to the parent, which kills its workers; stray prints must not corrupt the protocol stream.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent_pid = os.getppid()
    threading.Thread(target=_exit_when_orphaned, args=(parent_pid,), daemon=True).start()
    protocol_out = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    protocol_in = sys.stdin.buffer
    import reward_fns.symbolic  # noqa: F401 - import sympy before announcing readiness, not during a timed task

    _write_frame(protocol_out, _encode(("ready", parent_pid)))
    functions: dict[str, Any] = {}
    while True:
        try:
            request = _read_frame(protocol_in)
        except (OSError, pickle.UnpicklingError, EOFError):
            return 0
        if request is None:
            return 0
        task, args = request
        try:
            # Encoded here, so that an unpicklable result is reported like any other error of the task.
            payload = _encode(("ok", _resolve(task, functions)(*args)))
        except Exception as error:  # reported to the parent, which decides what it means
            payload = _encode(("error", f"{type(error).__name__}: {error}"[:2000]))
        try:
            _write_frame(protocol_out, payload)
        except OSError:
            return 0


if __name__ == "__main__":
    sys.exit(main())
