"""Stopping ``quantserve serve``'s worker (``service.cli.supervisor.stop_process_group``):
SIGTERM reaches its main process only, and whatever is left of its group is killed after
the grace period."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from service.cli.supervisor import stop_process_group

# A main process and a child in its group, standing for a Celery worker and a pool process:
# each writes the signal it got to a file; the main one exits on SIGTERM, the child does not.
# The child's pid is written whole (replaced into place) before the test reads it.
_GROUP = """
import os, signal, sys, time
folder = sys.argv[1]
def mark(name):
    def handler(signum, frame):
        open(os.path.join(folder, name), "w").write(str(signum))
        if name == "main":
            sys.exit(0)
    return handler
if os.fork() == 0:
    signal.signal(signal.SIGTERM, mark("child"))
    open(os.path.join(folder, "child.tmp"), "w").write(str(os.getpid()))
    os.replace(os.path.join(folder, "child.tmp"), os.path.join(folder, "child.pid"))
    while True:
        time.sleep(0.05)
signal.signal(signal.SIGTERM, mark("main"))
while True:
    time.sleep(0.05)
"""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_sigterm_reaches_the_main_process_only_and_the_group_is_killed(tmp_path: Path) -> None:
    process = subprocess.Popen([sys.executable, "-c", _GROUP, str(tmp_path)],
                               start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + 10
    while not (tmp_path / "child.pid").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    child = int((tmp_path / "child.pid").read_text())
    assert _alive(child)
    stop_process_group(process, grace_s=5.0)
    assert process.returncode == 0  # its own SIGTERM handler: a warm shutdown
    assert (tmp_path / "main").read_text() == "15"
    assert not (tmp_path / "child").exists()  # the pool process was not sent SIGTERM
    deadline = time.monotonic() + 5
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not _alive(child)  # but killed with the group
