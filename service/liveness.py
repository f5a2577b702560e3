"""Who a process is, and whether it still lives: the owner names of heartbeats and of the
embedded broker's leases.

An owner is ``<host>/<pid>/<start>``: the machine (host name and boot id), the process id and
the process's start time in clock ticks since boot, so that a pid reused by a new process
does not pass for the old one. ``dead(owner)`` is exact on the machine that wrote the owner
(the process is gone, or a zombie) and always ``False`` elsewhere: another machine's owner is
judged by its heartbeat's age instead.
"""

from __future__ import annotations

import os
import socket
from functools import lru_cache
from pathlib import Path


def _start_ticks(pid: int) -> str | None:
    """The process's start time (field 22 of /proc/PID/stat); None if it is gone or a
    zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    fields = stat.rpartition(")")[2].split()
    if not fields or fields[0] in ("Z", "X"):  # zombie or dead
        return None
    return fields[19] if len(fields) > 19 else "0"


@lru_cache(maxsize=1)
def machine() -> str:
    """This machine's name: host name and boot id (containers of one host differ by name),
    or ``$QUANTSERVE_HOST_ID`` when set (processes that must not judge each other's lives by
    pid, such as containers that share a host name)."""
    override = os.environ.get("QUANTSERVE_HOST_ID", "").strip()
    if override:
        return override[:120].replace("/", "_")
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()[:8]
    except OSError:
        boot = "-"
    return f"{socket.gethostname()[:80]}:{boot}"


def owner_of(pid: int) -> str:
    """The owner name of process ``pid`` on this machine."""
    return f"{machine()}/{pid}/{_start_ticks(pid) or '0'}"


def me() -> str:
    """The owner name of the calling process (computed per call: a forked child differs)."""
    return owner_of(os.getpid())


def pid_of(owner: str) -> int | None:
    """The pid in ``owner`` if it was written on this machine, else None."""
    parts = owner.rsplit("/", 2)
    if len(parts) != 3 or parts[0] != machine():
        return None
    try:
        return int(parts[1])
    except ValueError:
        return None


def dead(owner: str | None) -> bool:
    """Whether ``owner`` is a process of this machine that no longer runs.

    ``False`` for a live process, for another machine's owner and for ``None``.
    """
    if not owner:
        return False
    pid = pid_of(owner)
    if pid is None:
        return False
    ticks = _start_ticks(pid)
    if ticks is None:
        if Path("/proc").is_dir():
            return True
        try:  # no /proc: the pid alone
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False
    start = owner.rsplit("/", 1)[1]
    return start != "0" and ticks != start


def pid_running(pid: int) -> bool:
    """Whether process ``pid`` of this machine runs (a zombie does not)."""
    if Path("/proc").is_dir():
        return _start_ticks(pid) is not None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
