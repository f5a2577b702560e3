"""The worker restarts after one of its pool processes was killed at the hard time limit.

Celery's prefork pool can stop handing jobs to its processes once one of them was killed
mid-job (celery/celery#4789: seen here on the embedded broker, where the next job then stayed
queued), and its warm shutdown can hang on the same pool queue. So once the killed job's
failure is recorded, the worker stops taking jobs and shuts down warm, letting the jobs its
other pool processes run finish; if it has not exited by the time those jobs would have hit
their own hard limit (or ``STOP_GRACE_S`` when there are none), its pool processes are killed
and it exits. ``quantserve serve`` or the orchestrator starts a new worker, and the messages
the old one had taken but not acknowledged go back to the queue (``task_acks_late``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time

import billiard.process
from celery.worker import state

log = logging.getLogger("quantserve.worker")

# The exit status of a worker that restarts after a hard kill (EX_TEMPFAIL: try again).
EXIT_RESTART = 75
# How long a warm shutdown with no other job running may take before the worker is ended.
STOP_GRACE_S = 15.0

_requested = threading.Lock()


def restart_after_hard_kill(killed_task_id: str, job_time_limit_s: float) -> None:
    """Shut the worker down warm for a restart, ending it if the shutdown hangs.

    Called in the worker's main process (from a thread) once the killed job is final. Only
    the first call acts: one watchdog, one exit.
    """
    if not _requested.acquire(blocking=False):
        return
    others = [r for r in list(state.active_requests) if r.id != killed_task_id]
    grace = job_time_limit_s + STOP_GRACE_S if others else STOP_GRACE_S
    log.warning("a pool process was killed at the hard time limit: the worker stops taking "
                "jobs and restarts once its %d other running job(s) end (at most %.0f s)",
                len(others), grace)
    threading.Thread(target=_end_after, args=(grace,), name="restart-watchdog",
                     daemon=True).start()
    state.should_stop = EXIT_RESTART  # the consumer's loop raises WorkerShutdown at its next turn


def restart_requested() -> bool:
    """Whether this worker shut down to restart after a hard kill."""
    return _requested.locked()


def _end_after(grace_s: float) -> None:
    time.sleep(grace_s)  # a daemon thread: a shutdown that ends in time ends the process first
    log.error("the worker's warm shutdown did not end within %.0f s: killing its pool "
              "processes and exiting", grace_s)
    for child in billiard.process.active_children():
        if child.pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, signal.SIGKILL)
    logging.shutdown()
    os._exit(EXIT_RESTART)
