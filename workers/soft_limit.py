"""The job's soft time limit, raised where the job can act on it.

Celery's pool raises ``SoftTimeLimitExceeded`` from its SIGUSR1 handler wherever the job's
main thread happens to be. Inside a database call that can leave a transaction, and on
SQLite the store's write lock, half-done, so that the job's failure then waits on that lock
until the hard limit kills the process; inside a finalizer (a weakref callback, a
``__del__``) Python prints the exception and drops it, and the job runs on as if no limit
had passed. So each pool process's handler is replaced by ``_on_soft_limit``, which notes the
limit and raises it at once outside a database call, or as the call returns (``held``); and
``raise_if_reached``, called at each progress report, raises it again if it was dropped.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from billiard.pool import soft_timeout_sighandler
from celery.exceptions import SoftTimeLimitExceeded

__all__ = ["held", "raise_if_reached", "start_job"]

SIGNAL = getattr(signal, "SIGUSR1", None)  # billiard's SIG_SOFT_TIMEOUT


class _State:
    def __init__(self) -> None:
        self.reached = False  # the limit passed during this job
        self.pending = False  # ... while a database call was held; raised as it returns
        self.depth = 0  # nested ``held`` blocks on the main thread


_state = _State()


def _on_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _on_soft_limit(_signum: int, _frame: FrameType | None) -> None:
    _state.reached = True
    if _state.depth:
        _state.pending = True
        return
    raise SoftTimeLimitExceeded()


def start_job() -> None:
    """Forget the previous job's limit and, on a pool process's main thread (where billiard
    put its own handler), take over the limit's signal."""
    _state.reached = _state.pending = False
    # Only billiard's handler: elsewhere (a solo pool) SIGUSR1 is Celery's traceback dump.
    if SIGNAL is not None and _on_main_thread() and (
        signal.getsignal(SIGNAL) is soft_timeout_sighandler
    ):
        signal.signal(SIGNAL, _on_soft_limit)


@contextmanager
def held() -> Iterator[None]:
    """A block the limit does not interrupt (on the main thread; other threads never receive
    it): a limit that passes inside is raised as the block ends."""
    if not _on_main_thread():
        yield
        return
    _state.depth += 1
    try:
        yield
    finally:
        _state.depth -= 1
        if not _state.depth and _state.pending:
            _state.pending = False
            raise SoftTimeLimitExceeded()


def raise_if_reached() -> None:
    """Raise the limit if it passed during this job: the job is still going, so its signal's
    exception was dropped (by a finalizer it landed in, or code that caught it)."""
    if _state.reached and not _state.depth:
        raise SoftTimeLimitExceeded()
