"""Readiness from probes that run in the background, so that ``/readyz`` answers at once.

Each dependency (database, broker, storage) has a thread that probes it every
``readiness_interval_s`` (each probe bounded by that dependency's own timeouts). ``/readyz``
reads the last results: a dependency is ``ok`` when its last probe passed and no probe has
been hanging for longer than ``HANG_AFTER_S`` (a frozen server that accepts connections and
never answers). Only a ``/readyz`` in the first ``FIRST_RESULTS_WAIT_S`` after the probes
start waits for their first results, without blocking the event loop. The answer names
dependencies and states only: the causes, which may name hosts and ports, go to the log, once
per change.

When ``quantserve serve`` supervises a worker, it names a status file in the environment
(``WORKER_STATUS_ENV``); the worker then counts as a dependency too: ``ok`` while the
supervisor says it runs and its process is alive.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from service.liveness import pid_running

log = logging.getLogger("quantserve.readiness")

HANG_AFTER_S = 3.0  # a probe running longer than this counts as a dependency not answering
FIRST_RESULTS_WAIT_S = 0.8  # how long a first /readyz waits for the first probes
_FIRST_RESULTS_POLL_S = 0.02
WORKER_STATUS_ENV = "QUANTSERVE_WORKER_STATUS_FILE"

OK = "ok"
UNAVAILABLE = "unavailable"


@dataclass
class _State:
    ok: bool | None = None  # None: no probe finished yet
    reason: str = ""
    running_since: float | None = None


class Readiness:
    def __init__(self, probes: dict[str, Callable[[], None]], *, interval_s: float) -> None:
        self.probes = probes
        self.interval_s = interval_s
        self.states = {name: _State() for name in probes}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._first = threading.Event()
        self._started_at = 0.0

    def _probe(self, name: str, probe: Callable[[], None]) -> None:
        state = self.states[name]
        while not self._stop.is_set():
            state.running_since = time.monotonic()
            try:
                probe()
                ok, reason = True, ""
            except Exception as exc:  # any failure of a dependency is "not ready"
                ok, reason = False, str(getattr(exc, "message", None) or exc)
            if ok != state.ok:
                if ok:
                    log.info("readiness: %s is available", name)
                else:
                    log.warning("readiness: %s is unavailable: %s", name, reason)
            with self._lock:
                state.ok, state.reason, state.running_since = ok, reason, None
                if all(s.ok is not None for s in self.states.values()):
                    self._first.set()
            self._stop.wait(self.interval_s)

    def start(self) -> None:
        """Start the probe threads (once)."""
        with self._lock:
            if self._threads:
                return
            self._started_at = time.monotonic()
            for name, probe in self.probes.items():
                thread = threading.Thread(target=self._probe, args=(name, probe), daemon=True,
                                          name=f"readiness-{name}")
                self._threads.append(thread)
                thread.start()

    def stop(self) -> None:
        self._stop.set()

    async def first_results(self, timeout_s: float | None = None) -> None:
        """Start the probes if needed and wait until each has reported once, or ``timeout_s``
        (default ``FIRST_RESULTS_WAIT_S``) has passed since they started (a probe hanging on
        a frozen dependency delays only the /readyz calls of the process's first moments). It
        polls rather than blocks: the event loop (and ``/healthz``) keeps serving, and no pool
        thread is taken, since those may all wait on a frozen dependency."""
        self.start()
        deadline = self._started_at + (FIRST_RESULTS_WAIT_S if timeout_s is None else timeout_s)
        while not self._first.is_set() and time.monotonic() < deadline:
            await asyncio.sleep(_FIRST_RESULTS_POLL_S)

    def checks(self) -> dict[str, str]:
        """Each dependency's state from the last probes; one that has not reported yet is
        unavailable."""
        now = time.monotonic()
        checks: dict[str, str] = {}
        with self._lock:
            for name, state in self.states.items():
                hanging = (state.running_since is not None
                           and now - state.running_since > HANG_AFTER_S)
                checks[name] = OK if state.ok and not hanging else UNAVAILABLE
        worker = worker_check()
        if worker is not None:
            checks["worker"] = worker
        return checks


def worker_check() -> str | None:
    """The supervised worker's state, when ``quantserve serve`` runs one; else None."""
    path = os.environ.get(WORKER_STATUS_ENV)
    if not path:
        return None
    try:
        status = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return UNAVAILABLE
    pid = status.get("pid")
    if status.get("state") == "running" and isinstance(pid, int) and pid_running(pid):
        return OK
    return UNAVAILABLE
