"""numba's on-disk kernel cache, read lean and never fatal to a job.

Lean: loading a kernel from the cache refreshes numba's whole CPU target first (every typing
and lowering registry imported and installed: ``numba.cpython``, ``numba.np``, the typed
containers...), 0.15-0.2 s and 12-28 MB in every CLI process and worker pool process, though a
cached kernel is machine code that needs only numba's runtime (NRT) to run. Here a load sets
up the runtime alone; a kernel not in the cache is compiled as before, and compiling
refreshes the target itself.

Never fatal: numba lets an unreadable cache entry (a truncated or zeroed file after a crash
or a full disk) raise from every call of its kernel, in every process, until someone deletes
it; and a cache that cannot be written (a full disk, a read-only folder) fails the call that
compiled the kernel. Here an unreadable entry is logged and compiled again, its index
dropped if that is what cannot be read, so the save that follows repairs it; a failed save is
logged, and the kernel, compiled in memory, runs. ``quantserve warm``, whose purpose is the
cache, still fails when a save did (``check_saved``).

Where numba's ``Cache`` methods are not the ones this was written against, they are left alone.
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Any

from numba.core import caching

log = logging.getLogger(__name__)

# The kernels whose compiled code could not be saved in this process, with the error.
_unsaved: list[tuple[str, str]] = []

# What numba's methods refer to, in the shapes replaced here.
_LOAD_NAMES = {"refresh", "_guard_against_spurious_io_errors", "_load_overload"}
_SAVE_NAMES = {"_guard_against_spurious_io_errors", "_save_overload"}


def _load(self: Any, sig: Any, target_context: Any) -> Any:
    """``Cache.load_overload`` with only the runtime set up (``initialize`` runs once); None,
    as for a kernel not in the cache, where the entry cannot be read."""
    from numba.core.runtime import rtsys

    rtsys.initialize(target_context)
    try:
        with self._guard_against_spurious_io_errors():
            return self._load_overload(sig, target_context)
    except Exception as error:  # any unreadable entry: compiling is always a way out
        log.warning("numba's cache entry of %s is unreadable (%s: %s); compiling it again",
                    self._name, type(error).__name__, error)  # fmt: skip
        _drop_unreadable_index(self)
        return None


def _drop_unreadable_index(cache: Any) -> None:
    """Remove the cache's index if its contents cannot be read, so that the next save writes a
    new one (a data file that cannot be read is overwritten by that save). An index that cannot
    be opened now (too many open files, say) is not known to be damaged: it stays."""
    cache_file = getattr(cache, "_cache_file", None)
    if cache_file is None:
        return
    try:
        cache_file._load_index()
    except OSError:
        return
    except Exception:
        with contextlib.suppress(OSError, AttributeError):
            os.unlink(cache_file._index_path)


def _save(self: Any, sig: Any, data: Any) -> None:
    """``Cache.save_overload``, logging instead of raising where the cache cannot be written."""
    try:
        with self._guard_against_spurious_io_errors():
            self._save_overload(sig, data)
    except Exception as error:
        log.warning("numba's cache of %s could not be written (%s: %s); the kernel runs "
                    "compiled in memory", self._name, type(error).__name__, error)  # fmt: skip
        _unsaved.append((str(self._name), f"{type(error).__name__}: {error}"))


def check_saved() -> None:
    """Raise ``RuntimeError`` naming the first kernel whose compiled code could not be saved
    in this process, if any (a step that exists to fill the cache must not pass without it)."""
    if _unsaved:
        name, error = _unsaved[0]
        raise RuntimeError(f"numba's cache could not be written for {len(_unsaved)} kernel(s), "
                           f"the first {name} ({error})")  # fmt: skip


def install() -> bool:
    """Replace ``Cache.load_overload`` and ``Cache.save_overload`` (module docstring), both or
    neither; whether they are now this module's."""
    cache = caching.Cache
    replacements = {"load_overload": (_load, _LOAD_NAMES), "save_overload": (_save, _SAVE_NAMES)}
    for name, (ours, names) in replacements.items():
        current = getattr(cache, name)
        if current is not ours and set(current.__code__.co_names) != names:
            return False
    for name, (ours, _) in replacements.items():
        setattr(cache, name, ours)
    return True
