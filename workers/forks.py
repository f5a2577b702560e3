"""The fork guard of a worker's main process.

After a hard time limit, Celery runs ``JobTask.on_failure`` in the worker's main process on
billiard's timeout thread, and the reaper (``workers.reaper``) runs on a thread of its own,
while the main thread may be forking the replacement pool process. A fork taken while such a
thread holds a lock (ours, SQLAlchemy's, SQLite's, kombu's) leaves the lock held for ever in
the child, which then hangs at its first job. So a fork waits until such work is done
(``guard()``), and the child starts with a fresh lock.
"""

from __future__ import annotations

import os
import threading

_guard = threading.Lock()

# Set in each pool process (``workers.reaper``): a pool process may exit to be replaced.
IN_POOL_CHILD = threading.Event()


def guard() -> threading.Lock:
    """The lock a thread of the main process holds around database or broker work."""
    return _guard


def _after_fork_in_child() -> None:
    global _guard
    _guard = threading.Lock()


os.register_at_fork(
    before=lambda: _guard.acquire(),
    after_in_parent=lambda: _guard.release(),
    after_in_child=_after_fork_in_child,
)
