"""The worker's restart after a hard kill: the watchdog ends a worker whose warm shutdown hangs,
its pool processes with it, and says why in its exit status."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

from workers.restart import EXIT_RESTART

# A process standing in for a worker whose warm shutdown hangs: one billiard child that would
# sleep for a minute, the main thread blocked, and the restart requested.
HUNG_WORKER = textwrap.dedent("""
    import sys, threading, time
    import billiard
    from celery.worker import state
    from workers import restart

    restart.STOP_GRACE_S = 0.5
    child = billiard.Process(target=time.sleep, args=(60,))
    child.start()
    open(sys.argv[1], "w").write(str(child.pid))
    restart.restart_after_hard_kill("killed-task", job_time_limit_s=60)
    assert state.should_stop == restart.EXIT_RESTART and restart.restart_requested()
    restart.restart_after_hard_kill("another", job_time_limit_s=60)  # a second call: no-op
    threading.Event().wait()  # the hung shutdown
""")


def _gone(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status")
    return not status.exists() or "zombie" in status.read_text()


def test_a_hung_shutdown_is_ended_with_its_pool(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", HUNG_WORKER, str(pid_file)], cwd=Path.cwd(),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == EXIT_RESTART, done.stderr
    assert time.monotonic() - started < 30  # the grace, not the child's minute
    assert "did not end within" in done.stderr
    child = int(pid_file.read_text())
    deadline = time.monotonic() + 10
    while not _gone(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _gone(child), "the pool process outlived its worker"
