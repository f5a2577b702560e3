"""The temporary folders of jobs: ``quantserve-job-<job id>-<pid>-<random>`` in the system's
temporary directory, removed when the job ends whatever the way out, and swept when the
process that made one died (SIGKILL, hard time limit, lost pool process)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from service.liveness import pid_running

TMP_PREFIX = "quantserve-job-"


@contextmanager
def job_folder(job_id: str) -> Iterator[Path]:
    """A fresh folder for the job's files, removed on the way out (exceptions included)."""
    import os

    folder = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{job_id}-{os.getpid()}-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _maker_pid(folder: Path) -> int | None:
    """The pid of the process that made ``folder`` (None for a name without one)."""
    parts = folder.name[len(TMP_PREFIX):].split("-")
    if len(parts) >= 3 and parts[1].isdigit():
        return int(parts[1])
    return None


def _orphaned(folder: Path) -> bool:
    pid = _maker_pid(folder)
    return pid is None or not pid_running(pid)


def remove_job_folders(job_id: str) -> int:
    """Remove the job's folders whose process is gone; returns how many."""
    removed = 0
    for folder in Path(tempfile.gettempdir()).glob(f"{TMP_PREFIX}{job_id}-*"):
        if folder.is_dir() and _orphaned(folder):
            shutil.rmtree(folder, ignore_errors=True)
            removed += 1
    return removed


def sweep_orphaned_folders() -> int:
    """Remove every job folder whose process is gone (worker start, reaper passes)."""
    removed = 0
    for folder in Path(tempfile.gettempdir()).glob(f"{TMP_PREFIX}*"):
        pid = _maker_pid(folder)
        if folder.is_dir() and pid is not None and not pid_running(pid):
            shutil.rmtree(folder, ignore_errors=True)
            removed += 1
    return removed
