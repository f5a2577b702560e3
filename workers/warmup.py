"""Each pool process warms itself up before its first job.

A new pool process has imported the worker's modules but not the job's: numba's target, the
compiled kernels (from their on-disk cache), onnx and onnxruntime are loaded by the first job
that needs them, which took 1.1 s where the next ones took 0.6 (minilm-l3 at 8 bits, embedded
shape, a Zen 5). So as it starts (``worker_process_init``, after ``workers.reaper`` has set the
process's memory limit) each pool process runs the default job on the core's small warm-up
model (``quantcore.warm_up_job``), on a daemon thread, in a job folder of its own
(``workers.temp``: swept if the process dies). A job that arrives meanwhile waits only for
what it needs (numba compiles or loads one kernel at a time, under its lock). Off with
``QUANTSERVE_WORKER_WARM_UP=false``.

Pool processes do not fork, so the thread's locks cannot be copied half-held into a child;
the worker's main process, which forks them, never runs it.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from celery import signals

from service.settings import get_settings
from workers.temp import job_folder

log = logging.getLogger("quantserve.worker")

WARM_UP_NAME = "warm-up"  # in the job folder's name, where a job's id would be


def warm_up() -> float:
    """Run the warm-up job (``quantcore.warm_up_job``) in a job folder; returns its seconds."""
    from quantcore import warm_up_job

    with job_folder(WARM_UP_NAME) as folder:
        return warm_up_job(folder)


def _run() -> None:
    try:
        seconds = warm_up()
    except Exception:  # a warm-up that fails costs nothing but the first job's loading
        log.warning("pool process warm-up failed", exc_info=True)
        return
    log.info("pool process warmed up in %.2f s", seconds)


@signals.worker_process_init.connect
def _start_warm_up(**_: Any) -> None:
    if get_settings().worker_warm_up:
        threading.Thread(target=_run, name="warm-up", daemon=True).start()
