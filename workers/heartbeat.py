"""The heartbeat of a running job: a thread that writes ``heartbeat_at`` on the job's row
every ``interval_s`` while the job runs, so that the reaper can tell a live run from one
whose worker died. A beat the row refuses (the job was cancelled or another run took it)
sets ``stopped``, which the job's progress callback turns into a stop; a beat the database
does not answer is skipped (the job goes on; the reaper allows a whole timeout)."""

from __future__ import annotations

import logging
import threading
from types import TracebackType

from service.errors import DatabaseUnavailableError
from service.liveness import me
from service.store.heartbeats import HeartbeatsRepo

log = logging.getLogger("quantserve.worker")


class Heartbeat:
    def __init__(self, beats: HeartbeatsRepo, job_id: str, *, attempt: int,
                 interval_s: float) -> None:
        self.beats = beats
        self.job_id = job_id
        self.attempt = attempt
        self.interval_s = interval_s
        self.stopped = threading.Event()  # the row is no longer this run's
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        self.beats_written = 0

    def __enter__(self) -> Heartbeat:
        owner = me()
        self._thread = threading.Thread(target=self._run, args=(owner,), daemon=True,
                                        name=f"heartbeat-{self.job_id[:8]}")
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join(timeout=1.0)  # a beat stuck on the database is left behind

    def _run(self, owner: str) -> None:
        while not self._done.wait(self.interval_s):
            try:
                alive = self.beats.beat(self.job_id, attempt=self.attempt, owner=owner)
            except DatabaseUnavailableError as exc:
                log.warning("job %s: heartbeat not written, database unavailable: %s",
                            self.job_id, exc.reason)
                continue
            except Exception:  # a heartbeat must never take the job down
                log.exception("job %s: heartbeat failed", self.job_id)
                continue
            if not alive:
                self.stopped.set()
                return
            self.beats_written += 1
