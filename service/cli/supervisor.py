"""``quantserve serve``'s worker, supervised: started, reaped when it exits, restarted with
backoff, and its state written where the API's readiness reads it.

The worker runs in a session of its own, so that stopping it reaches its pool processes
too. When it exits without being asked (killed, crashed), the supervisor reaps it (no
zombie), marks it ``restarting`` (``/readyz`` says ``worker: unavailable``) and starts a new
one after 1 s, doubling up to ``MAX_BACKOFF_S`` while restarts keep failing; a worker that
stayed up ``STABLE_AFTER_S`` resets the backoff. The new worker's reaper then takes back the
job the dead one held (``workers.reaper``), and its broker hands back the dead one's messages.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

log = logging.getLogger("quantserve.serve")

FIRST_BACKOFF_S = 1.0
MAX_BACKOFF_S = 30.0
STABLE_AFTER_S = 60.0


def stop_process_group(process: subprocess.Popen[bytes], grace_s: float) -> None:
    """SIGTERM to the main process (Celery's warm shutdown: its pool processes finish their
    jobs), then SIGKILL of the whole group after ``grace_s``. Not SIGTERM to the group: a
    pool process that gets it dies mid-job, and one that dies holding the pool's queue lock
    leaves the main process waiting on that lock for ever (its shutdown never ends)."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(grace_s)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)  # the pool processes, which may outlive it
    process.wait()


class WorkerSupervisor:
    def __init__(self, argv: Sequence[str], status_file: Path, *,
                 preexec_fn: Callable[[], None] | None = None) -> None:
        self.argv = list(argv)
        self.status_file = status_file
        self.preexec_fn = preexec_fn
        self.process: subprocess.Popen[bytes] | None = None
        self.restarts = 0
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def _write(self, state: str, pid: int | None, **extra: object) -> None:
        tmp = self.status_file.with_name(self.status_file.name + ".tmp")
        tmp.write_text(json.dumps({"state": state, "pid": pid, "restarts": self.restarts,
                                   "at": time.time(), **extra}))
        os.replace(tmp, self.status_file)

    def _spawn(self) -> subprocess.Popen[bytes] | None:
        with self._lock:
            if self._stopping.is_set():
                return None
            self.process = subprocess.Popen(self.argv, preexec_fn=self.preexec_fn,
                                            start_new_session=True)
            self._write("running", self.process.pid)
            return self.process

    def _run(self) -> None:
        backoff = FIRST_BACKOFF_S
        while True:
            process = self._spawn()
            if process is None:
                return
            started = time.monotonic()
            code = process.wait()  # reaps it
            if self._stopping.is_set():
                return
            if time.monotonic() - started >= STABLE_AFTER_S:
                backoff = FIRST_BACKOFF_S
            self.restarts += 1
            self._write("restarting", None, exit_code=code)
            log.warning("the worker (pid %d) exited with %s; restarting it in %.0f s",
                        process.pid, code, backoff)
            # The dead worker's pool processes, if any survived it.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            if self._stopping.wait(backoff):
                return
            backoff = min(MAX_BACKOFF_S, backoff * 2)

    def start(self) -> None:
        self._write("starting", None)
        self._thread = threading.Thread(target=self._run, name="worker-supervisor", daemon=True)
        self._thread.start()

    def stop(self, grace_s: float = 10.0) -> None:
        with self._lock:
            self._stopping.set()
            process = self.process
        if process is not None:
            stop_process_group(process, grace_s)
        if self._thread is not None:
            self._thread.join(timeout=5)
        with contextlib.suppress(OSError):
            self.status_file.unlink()
